"""The plugin manager: built-in and third-party plugins, loaded the same way, each inside its own guard.

pluggy's `load_setuptools_entrypoints` stops at the first plugin that fails to import, and one `pm.hook.X()` call
stops at the first implementation that raises. Here every entry point is loaded, and every implementation called,
separately: a broken plugin is reported by name and the rest keep working, and calling implementations one by
one is also what tells us which plugin registered which name.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable

import pluggy

from harness import hookspecs
from harness.errors import DuplicateNameError, HarnessError
from harness.registry import Registry

ENTRY_POINT_GROUP = "harness"
#: Comma-separated plugin names: load only these third-party plugins (built-ins always load unless blocked).
LOAD_PLUGINS_ENV = "HARNESS_LOAD_PLUGINS"
#: Comma-separated plugin names (entry-point, distribution or built-in module names) never to load.
BLOCK_PLUGINS_ENV = "HARNESS_BLOCK_PLUGINS"

#: Built-in plugins: modules registered exactly as a third-party entry point would be.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "harness.plugins.efficientnet_lite0",
    "harness.plugins.timm_encoders",
    "harness.plugins.open_clip_encoders",
    "harness.plugins.pixels",
    "harness.plugins.cifar10_mini",
    "harness.plugins.imagefolder",
    "harness.plugins.torchvision_sets",
    "harness.plugins.webdataset",
    "harness.plugins.synthetic",
    "harness.plugins.knn",
    "harness.plugins.linear_probe",
    "harness.plugins.clustering",
    "harness.plugins.fewshot",
    "harness.plugins.retrieval",
)

#: Before 0.2 the built-ins were the top-level package `plugins`; their old module names still work in the two
#: environment variables, with a deprecation warning, until 0.4.
LEGACY_BUILTIN_PREFIX, BUILTIN_PREFIX = "plugins.", "harness.plugins."

HOOKS = ("register_encoders", "register_datasets", "register_evaluators")
DISTRIBUTION = "encoder-harness"


@dataclass
class PluginInfo:
    """Where a plugin came from and what it registered."""

    name: str
    distribution: str
    version: str
    builtin: bool
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names


@dataclass
class PluginProblem:
    """A plugin that failed to import, validate or register; the rest of the plugins still work."""

    plugin: str
    distribution: str
    stage: str  # import, validate, register_encoders, ...
    error: str
    traceback: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution}) failed at {self.stage}: {self.error}"


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _own_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        from harness import __version__

        return __version__


class Plugins:
    """Loaded plugins and the three registries they filled. Create one per process (or per test)."""

    def __init__(self, builtins: Iterable[str] = BUILTIN_PLUGINS, entry_points: bool = True,
                 extra: Iterable[tuple[str, ModuleType | object]] = ()) -> None:
        self.pm = pluggy.PluginManager("harness")
        self.pm.add_hookspecs(hookspecs)
        self.encoders: Registry[Any] = Registry("encoder")
        self.datasets: Registry[Any] = Registry("dataset", path_arguments=True)  # imagefolder:<path>
        self.evaluators: Registry[Any] = Registry("evaluator")
        self.infos: dict[str, PluginInfo] = {}
        self.problems: list[PluginProblem] = []
        #: Things that are not a plugin's fault but may surprise, e.g. a name in an env variable that matches nothing.
        self.warnings: list[str] = []
        self._registered_names: set[str] = set()
        self._load(builtins, entry_points, extra)

    # -- loading -------------------------------------------------------------------------------------------------

    def _load(self, builtins: Iterable[str], entry_points: bool,
              extra: Iterable[tuple[str, ModuleType | object]]) -> None:
        builtins, extra = tuple(builtins), tuple(extra)
        blocked = self._resolve_legacy_names(BLOCK_PLUGINS_ENV, _names_from_env(BLOCK_PLUGINS_ENV) or set(), builtins)
        only = _names_from_env(LOAD_PLUGINS_ENV)
        if only is not None:
            only = self._resolve_legacy_names(LOAD_PLUGINS_ENV, only, builtins)
        version = _own_version()
        entry_points_found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)) if entry_points else []
        if entry_points:  # without entry points we cannot tell a misspelling from a plugin left out on purpose
            known = {*builtins, *(name for name, _ in extra), *(ep.name for ep in entry_points_found),
                     *(ep.dist.name for ep in entry_points_found if ep.dist is not None)}
            self._warn_unknown_env_names(known, only, blocked)
        for module_path in builtins:
            if module_path in blocked:
                continue
            info = PluginInfo(module_path, DISTRIBUTION, version, builtin=True)
            self._guarded_register(info, lambda path=module_path: importlib.import_module(path))
        if entry_points:
            for ep in entry_points_found:
                dist = ep.dist.name if ep.dist is not None else "unknown"
                dist_version = ep.dist.version if ep.dist is not None else "unknown"
                if {ep.name, dist} & blocked:
                    continue
                if only is not None and not {ep.name, dist} & only:
                    continue
                info = PluginInfo(ep.name, dist, dist_version, builtin=False)
                self._guarded_register(info, ep.load)
        for name, plugin in extra:
            info = PluginInfo(name, getattr(plugin, "__name__", name), "test", builtin=False)
            self._guarded_register(info, lambda plugin=plugin: plugin)
        self._validate()
        self._call_register_hooks()

    def _resolve_legacy_names(self, variable: str, names: set[str], builtins: tuple[str, ...]) -> set[str]:
        """`plugins.pixels` (the pre-0.2 module name of a built-in) means `harness.plugins.pixels`, with a warning."""
        resolved = set()
        for name in names:
            modern = BUILTIN_PREFIX + name[len(LEGACY_BUILTIN_PREFIX):]
            if name.startswith(LEGACY_BUILTIN_PREFIX) and modern in builtins:
                self.warnings.append(f"{variable} names {name!r}: built-in plugins are now called {modern!r}; "
                                     f"the old name still works but is deprecated and will stop working in 0.4")
                name = modern
            resolved.add(name)
        return resolved

    def _warn_unknown_env_names(self, known: set[str], only: set[str] | None, blocked: set[str]) -> None:
        """A misspelled name in HARNESS_LOAD_PLUGINS / HARNESS_BLOCK_PLUGINS would otherwise be silently ignored."""
        for variable, names in ((LOAD_PLUGINS_ENV, only or set()), (BLOCK_PLUGINS_ENV, blocked)):
            for name in sorted(names - known):
                # 0.75: every built-in shares the long prefix "harness.plugins.", which alone would look close at 0.6
                close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.75)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                self.warnings.append(f"{variable} names {name!r}, which is not an installed plugin (entry-point, "
                                     f"distribution or built-in module name); it has no effect.{hint}")

    def _guarded_register(self, info: PluginInfo, load: Callable[[], object]) -> None:
        if info.name in self._registered_names:
            self.problems.append(PluginProblem(info.name, info.distribution, "import",
                                               "another plugin has the same name; this one was not loaded", ""))
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=info.name)
        except Exception as error:  # noqa: BLE001 - any failure of third-party code is reported, not fatal
            self.problems.append(PluginProblem(info.name, info.distribution, "import",
                                               f"{type(error).__name__}: {error}", traceback.format_exc()))
            return
        self._registered_names.add(info.name)
        self.infos[info.name] = info

    def _validate(self) -> None:
        """`check_pending()` per plugin: a misspelled hook name is reported, and that plugin is unloaded."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            for name in list(self.infos):
                plugin = self.pm.get_plugin(name)
                for attr in dir(plugin):
                    impl_opts = self.pm.parse_hookimpl_opts(plugin, attr)
                    if impl_opts is not None and attr not in HOOKS:
                        info = self.infos.pop(name)
                        self.pm.unregister(name=name)
                        self.problems.append(PluginProblem(
                            name, info.distribution, "validate",
                            f"implements unknown hook {attr!r}; known hooks: {', '.join(HOOKS)}", ""))
                        break

    def _call_register_hooks(self) -> None:
        registries = {"register_encoders": self.encoders, "register_datasets": self.datasets,
                      "register_evaluators": self.evaluators}
        for hook_name, registry in registries.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self.infos[impl.plugin_name]
                staged: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

                def register(name: str, factory: Callable[..., Any], description: str = "",
                             prefix: bool = False, _staged: list = staged) -> None:
                    _staged.append(((name, factory, description), {"prefix": prefix}))

                try:
                    impl.function(register=register)
                except Exception as error:  # noqa: BLE001
                    # Nothing of a plugin that failed half-way is registered: a partial plugin is worse than none.
                    self.problems.append(PluginProblem(info.name, info.distribution, hook_name,
                                                       f"{type(error).__name__}: {error}", traceback.format_exc()))
                    continue
                for args, kwargs in staged:
                    try:
                        registry.add(*args, plugin=info.name, **kwargs)
                    except (DuplicateNameError, HarnessError) as error:
                        self.problems.append(PluginProblem(info.name, info.distribution, hook_name, str(error), ""))
                        continue
                    info.registered.setdefault(registry.kind, []).append(args[0])

    # -- use -----------------------------------------------------------------------------------------------------

    def encoder(self, name: str, **options: Any) -> Any:
        return self.encoders.create(name, **options)

    def dataset(self, name: str, **options: Any) -> Any:
        return self.datasets.create(name, **options)

    def evaluator(self, name: str, **options: Any) -> Any:
        return self.evaluators.create(name, **options)


_default: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _default
    if _default is None:
        _default = Plugins()
    return _default
