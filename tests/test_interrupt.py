"""A run killed in the middle of extraction resumes from its finished shards and ends with identical embeddings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from harness.extract import ExtractionOptions, extract
from harness.plugins import Plugins
from harness.store import EmbeddingStore

ENCODER = "random:test_resnet"


def test_sigkill_during_extraction_then_rerun_resumes(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    command = [sys.executable, "-m", "harness", "run", "-e", ENCODER, "-d", "cifar10-mini", "--eval", "knn",
               "--cache-dir", str(cache), "--results-dir", str(results), "--device", "cpu", "--batch-size", "16",
               "--shard-size", "32", "--no-progress"]
    log = tmp_path / "first-run.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 300
        while not list((cache / "partial").glob("*/shard-*.npz")):  # wait for a finished shard, not a fixed time
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no shard was written within 300 s"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not list((cache / "entries").glob("*"))  # nothing finished, so nothing visible
    finished = len(list((cache / "partial").glob("*/shard-*.npz")))
    assert finished >= 1

    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming random:test_resnet on cifar10-mini/train" in rerun.stderr

    plugins = Plugins(entry_points=False)
    data = plugins.dataset("cifar10-mini")
    reference, _ = extract(plugins.encoder(ENCODER), data, "train", EmbeddingStore(tmp_path / "reference"),
                           ExtractionOptions(device="cpu", batch_size=16, progress=False))
    resumed, report = extract(plugins.encoder(ENCODER), data, "train", EmbeddingStore(cache),
                              ExtractionOptions(device="cpu", batch_size=16, shard_size=32, progress=False))
    assert report.cache_hit
    np.testing.assert_array_equal(resumed.ids, reference.ids)
    np.testing.assert_allclose(resumed.features, reference.features, rtol=0, atol=1e-6)
