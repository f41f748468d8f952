"""Names from before 0.2, when the built-ins were the top-level package `plugins` and `harness.plugins` was the
plugin manager: each still works, with a deprecation message naming its replacement."""

from __future__ import annotations

import pytest

from harness.plugin_manager import BLOCK_PLUGINS_ENV, LOAD_PLUGINS_ENV, Plugins


def test_pre_0_2_plugin_manager_imports_still_work_with_a_deprecation_warning():
    from harness import plugin_manager

    with pytest.warns(DeprecationWarning, match="harness.plugin_manager.Plugins"):
        from harness.plugins import Plugins as Legacy
    assert Legacy is plugin_manager.Plugins
    with pytest.raises(ImportError):
        from harness.plugins import NoSuchThing  # noqa: F401


@pytest.mark.parametrize("variable", [BLOCK_PLUGINS_ENV, LOAD_PLUGINS_ENV])
def test_old_builtin_module_names_in_the_switches_are_aliases(monkeypatch, variable):
    monkeypatch.setenv(variable, "plugins.pixels")
    plugins = Plugins()
    assert any("'plugins.pixels'" in w and "'harness.plugins.pixels'" in w and "deprecated" in w
               for w in plugins.warnings), plugins.warnings
    assert not any("not an installed plugin" in w for w in plugins.warnings), plugins.warnings
    if variable == BLOCK_PLUGINS_ENV:  # blocked under its old name: gone, the other built-ins stay
        assert "harness.plugins.pixels" not in plugins.infos and "pixels" not in plugins.encoders
        assert "harness.plugins.knn" in plugins.infos
    else:  # built-ins always load; the load list only filters third-party plugins
        assert "pixels" in plugins.encoders
