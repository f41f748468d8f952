"""Names users type or import: the pre-0.2 names (the built-ins were the top-level package `plugins`, and
`harness.plugins` was the plugin manager) still work with a deprecation message naming the replacement; the shipped
dataset's folder has a supported way to be found."""

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
    else:  # the name matched a built-in (no "not an installed plugin" warning above), which always loads
        assert "harness.plugins.pixels" in plugins.infos


def test_the_shipped_dataset_folder_is_found_by_the_api_and_the_cli(capsys):
    import harness
    from harness.cli import main
    from harness.errors import HarnessError

    folder = harness.dataset_path("cifar10-mini")
    # 10 classes x (100 train + 50 test) JPEG files, as the dataset's README says
    assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(p.name for p in (folder / "test").iterdir())
    assert len(list(folder.glob("train/*/*.jpg"))) == 1000 and len(list(folder.glob("test/*/*.jpg"))) == 500
    assert main(["datasets", "--path", "cifar10-mini"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    with pytest.raises(HarnessError, match="'synthetic' has no single folder"):
        harness.dataset_path("synthetic")
    assert main(["datasets", "--path", "no-such-set"]) == 2
    assert "unknown dataset 'no-such-set'" in capsys.readouterr().err
