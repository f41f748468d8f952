"""The example package in examples/harness-example-plugin (installed before the session, as tox does): one plugin
of each kind, run end to end through the CLI, its evaluator fed from the cache without a second extraction."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from harness import hookimpl
from harness.plugin_manager import Plugins
from harness.records import load_predictions, load_records
from harness.runner import RunConfig, run
from harness.store import EmbeddingStore
from harness_test_support.plugin_packages import env_with_path, harness_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harness-example-plugin"
REINSTALL = "reinstall it: pip install --no-deps ./examples/harness-example-plugin"


def test_the_installed_example_plugin_is_the_one_in_this_repository():
    declared = re.search(r'^version = "(.+)"$', (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"), re.M)[1]
    assert importlib.metadata.version("harness-example-plugin") == declared, REINSTALL
    installed = Path(importlib.util.find_spec("harness_example_plugin").origin)
    assert installed.read_text() == (EXAMPLE / "harness_example_plugin" / "__init__.py").read_text(), REINSTALL


def test_example_plugin_registers_one_of_each_kind():
    plugins = Plugins()
    assert plugins.infos["example"].registered == {"encoder": ["colour-histogram"], "dataset": ["example-shapes"],
                                                   "evaluator": ["nearest-centroid"]}
    assert plugins.evaluator("nearest-centroid").protocol == "nearest-centroid/l2-v1"


def colour_histograms(images: list) -> np.ndarray:
    """8x8x8 joint RGB histograms, normalised to sum to 1, with numpy's histogramdd (not the plugin's code)."""
    out = []
    for image in images:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        counts, _ = np.histogramdd(pixels, bins=(8, 8, 8), range=((0, 256),) * 3)
        out.append(counts.ravel() / len(pixels))
    return np.stack(out)


@pytest.mark.slow  # two `harness` subprocesses
def test_example_plugin_end_to_end_through_the_cli_with_one_extraction(tmp_path):
    from harness_example_plugin import Shapes
    from sklearn.neighbors import NearestCentroid

    cache = tmp_path / "cache"
    args = ["run", "--encoder", "colour-histogram", "--dataset", "example-shapes", "--cache-dir", str(cache),
            "--no-progress"]
    first = harness_cli(*args, "--eval", "nearest-centroid,knn", "--results-dir", str(tmp_path / "r1"),
                        env=env_with_path())
    assert first.returncode == 0, first.stdout + first.stderr
    # 120 train + 120 test items, each encoded once (2 batches of <= 64 per split) for both evaluators.
    assert "extracted 240 items in 4 forward passes; 0 embedding set(s) came from the cache" in first.stderr
    records = {r["evaluator"]["name"]: r for r in load_records(tmp_path / "r1")}
    assert set(records) == {"nearest-centroid", "knn"}
    record = records["nearest-centroid"]
    assert record["cache_keys"] == records["knn"]["cache_keys"]
    assert record["evaluator"]["protocol"] == "nearest-centroid/l2-v1" and record["main_metric"] == "accuracy"

    # Independent reference: histograms from the images with numpy, classes from sklearn's NearestCentroid.
    store, shapes, features, labels = EmbeddingStore(cache), Shapes(), {}, {}
    for name in ("train", "test"):
        cached = store.load(record["cache_keys"][name])
        split = shapes.split(name)
        index = [int(item_id.split("/")[1]) for item_id in cached.ids]
        features[name] = colour_histograms([split[i][0] for i in index])
        labels[name] = np.array([split[i][1] for i in index])
        np.testing.assert_allclose(cached.features, features[name], atol=1e-6)
        assert cached.labels.tolist() == labels[name].tolist()
    normalised = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in features.items()}
    # Bins empty in every train image add the same amount to every class distance, and make sklearn divide by a
    # zero spread: leave them out.
    used = normalised["train"].any(axis=0)
    expected = NearestCentroid().fit(normalised["train"][:, used], labels["train"]).predict(normalised["test"][:, used])
    assert load_predictions(record)["prediction"].tolist() == expected.tolist()
    accuracy = float((expected == labels["test"]).mean())
    assert record["main_score"] == pytest.approx(accuracy, abs=1e-12)
    # the per-item score column: correctness of each test item, whose mean is the main score
    assert load_predictions(record)["score"].tolist() == (expected == labels["test"]).astype(float).tolist()
    per_class = {name: float((expected == labels["test"])[labels["test"] == c].mean())
                 for c, name in enumerate(("disc", "square", "cross"))}
    assert record["metrics"]["per_class_accuracy"] == pytest.approx(per_class)

    # Only the plugin's evaluator now: everything from the cache, no forward pass, the same number.
    second = harness_cli(*args, "--eval", "nearest-centroid", "--results-dir", str(tmp_path / "r2"),
                         env=env_with_path())
    assert second.returncode == 0, second.stdout + second.stderr
    assert "all 2 embedding sets came from the cache: no forward pass was run" in second.stderr
    (again,) = load_records(tmp_path / "r2")
    assert again["main_score"] == record["main_score"] and again["cache_keys"] == record["cache_keys"]


def test_plugin_evaluator_never_causes_a_second_extraction_in_the_run_report(tmp_path):
    config = dict(encoders=["colour-histogram"], datasets=["example-shapes"], cache_dir=tmp_path / "cache",
                  device="cpu", progress=False, command="test")
    plugins = Plugins()
    both = run(RunConfig(evaluators=["nearest-centroid", "knn"], results_dir=tmp_path / "r1", **config), plugins)
    assert [(e.cache_hit, e.items_encoded) for e in both.extractions] == [(False, 120), (False, 120)]
    assert len(both.records) == 2 and not both.failures
    alone = run(RunConfig(evaluators=["nearest-centroid"], results_dir=tmp_path / "r2", **config), plugins)
    assert [(e.cache_hit, e.items_encoded) for e in alone.extractions] == [(True, 0), (True, 0)]
    assert alone.forward_passes == 0
    assert alone.records[0]["main_score"] == next(r for r in both.records
                                                  if r["evaluator"]["name"] == "nearest-centroid")["main_score"]



class RecordingEvaluator:
    """A plugin object whose evaluator (the example's nearest-centroid) notes what it was handed."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    @hookimpl
    def register_evaluators(self, register):
        from harness_example_plugin import NearestCentroid

        seen = self.seen

        class Recording(NearestCentroid):
            def evaluate(self, train, test, *, seed, settings):
                seen.extend({"split": e.meta["split"], "key": e.meta["key"],
                             "memmap": isinstance(e.features, np.memmap), "writeable": e.features.flags.writeable}
                            for e in (train, test))
                return super().evaluate(train, test, seed=seed, settings=settings)

        register("recording-centroid", Recording, "nearest-centroid, noting its inputs (test plugin)")


def test_a_plugin_evaluator_is_handed_the_cached_embeddings_even_on_a_cold_run(tmp_path, harness_plugins):
    recorder = RecordingEvaluator()
    plugins = harness_plugins(recorder, entry_points=True)  # the installed example plugin, plus this one
    report = run(RunConfig(encoders=["colour-histogram"], datasets=["example-shapes"],
                           evaluators=["recording-centroid"], results_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                           device="cpu", progress=False, command="test"), plugins)
    assert [e.cache_hit for e in report.extractions] == [False, False]  # a cold cache: extracted in this run
    (record,) = report.records
    # What the evaluator got are the cache's read-only memory maps of exactly the entries the record names.
    assert recorder.seen == [{"split": s, "key": record["cache_keys"][s], "memmap": True, "writeable": False}
                             for s in ("train", "test")]
