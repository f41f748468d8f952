"""HARNESS_LOAD_PLUGINS / HARNESS_BLOCK_PLUGINS and `harness plugins --check`, through the API and through the CLI
with real packages installed into private folders (a healthy one, one with a misspelled hook, one that fails to
import)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.plugin_manager import BLOCK_PLUGINS_ENV, LOAD_PLUGINS_ENV, Plugins
from harness_test_support.plugin_packages import (
    env_with_path, harness_cli, module_package, pip_install_target, plugin_block,
)

HEALTHY = '''
from harness import hookimpl
from harness.plugins.pixels import Pixels


class SwitchPixels(Pixels):
    pass


@hookimpl
def register_encoders(register):
    register("switch-pixels", SwitchPixels, "pixels again, from a test package")
'''

MISSPELLED_HOOK = '''
from harness import hookimpl
from harness.plugins.synthetic import Synthetic


@hookimpl
def register_encoder(register):  # should be register_encoders
    raise AssertionError("never called: the hook name matches no hook")


@hookimpl
def register_datasets(register):
    register("typo-dataset", Synthetic, "never registered: the plugin is unloaded as a whole")
'''

FAILS_ON_IMPORT = '''
import harness_test_dependency_that_is_not_installed  # noqa: F401
'''


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Private install folders: `healthy` holds one good package; `broken` two bad ones beside a good one."""
    root = tmp_path_factory.mktemp("plugin-sites")
    healthy = module_package(root / "healthy-src", "harness-switch-plugin", {"switch_plugin": HEALTHY},
                             {"switch": "switch_plugin"})
    typo = module_package(root / "typo-src", "harness-typo-plugin", {"typo_plugin": MISSPELLED_HOOK},
                          {"typo": "typo_plugin"})
    bomb = module_package(root / "bomb-src", "harness-import-bomb", {"import_bomb": FAILS_ON_IMPORT},
                          {"import-bomb": "import_bomb"})
    sites = {"healthy": root / "healthy", "broken": root / "broken"}
    pip_install_target(healthy, sites["healthy"])
    pip_install_target(healthy, sites["broken"], typo, bomb)
    return sites


# -- API ---------------------------------------------------------------------------------------------------------

def test_unknown_names_in_the_switches_warn_with_close_matches(monkeypatch):
    monkeypatch.setenv(BLOCK_PLUGINS_ENV, "harness-example-plugn")
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "example,harness.plugins.knn,nothing-like-it")
    plugins = Plugins()
    assert "example" in plugins.infos  # the misspelled block had no effect, and the warning says so
    assert plugins.warnings == [
        "HARNESS_LOAD_PLUGINS names 'nothing-like-it', which is not an installed plugin (entry-point, distribution "
        "or built-in module name); it has no effect.",
        "HARNESS_BLOCK_PLUGINS names 'harness-example-plugn', which is not an installed plugin (entry-point, "
        "distribution or built-in module name); it has no effect. Did you mean: harness-example-plugin?"]
    assert plugins.problems == []


def test_switches_over_known_names_do_not_warn(monkeypatch, harness_plugins):
    monkeypatch.setenv(BLOCK_PLUGINS_ENV, "harness.plugins.pixels")
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")  # set and empty: no third-party plugin at all
    plugins = Plugins()
    assert plugins.warnings == [] and not [i for i in plugins.infos.values() if not i.builtin]
    assert "pixels" not in plugins.encoders and "knn" in plugins.evaluators
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "example")
    # Without entry points (the fixture's default) an entry-point name is no misspelling: nothing to warn about.
    assert harness_plugins().warnings == []


# -- CLI ---------------------------------------------------------------------------------------------------------

def third_party(stdout: str) -> set[str]:
    return {line.split("  (")[0] for line in stdout.splitlines() if line.endswith(", entry point)")}


