"""Extraction under torchrun: two CPU ranks (gloo) share every extraction and merge to exactly what one process
extracts; rank 0 alone evaluates and writes records; an error on one rank stops every rank; a rank that dies
leaves shards that a rerun (of any world size, here one process) reuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import numpy as np

from harness.extract import ExtractionOptions, extract
from harness.plugin_manager import Plugins
from harness.store import EmbeddingStore
from harness_test_support.helpers import CountingPixels
from harness_test_support.torchrun import rank_output, torchrun

pytestmark = pytest.mark.slow  # torchrun: two worker processes

WORKER = Path(__file__).resolve().with_name("harness_test_support") / "distributed_worker.py"
RECORDS_WORKER = WORKER.with_name("distributed_records_worker.py")
ENCODER = "random:test_vit"  # a real ViT at its native resolution, tiny enough for a CPU
SHARD_SIZE, BATCH_SIZE, ITEMS = 16, 8, 96  # synthetic has 96 items per split: six shards, three per rank


def single_process(encoder, split: str, store: EmbeddingStore, **options):
    import torch

    from harness.plugins.synthetic import Synthetic

    data = Synthetic(classes=4, per_class=ITEMS // 4)
    data.name = "synthetic"
    # One thread, as torchrun gives each rank: the same kernels, and no oversubscribed cores on a busy CI machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return extract(encoder, data, split, store, ExtractionOptions(device="cpu", batch_size=BATCH_SIZE,
                                                                      progress=False, **options))
    finally:
        torch.set_num_threads(threads)


def test_two_ranks_merge_to_the_single_process_embeddings(tmp_path):
    cache, results, logs, out = tmp_path / "cache", tmp_path / "results", tmp_path / "logs", tmp_path / "worker"
    out.mkdir()
    # One launch (starting the processes is most of the cost here): `harness run`, then the failure scenarios.
    # torchrun looks for dead ranks every 2 s, not 0.1 s: when rank 1 dies at the end, rank 0 must have the time to
    # notice and say so before torchrun stops it (at 0.1 s, a loaded machine lost that race).
    launch = torchrun([str(WORKER), str(out), "--", "-e", ENCODER, "-d", "synthetic", "--eval", "knn",
                       "--cache-dir", str(cache), "--results-dir", str(results), "--device", "cpu",
                       "--batch-size", str(BATCH_SIZE), "--shard-size", str(SHARD_SIZE), "--no-progress"], logs,
                      monitor_interval_s=2)
    output, _ = launch.communicate(timeout=300)
    assert (out / "rank0-run-exit.txt").read_text() == "0", output + rank_output(logs, 0, "stderr")
    assert (out / "rank1-run-exit.txt").read_text() == "0", output + rank_output(logs, 1, "stderr")
    # The same command with --resume: rank 0 finds the cell done and tells every rank, so no rank extracts.
    assert (out / "rank0-resume-exit.txt").read_text() == "0", output + rank_output(logs, 0, "stderr")
    assert (out / "rank1-resume-exit.txt").read_text() == "0", output + rank_output(logs, 1, "stderr")
    resumed = rank_output(logs, 0, "stderr").split("1 cell(s) skipped: already done")
    assert len(resumed) == 2 and "forward passes" not in resumed[1] and "came from the cache" not in resumed[1]
    plugins = Plugins(entry_points=False)
    for split in ("train", "test"):
        reference, report = single_process(plugins.encoder(ENCODER), split, EmbeddingStore(tmp_path / "reference"))
        assert report.items_encoded == ITEMS
        merged = EmbeddingStore(cache).load(report.key)  # same key: the ranks fingerprinted exactly the same thing
        assert merged is not None
        np.testing.assert_array_equal(merged.ids, reference.ids)  # same items, same order
        assert len(set(merged.ids.tolist())) == ITEMS  # every item exactly once, no padding duplicates
        np.testing.assert_array_equal(merged.labels, reference.labels)
        np.testing.assert_allclose(merged.features, reference.features, rtol=1e-5, atol=1e-5)
        # Shard i was written by rank i % 2, and by that rank only.
        assert merged.meta["ranks"] == {"world_size": 2, "shards_written_by_rank": {"0": [0, 2, 4], "1": [1, 3, 5]}}
        assert merged.meta["items_encoded_this_run"] == ITEMS

    # One record, written by rank 0, which alone prints the leaderboard; rank 1 prints a one-line note.
    records = list(results.rglob("seed-*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["evaluator"]["name"] == "knn"
    assert "random:test_vit" in rank_output(logs, 0, "stdout")
    assert rank_output(logs, 1, "stdout") == ""
    assert rank_output(logs, 1, "stderr").startswith("rank 1 of 2: extraction shared and done; rank 0 evaluates")

    # An encoder failing on rank 1 stops both ranks, each saying why; no rank hangs.
    assert (out / "rank1-error.txt").read_text() == "ValueError: simulated encoder failure on rank 1"
    rank0 = (out / "rank0-error.txt").read_text()
    assert rank0.startswith("HarnessError: extracting counting-pixels on synthetic/test failed on rank 1: "
                            "ValueError: simulated encoder failure on rank 1"), rank0

    # An encoder giving NaN on rank 1 in its second shard (item 48): every rank raises, and rank 0 then removes
    # every shard of that extraction, its own two included, once rank 1 has stopped writing.
    rank1 = (out / "rank1-nan-error.txt").read_text()
    assert rank1.startswith("NonFiniteEmbeddingError: encoder 'counting-pixels' produced NaN or inf for item "
                            "'test/48' of synthetic/test"), rank1
    rank0 = (out / "rank0-nan-error.txt").read_text()
    assert rank0.startswith("HarnessError: extracting counting-pixels on synthetic/test failed on rank 1: "
                            "NonFiniteEmbeddingError"), rank0
    assert rank0.endswith("\n4 batches")  # rank 0 had written shards 0 and 2 (two batches each)
    assert (out / "nan-shards-left.txt").read_text() == ""

    # leader_first: rank 0's step ran before rank 1's, each rank got its own result; a failure on rank 1 alone
    # (in the last turn) is raised on rank 0 too, naming rank 1.
    assert (out / "leader-first-turns.txt").read_text() == "0 starts\n0 ends\n1 starts\n1 ends\n"
    assert [(out / f"rank{r}-leader-first.txt").read_text() for r in (0, 1)] == ["0", "1"]
    assert (out / "rank1-leader-first-error.txt").read_text() == "ValueError: simulated scan failure on rank 1"
    assert (out / "rank0-leader-first-error.txt").read_text() == (
        "HarnessError: scanning (every rank) failed on rank 1: ValueError: simulated scan failure on rank 1")

    # An evaluator raising (on rank 0, where evaluators run): both ranks' reports list the failed cell.
    for rank in (0, 1):
        assert (out / f"rank{rank}-evaluator-failures.txt").read_text() == (
            "pixels exploding: RuntimeError: simulated evaluator failure (evaluators run on rank 0)")

    # Rank 1 died after its first shard: rank 0 names it, torchrun stops the run, the finished shards stay.
    assert launch.returncode != 0, output
    assert "Ranks 1 failed to pass monitoredBarrier" in rank_output(logs, 0, "stderr")
    reference, report = single_process(CountingPixels(), "train", EmbeddingStore(tmp_path / "reference"),
                                       shard_size=SHARD_SIZE)
    shards = sorted(p.name for p in (out / "cache" / "partial" / report.key).glob("shard-*.npz"))
    assert {"shard-00000.npz", "shard-00001.npz"} <= set(shards) and len(shards) < ITEMS // SHARD_SIZE, shards
    encoder = CountingPixels()  # the rerun: one process, reusing what two ranks wrote
    resumed, report = single_process(encoder, "train", EmbeddingStore(out / "cache"), shard_size=SHARD_SIZE)
    assert report.items_resumed == SHARD_SIZE * len(shards)
    assert encoder.items == report.items_encoded == ITEMS - SHARD_SIZE * len(shards)
    np.testing.assert_array_equal(resumed.ids, reference.ids)
    np.testing.assert_array_equal(resumed.features, reference.features)


# Under torchrun, rank 0 failing to write the records makes every rank exit non-zero, each naming the results
# directory (the other ranks wait for rank 0's records at one last collective instead of exiting after extraction).
def test_every_rank_fails_when_rank_0_cannot_write_the_records(tmp_path):
    out, logs, results = tmp_path / "out", tmp_path / "logs", tmp_path / "results"
    out.mkdir()
    # The results directory passes the check before any work; the encoder's folder inside it is a file, so
    # writing the records fails on rank 0 after the shared extraction.
    results.mkdir()
    (results / "pixels").write_text("a file where the encoder's folder of records should be\n")
    launch = torchrun([str(RECORDS_WORKER), str(out), "--", "-e", "pixels", "-d",
                       "synthetic", "--eval", "knn", "--cache-dir", str(tmp_path / "cache"), "--results-dir",
                       str(results), "--device", "cpu", "--batch-size", "16", "--shard-size", "32",
                       "--no-progress"], logs)
    output, _ = launch.communicate(timeout=300)
    rank0, rank1 = rank_output(logs, 0, "stderr"), rank_output(logs, 1, "stderr")
    assert (out / "rank0-exit.txt").read_text() != "0", output + rank0
    assert (out / "rank1-exit.txt").read_text() != "0", output + rank1
    assert str(results) in rank0, rank0
    assert "failed on rank 0" in rank1 and str(results) in rank1, rank1
    assert "extraction shared and done" not in rank1  # it did not report success before hearing from rank 0
    assert launch.returncode == 0, output  # the worker itself exits 0 once every rank wrote its status
    assert (results / "pixels").read_text() == "a file where the encoder's folder of records should be\n"
