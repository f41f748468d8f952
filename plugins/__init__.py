"""The built-in plugins, installed as `harness.plugins`: each module registers its encoders, datasets or evaluators
through the same hooks a third-party package implements (`harness.plugin_manager.BUILTIN_PLUGINS` lists them)."""

from __future__ import annotations

import warnings
from typing import Any

#: Before 0.2, `harness.plugins` was the plugin manager module (now `harness.plugin_manager`). Plugin packages and
#: their tests written then import these names from here; they keep working, with a deprecation warning, until 0.4.
_MOVED_TO_PLUGIN_MANAGER = ("Plugins", "get_plugins", "PluginInfo", "PluginProblem", "BUILTIN_PLUGINS",
                            "LOAD_PLUGINS_ENV", "BLOCK_PLUGINS_ENV", "ENTRY_POINT_GROUP", "HOOKS", "DISTRIBUTION")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_PLUGIN_MANAGER:
        from harness import plugin_manager

        warnings.warn(f"harness.plugins.{name} moved to harness.plugin_manager.{name} in 0.2; the old name stops "
                      f"working in 0.4", DeprecationWarning, stacklevel=2)
        return getattr(plugin_manager, name)
    raise AttributeError(f"module 'harness.plugins' has no attribute {name!r}")
