"""A third-party package written against the 0.1 plugin guide still loads, runs and compares after 0.2 moved the
built-ins under `harness.plugins` and gave evaluators `settings` instead of `device`.

The package is the 0.1 guide's own tutorial package, written out from `tests/data/plugins-doc-0.1.md` (the guide
as it was, kept verbatim) and pip-installed as a user would have: its evaluator takes `evaluate(..., device=)` and
its per-item columns are `ids`, `label`, `prediction`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.records import load_records
from harness_test_support.plugin_packages import (doc_files, env_with_path, harness_cli, pip_install_target,
                                                   write_package)

pytestmark = pytest.mark.slow  # pip install and harness subprocesses

OLD_GUIDE = Path(__file__).parent / "data" / "plugins-doc-0.1.md"


def old_package_files() -> dict[str, str]:
    return doc_files(OLD_GUIDE.read_text(encoding="utf-8"), OLD_GUIDE.name)


@pytest.fixture(scope="module")
def old_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("plugin-0.1")
    package = write_package(root / "harness-tutorial-plugin", old_package_files())
    return package, pip_install_target(package, root / "site")


def test_the_0_1_package_is_the_one_with_the_old_contract():
    files = old_package_files()
    assert "device: str) -> EvaluationResult" in files["harness_tutorial/evaluators.py"]
    assert '"prediction": predicted' in files["harness_tutorial/evaluators.py"]


def test_a_plugin_written_for_0_1_loads_runs_and_compares(old_plugin_site, tmp_path):
    _, site = old_plugin_site
    env = env_with_path(site)
    check = harness_cli("plugins", "--check", env=env)
    assert check.returncode == 0 and "PROBLEM" not in check.stdout, check.stdout + check.stderr

    results, cache = tmp_path / "results", tmp_path / "cache"
    run = harness_cli("run", "-e", "channel-stats", "-e", "channel-grid:2", "-e", "pixels", "-d", "noisy-shades",
                      "--eval", "one-nn,knn", "--results-dir", str(results), "--cache-dir", str(cache),
                      "--no-progress", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    # the old evaluate(device=) is called, and the author is told once (not once per cell)
    assert run.stderr.count("evaluator 'one-nn' takes evaluate(..., device=) (the pre-0.2 contract)") == 1
    records = load_records(results)
    assert {(r["encoder"]["name"], r["evaluator"]["name"], r["status"]) for r in records} == {
        (e, v, "ok") for e in ("channel-stats", "channel-grid:2", "pixels") for v in ("one-nn", "knn")}
    for record in records:
        assert 0.0 <= record["main_score"] <= 1.0

    compare = harness_cli("compare", "channel-grid:2", "--against", "pixels", "--results-dir", str(results),
                          "--format", "csv", env=env)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    rows = [line for line in compare.stdout.splitlines() if "noisy-shades" in line]
    assert any("one-nn" in row for row in rows) and any("knn" in row for row in rows), compare.stdout

    # Its own tests, written for 0.1 against the harness_plugins fixture, still pass.
    package, _ = old_plugin_site
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                            str(package), "tests/test_tutorial_plugin.py"], capture_output=True, text=True,
                           cwd=package, env=env, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
