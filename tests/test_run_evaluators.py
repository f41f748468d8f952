"""Runs with several evaluators: one extraction feeds all of them; unlabelled data skips what needs labels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from harness.records import load_records
from harness_test_support.helpers import CountingPixels, EncoderPlugin
from harness.runner import RunConfig, run


@pytest.mark.slow  # kNN, linear probe and UMAP clustering end to end: ~20 s of CPU
def test_three_evaluators_share_one_extraction(tmp_path, harness_plugins):
    encoder = CountingPixels()
    plugins = harness_plugins(EncoderPlugin("counting-pixels", lambda: encoder))
    config = RunConfig(encoders=["counting-pixels"], datasets=["synthetic"], evaluators=["knn", "linear", "clustering"],
                       results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", progress=False)
    report = run(config, plugins)
    assert not report.failures, report.failures
    assert encoder.items == 96 + 96  # each train and test item encoded exactly once, for three evaluators
    protocols = sorted(r["evaluator"]["protocol"] for r in report.records)
    assert protocols == ["clustering/umap-v2", "knn/dino-v1", "linear/logreg-v1"]
    keys = {tuple(sorted(r["cache_keys"].items())) for r in report.records if r["evaluator"]["name"] != "clustering"}
    assert len(keys) == 1  # kNN and linear read the very same cache entries
    clustering = next(r for r in report.records if r["evaluator"]["name"] == "clustering")
    assert clustering["cache_keys"]["test"] == dict(next(iter(keys)))["test"]


@pytest.mark.slow  # a `harness` subprocess
def test_unlabelled_folder_runs_clustering_and_skips_label_evaluators(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(60):
        base = (40, 200)[i % 2]
        Image.fromarray(np.clip(base + rng.normal(0, 15, (16, 16, 3)), 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    result = subprocess.run([sys.executable, "-m", "harness", "run", "-e", "pixels", "-d", f"imagefolder:{folder}",
                             "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"),
                             "--device", "cpu", "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "knn skipped on imagefolder:" in result.stderr and "it needs labels" in result.stderr
    assert "linear skipped on imagefolder:" in result.stderr
    [record] = load_records(tmp_path / "results")
    assert record["evaluator"]["name"] == "clustering" and record["metrics"]["labelled"] is False
    assert record["main_metric"] == "ward.silhouette_umap" and record["main_score"] > 0.5  # two clear groups
    assert record["metrics"]["mean"]["ward.ami"] is None
