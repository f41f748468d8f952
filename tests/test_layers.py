"""The packages point one way: plan -> extraction -> store -> evaluators -> records -> leaderboard, with the CLI on
top. Checked on the source's import statements (relative imports resolved), so a new import that breaks the
direction fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: repository folder -> the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"harness": "harness", "plugins": "harness.plugins", "leaderboard": "harness.leaderboard"}
#: What the leaderboard may use of the core: result records, files and errors (and the metric names it reads).
LEADERBOARD_MAY_IMPORT = ("harness.records", "harness.files", "harness.errors", "harness.metric_names")


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """Every module `module` imports, by absolute name (`from x import y` counts as x and x.y)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def layer(module: str) -> str:
    if module.startswith("harness.cli") or module == "harness.__main__":
        return "cli"
    if module.startswith("harness.leaderboard"):
        return "leaderboard"
    if module.startswith("harness.plugins"):
        return "plugins"
    return "core"


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


ALL = modules()


def test_the_walk_finds_every_layer():
    assert {layer(m) for m in ALL} == {"cli", "leaderboard", "plugins", "core"}
    assert "harness.plugins.knn" in ALL and "harness.leaderboard.table" in ALL and "harness.cli" in ALL


@pytest.mark.parametrize("module", sorted(m for m in ALL if layer(m) == "core"))
def test_the_core_imports_neither_the_cli_nor_the_leaderboard_nor_a_builtin_plugin(module):
    bad = sorted(n for n in imported(module, ALL[module])
                 if within(n, "harness.cli") or within(n, "harness.leaderboard") or within(n, "harness.plugins"))
    assert not bad, f"{module} imports {bad}: the core knows plugins only through the plugin manager's registries"


@pytest.mark.parametrize("module", sorted(m for m in ALL if layer(m) == "leaderboard"))
def test_the_leaderboard_reads_only_records_files_and_errors_of_the_core(module):
    bad = sorted(n for n in imported(module, ALL[module]) if within(n, "harness")
                 and layer(n) != "leaderboard" and not any(within(n, ok) for ok in LEADERBOARD_MAY_IMPORT)
                 and n != "harness")
    assert not bad, f"{module} imports {bad}; the leaderboard may use {', '.join(LEADERBOARD_MAY_IMPORT)}"


@pytest.mark.parametrize("module", sorted(m for m in ALL if layer(m) == "plugins"))
def test_plugins_import_neither_the_cli_nor_the_leaderboard(module):
    bad = sorted(n for n in imported(module, ALL[module])
                 if within(n, "harness.cli") or within(n, "harness.leaderboard"))
    assert not bad, f"{module} imports {bad}"


def test_the_check_itself_sees_a_forbidden_import(tmp_path):
    """The rule above fails on a module that breaks it (so a passing run means something)."""
    source = tmp_path / "sneaky.py"
    source.write_text("from harness.leaderboard.table import render\nfrom . import records\n")
    names = imported("harness.sneaky", source)
    assert "harness.leaderboard.table" in names and "harness.records" in names
    assert layer("harness.sneaky") == "core"


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages by hand (package-dir maps plugins/ and leaderboard/ under `harness`), so a
    new subpackage left out of the list would be missing from every install but the editable one."""
    from harness.suite import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {m for m, path in ALL.items() if path.name == "__init__.py"}
    assert listed == on_disk
