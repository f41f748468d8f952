"""The distribution has one import name, `harness`: installed beside foreign top-level packages named `plugins` and
`leaderboard` that come first on the path, it still finds its built-in plugins and scores as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness_test_support.plugin_packages import env_with_path, harness_cli, write_package

pytestmark = pytest.mark.slow  # builds and installs the project, then starts two `harness` processes

REPO = Path(__file__).resolve().parent.parent
# What a build of the project reads; copied so that the build writes its build/ and *.egg-info outside the checkout.
SOURCES = ("pyproject.toml", "README.md", "harness", "plugins", "leaderboard")

FOREIGN = {
    # Top-level packages of other distributions, as a user may have them (`pip install plugins`, a project folder).
    "plugins/__init__.py": "FOREIGN = 'plugins'\n",
    "plugins/knn.py": "raise ImportError('the foreign plugins package was imported instead of harness.plugins')\n",
    "leaderboard/__init__.py": "FOREIGN = 'leaderboard'\n",
    "leaderboard/site.py": "raise ImportError('the foreign leaderboard was imported, not harness.leaderboard')\n",
}


def top_level_names(target: Path) -> set[str]:
    """The first path component of every file the installed distribution's RECORD lists, less its metadata and
    scripts: the import names it puts on sys.path."""
    (dist_info,) = target.glob("encoder_harness-*.dist-info")
    names = set()
    for line in (dist_info / "RECORD").read_text().splitlines():
        first = Path(line.split(",")[0]).parts[0]
        if first != dist_info.name and first not in ("bin", "..") and not first.endswith(".dist-info"):
            names.add(first)
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed (not editable) into a fresh target folder, from a copy of its sources."""
    root = tmp_path_factory.mktemp("install")
    source, target = root / "source", root / "target"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                             "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), str(source)],
                            capture_output=True, text=True, cwd=root, timeout=600)
    assert result.returncode == 0, f"pip install of the project failed:\n{result.stdout}\n{result.stderr}"
    return target


def test_the_distribution_installs_one_import_name(installed):
    assert top_level_names(installed) == {"harness"}
    assert (installed / "harness" / "plugins" / "knn.py").is_file()
    assert (installed / "harness" / "leaderboard" / "site.py").is_file()
    assert not (installed / "plugins").exists() and not (installed / "leaderboard").exists()


def test_foreign_plugins_and_leaderboard_packages_first_on_the_path_change_nothing(installed, tmp_path):
    from harness.plugin_manager import Plugins
    from harness.records import load_records
    from harness.runner import RunConfig, run

    foreign = write_package(tmp_path / "foreign", FOREIGN)
    # The foreign folder first, then the installed project; the working directory is neither the checkout nor them.
    env = env_with_path(foreign, installed)
    where = subprocess.run(
        [sys.executable, "-c", "import harness, harness.plugins, harness.leaderboard, plugins, leaderboard; "
         "print(harness.__file__, harness.plugins.__file__, harness.leaderboard.__file__, plugins.FOREIGN, "
         "leaderboard.FOREIGN)"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert where.returncode == 0, where.stderr
    paths = where.stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in paths[:3]), paths  # the install under test, not the checkout
    assert paths[3:] == ["plugins", "leaderboard"]  # and the foreign packages are really the ones first on the path

    check = harness_cli("plugins", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "PROBLEM" not in check.stdout and "0 problem(s)" in check.stderr, check.stdout + check.stderr
    assert "harness.plugins.knn  (encoder-harness" in check.stdout

    results = tmp_path / "results"
    ran = harness_cli("run", "-e", "pixels", "-d", "cifar10-mini", "--eval", "knn", "--results-dir", str(results),
                      "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (record,) = load_records(results)
    assert record["encoder"]["name"] == "pixels" and record["evaluator"]["protocol"] == "knn/dino-v1"

    # The same cell in this process (the environment's own install) is the reference: the same score, to the item.
    reference = run(RunConfig(encoders=["pixels"], datasets=["cifar10-mini"], evaluators=["knn"],
                              results_dir=tmp_path / "reference", cache_dir=tmp_path / "reference-cache", device="cpu",
                              progress=False), Plugins(entry_points=False))
    (expected,) = reference.records
    assert record["main_score"] == expected["main_score"]
    assert 0.15 <= record["main_score"] <= 0.30  # ~0.21, the README's figure for pixels on cifar10-mini
    assert json.dumps(record["metrics"], sort_keys=True) == json.dumps(expected["metrics"], sort_keys=True)


def test_python_m_harness_in_a_checkout_finds_the_checkouts_plugins(installed):
    """`python -m harness` (or `torchrun -m harness`) started in a source checkout imports the checkout's
    `harness/` before any installed copy; its built-ins and leaderboard are the checkout's top-level folders, which
    it finds the way the install lays them out."""
    checkout = installed.parent / "source"  # the copy of the repository the install was built from
    env = env_with_path(installed)  # an installed copy on the path too, which the checkout shadows
    where = subprocess.run([sys.executable, "-m", "harness", "datasets", "--path", "cifar10-mini"], cwd=checkout,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == checkout / "plugins" / "data" / "cifar10-mini"  # the checkout's own files
    check = harness_cli("plugins", "--check", env=env, cwd=checkout)
    assert check.returncode == 0 and "0 problem(s)" in check.stderr, check.stdout + check.stderr
