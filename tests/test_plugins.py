"""The plugin seam: provenance, close matches, collisions, broken plugins, env switches, entry points."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib.metadata import version

import pytest

from harness import hookimpl
from harness.errors import DuplicateNameError, HarnessError, UnknownNameError
from harness.plugin_manager import BLOCK_PLUGINS_ENV, LOAD_PLUGINS_ENV, Plugins
from harness.plugins.knn import KNN
from harness.plugins.pixels import Pixels


def make_plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def test_unknown_names_suggest_close_matches(harness_plugins):
    plugins = harness_plugins()
    with pytest.raises(UnknownNameError, match=r"unknown encoder 'efficientnet_lite'.*Did you mean: efficientnet_lite0"):
        plugins.encoder("efficientnet_lite")
    with pytest.raises(UnknownNameError, match=r"Did you mean: cifar10-mini"):
        plugins.dataset("cifar10_mini")
    with pytest.raises(UnknownNameError, match=r"Did you mean: .*timm:"):
        plugins.encoder("tim:resnet18")
    with pytest.raises(HarnessError, match=r"timm has no model 'resnet500'.*Did you mean"):
        plugins.encoder("timm:resnet500")


def test_two_plugins_registering_one_name_fail_naming_both(harness_plugins):
    def register_encoders(register):
        register("pixels", Pixels, "a second pixels")
        register("pixels-too", Pixels, "an unrelated name")

    plugins = harness_plugins(make_plugin("rival", register_encoders=register_encoders))
    with pytest.raises(DuplicateNameError, match=r"'harness.plugins.pixels' and 'rival'"):
        plugins.encoder("pixels")
    assert any("pixels" in str(p) and "rival" in str(p) for p in plugins.problems)
    assert plugins.encoder("pixels-too").name == "pixels-too"  # the rest of the plugin still works


def test_plugin_raising_in_registration_is_reported_and_others_work(harness_plugins):
    def register_encoders(register):
        register("half-registered", Pixels, "never visible")
        raise RuntimeError("boom in registration")

    plugins = harness_plugins(make_plugin("broken", register_encoders=register_encoders))
    problem = next(p for p in plugins.problems if p.plugin == "broken")
    assert problem.stage == "register_encoders" and "boom in registration" in problem.error
    assert "half-registered" not in plugins.encoders  # nothing of a half-failed plugin is registered
    assert plugins.encoder("pixels").name == "pixels"


def test_plugin_failing_on_import_is_reported_and_others_work(tmp_path, monkeypatch):
    (tmp_path / "explodes_on_import.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins(builtins=("explodes_on_import", "harness.plugins.pixels", "harness.plugins.knn"), entry_points=False)
    assert [p.plugin for p in plugins.problems] == ["explodes_on_import"]
    assert "missing dependency xyz" in plugins.problems[0].error
    # The plugins after the broken one registered and build working objects.
    pixels, knn = plugins.encoder("pixels"), plugins.evaluator("knn")
    assert isinstance(pixels, Pixels) and pixels.name == "pixels"
    assert isinstance(knn, KNN) and knn.protocol == "knn/dino-v1"
    assert plugins.infos["harness.plugins.pixels"].registered == {"encoder": ["pixels"]}


def test_misspelled_hook_is_reported_by_check_pending(harness_plugins):
    plugins = harness_plugins(make_plugin("typo", register_encoder=lambda register: None))
    problem = next(p for p in plugins.problems if p.plugin == "typo")
    assert problem.stage == "validate" and "register_encoder" in problem.error


def test_example_plugin_is_discovered_through_its_entry_point():
    plugins = Plugins()
    info = plugins.infos["example"]
    assert (info.distribution, info.version, info.builtin) == ("harness-example-plugin", "0.4.0", False)
    assert info.registered == {"encoder": ["colour-histogram"], "dataset": ["example-shapes"],
                               "evaluator": ["nearest-centroid"]}
    assert plugins.encoder("colour-histogram").name == "colour-histogram"


def test_block_and_load_only_environment_variables(monkeypatch):
    monkeypatch.setenv(BLOCK_PLUGINS_ENV, "harness-example-plugin,harness.plugins.pixels")
    plugins = Plugins()
    assert "example" not in plugins.infos and "colour-histogram" not in plugins.encoders
    assert "pixels" not in plugins.encoders and "efficientnet_lite0" in plugins.encoders
    monkeypatch.delenv(BLOCK_PLUGINS_ENV)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "some-other-plugin")
    assert "example" not in Plugins().infos
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "example")
    assert "example" in Plugins().infos


@pytest.mark.slow  # a `harness` subprocess
def test_cli_plugins_lists_distribution_version_and_names():
    result = subprocess.run([sys.executable, "-m", "harness", "plugins"], capture_output=True, text=True, check=True)
    assert "example  (harness-example-plugin 0.4.0, entry point)" in result.stdout
    assert "encoders: colour-histogram" in result.stdout
    assert f"harness.plugins.knn  (encoder-harness {version('encoder-harness')}, built-in)" in result.stdout


@pytest.mark.slow  # a `harness` subprocess
def test_cli_unknown_encoder_exits_2_with_close_matches(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness", "run", "--encoder", "pixel", "--results-dir",
                             str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown encoder 'pixel'" in result.stderr and "Did you mean: pixels" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "c").exists()  # nothing was extracted
