"""`harness plugins`, `harness encoders|datasets|evaluators` and `harness datasets --path NAME`."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_listing_parsers(sub: Any) -> None:
    plugins = sub.add_parser("plugins", help="list plugins, where they came from and what they registered")
    plugins.add_argument("--check", action="store_true", help="exit 1 if any plugin failed to load or register")
    for kind in ("encoders", "datasets", "evaluators"):
        lister = sub.add_parser(kind, help=f"list installed {kind}")
        if kind == "datasets":
            lister.add_argument("--path", metavar="NAME", default=None,
                                help="print the folder that holds dataset NAME (e.g. the shipped cifar10-mini)")


def warn_problems(plugins: object) -> None:
    for message in plugins.warnings:  # type: ignore[attr-defined]
        print(f"warning: {message}", file=sys.stderr)
    for problem in plugins.problems:  # type: ignore[attr-defined]
        print(f"warning: {problem}", file=sys.stderr)


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness.plugin_manager import get_plugins

    plugins = get_plugins()
    for message in plugins.warnings:
        print(f"warning: {message}", file=sys.stderr)
    for info in plugins.infos.values():
        kind = "built-in" if info.builtin else "entry point"
        print(f"{info.name}  ({info.distribution} {info.version}, {kind})")
        for registry_kind, names in sorted(info.registered.items()):
            print(f"    {registry_kind}s: {', '.join(names)}")
    for problem in plugins.problems:
        print(f"PROBLEM: {problem}")
        if args.verbose and problem.traceback:
            print(problem.traceback)
    if args.check:
        # The summary goes to stderr so that stdout stays the listing; `harness -v plugins` adds tracebacks.
        print(f"{len(plugins.infos)} plugin(s) loaded, {len(plugins.problems)} problem(s)"
              + ("" if not plugins.problems or args.verbose else "; `harness -v plugins --check` shows tracebacks"),
              file=sys.stderr)
    return 1 if (args.check and plugins.problems) else 0


def _list(kind: str) -> int:
    from harness.plugin_manager import get_plugins

    plugins = get_plugins()
    warn_problems(plugins)
    registry = getattr(plugins, kind)
    width = max((len(e.display_name) for e in registry), default=0)
    for entry in registry:
        print(f"{entry.display_name:<{width}}  {entry.description}  [{entry.plugin}]")
    return 0


def _print_dataset_path(name: str) -> int:
    from harness.api import dataset_path

    print(dataset_path(name))
    return 0


LISTINGS = {
    "plugins": cmd_plugins,
    "encoders": lambda args: _list("encoders"),
    "datasets": lambda args: _print_dataset_path(args.path) if args.path else _list("datasets"),
    "evaluators": lambda args: _list("evaluators"),
}
