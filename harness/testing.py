"""Test helpers for plugin authors (and the harness's own tests).

`pytest -p harness.testing` (or `pytest_plugins = ["harness.testing"]` in a conftest) provides:

- `harness_plugins`: a factory of fresh plugin sets: `harness_plugins(my_plugin_module)` returns a `Plugins`
  with the built-ins plus the given modules or objects registered for this test only (entry points are not
  loaded, so other installed plugins cannot interfere).

`docs/plugins.md` shows it in use, in the tests of a complete plugin package.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from harness.plugin_manager import BUILTIN_PLUGINS, Plugins


@pytest.fixture
def harness_plugins() -> Iterator[Callable[..., Plugins]]:
    created: list[Plugins] = []

    def make(*plugins: Any, builtins: bool = True, entry_points: bool = False) -> Plugins:
        extra = [(getattr(p, "__name__", f"test-plugin-{i}"), p) for i, p in enumerate(plugins)]
        instance = Plugins(builtins=BUILTIN_PLUGINS if builtins else (), entry_points=entry_points, extra=extra)
        created.append(instance)
        return instance

    try:
        yield make
    finally:
        for instance in created:  # always unregister, even when the test failed
            for name, plugin in list(instance.pm.list_name_plugin()):
                instance.pm.unregister(plugin=plugin, name=name)
