"""Under torchrun, rank 0 failing to write the records makes every rank exit non-zero, each naming the results
directory (the other ranks wait for rank 0's records at one last collective instead of exiting after extraction)."""

from __future__ import annotations

from pathlib import Path

from test_distributed import rank_output, torchrun

ROOT = Path(__file__).resolve().parent.parent


def test_every_rank_fails_when_rank_0_cannot_write_the_records(tmp_path):
    out, logs, results = tmp_path / "out", tmp_path / "logs", tmp_path / "results"
    out.mkdir()
    results.write_text("a file where the results directory should be\n")
    launch = torchrun([str(ROOT / "tests" / "distributed_records_worker.py"), str(out), "--", "-e", "pixels", "-d",
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
    assert results.read_text() == "a file where the results directory should be\n"
