"""Fewer than two classes: every prediction is right and every clustering agrees with the labels, so each built-in
evaluator refuses instead of reporting a perfect-looking 1.0 (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.runner import RunConfig, run
from harness.types import Embeddings, ExecutionSettings

CPU = ExecutionSettings(device="cpu")


def one_class(n: int, split: str) -> Embeddings:
    rng = np.random.default_rng(0)
    return Embeddings(rng.normal(size=(n, 8)).astype(np.float32), np.zeros(n, dtype=np.int64),
                      np.array([f"{split}/{i}" for i in range(n)]), {"class_names": ["cat"]})


@pytest.mark.parametrize("name", ["knn", "linear", "clustering", "fewshot", "retrieval"])
def test_each_builtin_evaluator_refuses_one_class(harness_plugins, name):
    evaluator = harness_plugins().evaluator(name)
    with pytest.raises(HarnessError, match=r"1 class\(es\) \('cat'\).*at least two classes"):
        evaluator.evaluate(one_class(60, "train"), one_class(40, "test"), seed=0, settings=CPU)


def test_a_one_class_dataset_gives_failed_cells_not_perfect_scores(harness_plugins, tmp_path):
    config = RunConfig(encoders=["pixels"], datasets=["synthetic"], evaluators=["knn", "linear"],
                       results_dir=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu", progress=False)
    from harness.plan import DatasetSpec

    config.datasets = [DatasetSpec("synthetic", {"classes": 1})]
    report = run(config, harness_plugins())
    assert report.records == []
    assert sorted(f.evaluator for f in report.failures) == ["knn", "linear"]
    assert all("at least two classes" in f.error for f in report.failures)