@pytest.mark.slow  # pip-installs plugin packages, `harness` subprocesses
def test_load_and_block_switches_through_the_cli(sites):
    site = sites["healthy"]
    everything = harness_cli("plugins", env=env_with_path(site))
    assert third_party(everything.stdout) == {"example", "switch"}
    assert "(harness-switch-plugin 1.0, entry point)" in plugin_block(everything.stdout, "switch")

    by_entry_point = harness_cli("plugins", env=env_with_path(site, HARNESS_LOAD_PLUGINS="switch"))
    assert third_party(by_entry_point.stdout) == {"switch"}
    assert "harness.plugins.knn  (encoder-harness" in by_entry_point.stdout  # built-ins always load
    by_distribution = harness_cli("plugins", env=env_with_path(site, HARNESS_LOAD_PLUGINS="harness-example-plugin"))
    assert third_party(by_distribution.stdout) == {"example"}
    none = harness_cli("plugins", env=env_with_path(site, HARNESS_LOAD_PLUGINS=""))
    assert third_party(none.stdout) == set() and none.returncode == 0 and "warning" not in none.stderr

    blocked = harness_cli("encoders", env=env_with_path(site, HARNESS_BLOCK_PLUGINS="switch,harness.plugins.pixels"))
    names = {line.split()[0] for line in blocked.stdout.splitlines()}
    assert "colour-histogram" in names and "efficientnet_lite0" in names
    assert not names & {"switch-pixels", "pixels"}
    block_wins = harness_cli("plugins", env=env_with_path(site, HARNESS_LOAD_PLUGINS="switch",
                                                          HARNESS_BLOCK_PLUGINS="harness-switch-plugin"))
    assert third_party(block_wins.stdout) == set()


@pytest.mark.slow  # pip-installs plugin packages, `harness` subprocesses
def test_a_misspelled_name_in_a_switch_warns_on_the_cli(sites):
    result = harness_cli("plugins", "--check", env=env_with_path(sites["healthy"], HARNESS_BLOCK_PLUGINS="swich"))
    assert result.returncode == 0  # a warning, not a plugin problem
    assert ("warning: HARNESS_BLOCK_PLUGINS names 'swich', which is not an installed plugin" in result.stderr
            and "Did you mean: switch?" in result.stderr)
    assert "switch" in third_party(result.stdout)  # it blocked nothing


@pytest.mark.slow  # pip-installs plugin packages, `harness` subprocesses
def test_plugins_check_passes_with_healthy_plugins(sites):
    result = harness_cli("plugins", "--check", env=env_with_path(sites["healthy"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROBLEM" not in result.stdout
    assert result.stderr.strip().endswith("plugin(s) loaded, 0 problem(s)")
    loaded = int(result.stderr.strip().splitlines()[-1].split()[0])
    assert loaded == sum(1 for line in result.stdout.splitlines() if line and not line.startswith(" "))


@pytest.mark.slow  # pip-installs plugin packages, `harness` subprocesses
def test_plugins_check_reports_each_broken_plugin_by_name_and_exits_1(sites):
    env = env_with_path(sites["broken"])
    result = harness_cli("plugins", "--check", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = sorted(line for line in result.stdout.splitlines() if line.startswith("PROBLEM: "))
    assert problems == [
        "PROBLEM: plugin 'import-bomb' (harness-import-bomb) failed at import: ModuleNotFoundError: No module named "
        "'harness_test_dependency_that_is_not_installed'",
        "PROBLEM: plugin 'typo' (harness-typo-plugin) failed at validate: implements unknown hook "
        "'register_encoder'; known hooks: register_encoders, register_datasets, register_evaluators"]
    assert "typo-dataset" not in result.stdout  # the misspelled plugin is unloaded as a whole
    assert third_party(result.stdout) == {"example", "switch"}  # the healthy ones still load
    assert "2 problem(s)" in result.stderr and "harness -v plugins --check" in result.stderr
    # Without --check the listing is the same but the exit status is 0; -v adds the import traceback.
    assert harness_cli("plugins", env=env).returncode == 0
    verbose = harness_cli("-v", "plugins", "--check", env=env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stdout and "import_bomb.py" in verbose.stdout
    # Other commands warn about the same problems and keep working.
    listed = harness_cli("encoders", env=env)
    assert listed.returncode == 0 and "switch-pixels" in listed.stdout
    assert "warning: plugin 'import-bomb' (harness-import-bomb) failed at import" in listed.stderr
