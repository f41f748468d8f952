"""docs/plugins.md is run, not just read: its package is written out, pip-installed, discovered through its entry
points by the real CLI and checked against an independent computation; its own tests pass; and its hook reference
matches harness/hookspecs.py."""

from __future__ import annotations

import csv
import importlib.util
import io
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pluggy
import pytest

from harness import hookspecs
from harness.records import load_predictions, load_records
from harness.store import EmbeddingStore
from harness_test_support.plugin_packages import (doc_files, 
    env_with_path, harness_cli, pip_install_target, plugin_block, write_package,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The documented package, written from the doc alone and installed into a private folder: (package, site)."""
    root = tmp_path_factory.mktemp("tutorial")
    package = write_package(root / "harness-tutorial-plugin", doc_files(DOC.read_text(encoding="utf-8"), DOC.name))
    return package, pip_install_target(package, root / "site")


def load_doc_module(package: Path, relative: str) -> types.ModuleType:
    """A module of the documented package, imported from its file without touching sys.path."""
    spec = importlib.util.spec_from_file_location(f"doc_{Path(relative).stem}", package / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_holds_a_whole_package():
    files = doc_files(DOC.read_text(encoding="utf-8"), DOC.name)
    assert set(files) == {"pyproject.toml", "harness_tutorial/__init__.py", "harness_tutorial/encoders.py",
                          "harness_tutorial/datasets.py", "harness_tutorial/evaluators.py",
                          "tests/test_tutorial_plugin.py"}
    for path, source in files.items():  # each Python block is a full module, not a fragment
        if path.endswith(".py"):
            compile(source, path, "exec")


@pytest.mark.slow  # pip-installs the documented plugin, `harness` subprocesses
def test_plugins_check_lists_the_documented_plugins(tutorial):
    _, site = tutorial
    result = harness_cli("plugins", "--check", env=env_with_path(site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROBLEM" not in result.stdout
    block = plugin_block(result.stdout, "tutorial-encoders")
    assert "(harness-tutorial-plugin 0.1.0, entry point)" in block
    assert "encoders: channel-stats, channel-grid" in block
    assert "datasets: noisy-shades" in plugin_block(result.stdout, "tutorial-datasets")
    assert "evaluators: one-nn" in plugin_block(result.stdout, "tutorial-evaluators")
    listed = harness_cli("encoders", env=env_with_path(site))
    assert re.search(r"^channel-grid:<\.\.\.>\s+channel-grid:<n>.*\[tutorial-encoders\]$", listed.stdout, re.M)


def reference_features(images: list[Any], grid: int) -> np.ndarray:
    """Per-cell channel mean and unbiased std, straight from the pixels, in the encoder's (channel, row, column)
    order, means first."""
    pixels = np.stack([np.asarray(image, dtype=np.float64) / 255 for image in images]).transpose(0, 3, 1, 2)
    n, c, h, w = pixels.shape
    cells = pixels.reshape(n, c, grid, h // grid, grid, w // grid)
    return np.concatenate([cells.mean(axis=(3, 5)).reshape(n, -1),
                           cells.std(axis=(3, 5), ddof=1).reshape(n, -1)], axis=1)


@pytest.mark.slow  # pip install, a `harness` subprocess
def test_documented_plugins_run_end_to_end_and_match_an_independent_computation(tutorial, tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    package, site = tutorial
    results, cache = tmp_path / "results", tmp_path / "cache"
    result = harness_cli("run", "--encoder", "channel-stats", "--encoder", "channel-grid:2", "--dataset",
                         "noisy-shades", "--eval", "one-nn,knn", "--results-dir", str(results), "--cache-dir",
                         str(cache), "--no-progress", env=env_with_path(site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "extracted 360 items in" in result.stderr  # 2 encoders x (90 + 90) items, once, for both evaluators

    records = {(r["encoder"]["name"], r["evaluator"]["name"]): r for r in load_records(results)}
    assert set(records) == {(e, v) for e in ("channel-stats", "channel-grid:2") for v in ("one-nn", "knn")}
    datasets = load_doc_module(package, "harness_tutorial/datasets.py")
    splits = {name: datasets.NoisyShades().split(name) for name in ("train", "test")}
    items = {name: [split[i] for i in range(len(split))] for name, split in splits.items()}
    store = EmbeddingStore(cache)
    for encoder, grid in (("channel-stats", 1), ("channel-grid:2", 2)):
        record = records[(encoder, "one-nn")]
        assert record["evaluator"]["protocol"] == "one-nn/euclidean-v1"
        assert record["encoder"]["info"]["embedding_dim"] == 6 * grid * grid
        assert record["encoder"]["baseline"] is True  # pretraining "none"
        features = {}
        for name in ("train", "test"):
            cached = store.load(record["cache_keys"][name])
            index = [int(item_id.split("/")[1]) for item_id in cached.ids]
            features[name] = reference_features([items[name][i][0] for i in index], grid)
            np.testing.assert_allclose(cached.features, features[name], atol=1e-5)
            assert cached.labels.tolist() == [items[name][i][1] for i in index]
            if name == "train":
                train_labels = cached.labels
            else:
                test_labels, test_ids = cached.labels, cached.ids
        expected = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(
            features["train"].astype(np.float32), train_labels).predict(features["test"].astype(np.float32))
        predictions = load_predictions(record)
        assert predictions["ids"].tolist() == test_ids.tolist()
        assert predictions["prediction"].tolist() == expected.tolist()
        accuracy = float((expected == test_labels).mean())
        assert record["main_score"] == pytest.approx(accuracy, abs=1e-12)
        assert 0.5 < accuracy < 0.98, accuracy  # the dataset is neither trivial nor hopeless for this encoder
        assert records[(encoder, "knn")]["cache_keys"] == record["cache_keys"]  # one extraction fed both
        # the documented per-item contract: `score` is each item's correctness, and its mean the main score
        assert predictions["score"].tolist() == (expected == test_labels).astype(float).tolist()
    # ... so `harness compare` bootstraps the plugin's evaluator like a built-in one
    result = harness_cli("compare", "channel-grid:2", "--against", "channel-stats", "--results-dir", str(results),
                         "--format", "csv", env=env_with_path(site))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["column"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    one_nn = rows["noisy-shades one-nn"]
    assert one_nn["method"] == "paired bootstrap, 90 items" and float(one_nn["ci_low"]) <= float(one_nn["ci_high"])
    assert float(one_nn["difference"]) == pytest.approx(records[("channel-grid:2", "one-nn")]["main_score"]
                                                        - records[("channel-stats", "one-nn")]["main_score"])


@pytest.mark.slow  # pip install, pytest in a subprocess
def test_the_documented_plugin_tests_pass_with_the_harness_fixture(tutorial):
    package, site = tutorial
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
                             "--rootdir", str(package), "tests/test_tutorial_plugin.py"],
                            capture_output=True, text=True, cwd=package, env=env_with_path(site), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b4 passed\b", result.stdout), result.stdout


# -- the hook reference ------------------------------------------------------------------------------------------

def hook_specs(module: types.ModuleType) -> dict[str, Callable[..., Any]]:
    """The hooks a module declares, found through pluggy's `harness` spec marker (not a list kept by hand)."""
    pm = pluggy.PluginManager("harness")
    return {name: getattr(module, name) for name in dir(module) if pm.parse_hookspec_opts(module, name) is not None}


def hook_signature(function: Callable[..., Any]) -> str:
    """`name(arg: Type) -> Return` as written in the source (annotations are strings under `from __future__`)."""
    def text(annotation: Any) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    signature = inspect.signature(function)
    parameters = ", ".join(p.name if p.annotation is p.empty else f"{p.name}: {text(p.annotation)}"
                           for p in signature.parameters.values())
    returns = "" if signature.return_annotation is signature.empty else f" -> {text(signature.return_annotation)}"
    return f"{function.__name__}({parameters}){returns}"


def reference_problems(module: types.ModuleType, doc: str) -> list[str]:
    """What is wrong with the doc's hook reference: hooks missing or with another signature or docstring, and
    documented hooks that do not exist."""
    section = doc.partition("\n## Hook reference\n")[2].split("\n## ")[0]
    documented = dict(re.findall(r"^### `([^`]+)`\n(.*?)(?=^### |\Z)", section, flags=re.MULTILINE | re.DOTALL))
    by_name = {heading.partition("(")[0]: (heading, body) for heading, body in documented.items()}
    problems = []
    specs = hook_specs(module)
    for name, function in sorted(specs.items()):
        expected = hook_signature(function)
        if name not in by_name:
            problems.append(f"hook {name} is not documented: add a section ### `{expected}`")
            continue
        heading, body = by_name[name]
        if heading != expected:
            problems.append(f"hook {name} is documented as `{heading}`, but its signature is `{expected}`")
        docstring = inspect.getdoc(function) or ""
        if not docstring or docstring not in body:
            problems.append(f"hook {name}: the reference must quote its docstring {docstring!r}")
    problems += [f"the reference documents {name}, which is not a hook" for name in sorted(set(by_name) - set(specs))]
    return problems


def test_every_hook_is_documented_with_its_signature_and_docstring():
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    specs = hook_specs(hookspecs)
    assert set(specs) == {name for name in vars(pm.hook) if not name.startswith("_")}  # what pluggy registers
    assert reference_problems(hookspecs, DOC.read_text(encoding="utf-8")) == []


def spec_module(source: str) -> types.ModuleType:
    module = types.ModuleType("fake_hookspecs")
    exec(compile("from __future__ import annotations\nfrom typing import Callable\n"
                 "from harness.hookspecs import hookspec\n" + source, "fake_hookspecs", "exec"), vars(module))
    return module


def test_a_new_hook_without_documentation_fails_the_reference_check():
    doc = DOC.read_text(encoding="utf-8")
    real = inspect.getsource(hookspecs).partition("hookimpl = pluggy.HookimplMarker(\"harness\")\n")[2]
    grown = spec_module(real + '\n\n@hookspec\ndef register_widgets(register: Callable[..., None]) -> None:\n'
                               '    """Register widgets."""\n')
    assert reference_problems(grown, doc) == [
        "hook register_widgets is not documented: add a section ### `register_widgets(register: Callable[..., "
        "None]) -> None`"]
    changed = spec_module(real.replace("Register evaluator classes", "Register evaluator factories")
                          .replace("def register_datasets(register: Callable[..., None])",
                                   "def register_datasets(register: Callable[..., None], extra: int)"))
    assert reference_problems(changed, doc) == [
        "hook register_datasets is documented as `register_datasets(register: Callable[..., None]) -> None`, but "
        "its signature is `register_datasets(register: Callable[..., None], extra: int) -> None`",
        "hook register_evaluators: the reference must quote its docstring "
        "'Register evaluator factories: `register(name, factory, description)`.'"]
    shrunk = spec_module(real.split("@hookspec\ndef register_evaluators")[0])
    assert reference_problems(shrunk, doc) == ["the reference documents register_evaluators, which is not a hook"]
