"""Real plugin packages for tests: written to disk, installed with pip into a private folder, found through their
entry points by a `harness` subprocess whose PYTHONPATH includes that folder. The test environment itself is
never changed, so other tests (and other test sessions) never see these packages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
requires-python = ">=3.10"

[project.entry-points.harness]
{entry_points}

[tool.setuptools]
py-modules = [{modules}]
"""


def write_package(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) under `root`; returns `root`."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def module_package(root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str],
                   version: str = "1.0") -> Path:
    """A distribution of top-level modules (module name -> source) with `harness` entry points (name -> module)."""
    files = {f"{module}.py": source for module, source in modules.items()}
    files["pyproject.toml"] = PYPROJECT.format(
        name=name, version=version, modules=", ".join(f'"{m}"' for m in modules),
        entry_points="\n".join(f'{ep} = "{target}"' for ep, target in entry_points.items()))
    return write_package(root, files)


def pip_install_target(package: Path, target: Path, *more: Path) -> Path:
    """`pip install --no-deps --target`: a real install (metadata, entry points) of the packages into `target` only.

    No build isolation: the environment's own setuptools builds it, so no network is needed.
    """
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                             "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), str(package),
                             *map(str, more)],
                            capture_output=True, text=True, cwd=package)
    assert result.returncode == 0, f"pip install of {package} failed:\n{result.stdout}\n{result.stderr}"
    return target


def env_with_path(*paths: Path, **variables: str) -> dict[str, str]:
    """The current environment with `paths` first on PYTHONPATH, plus `variables`; HARNESS_* switches removed
    unless given, so a developer's shell cannot change what a test sees."""
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_LOAD_PLUGINS", "HARNESS_BLOCK_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(variables)
    return env


def harness_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` in a subprocess (a fresh interpreter: entry points read from disk)."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def plugin_block(stdout: str, plugin: str) -> str:
    """The lines `harness plugins` prints for one plugin: its header and the indented names below it."""
    match = re.search(rf"^{re.escape(plugin)}  \(.*\)\n(?:    .*\n?)*", stdout, flags=re.MULTILINE)
    assert match, f"plugin {plugin!r} not listed in:\n{stdout}"
    return match.group(0)


FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", flags=re.MULTILINE | re.DOTALL)
FILE_MARK = re.compile(r"#\s*file:\s*(\S+)\s*$")


def doc_files(text: str, source: str = "the guide") -> dict[str, str]:
    """The code blocks of a Markdown guide whose first line is `# file: <path>`, by path: a package written out
    from the guide alone (docs/plugins.md, and the 0.1 guide kept in tests/data)."""
    files: dict[str, str] = {}
    for _language, body in FENCE.findall(text):
        first, _, _ = body.partition("\n")
        mark = FILE_MARK.match(first.strip())
        if mark:
            assert mark.group(1) not in files, f"{mark.group(1)} appears twice in {source}"
            files[mark.group(1)] = body
    return files

