"""kNN over a 200,000 x 768 train bank on disk stays within the memory its blocks imply, far below N x D x 4.

The measurement runs in a fresh process (torch imported before it starts), sampling RssAnon: the memory-mapped
file's pages count in VmRSS while cached but not in RssAnon, so anonymous growth is what the evaluator copied.

The bank is written through the harness's own row writer (blocks reserved first, plain writes), not into a
writable memory map: on a full disk a page of a writable map that cannot be backed kills the whole test process
with SIGBUS, where a write fails with ENOSPC naming the file. It is deleted as soon as the test is done, since
pytest keeps every test's tmp_path until the session ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.store import _write_rows

pytestmark = pytest.mark.slow  # measures peak memory in a fresh subprocess

N, DIM, QUERIES, K = 200_000, 768, 1_000, 200
BUDGET_MB = 96
#: Allocator and thread-pool slack on top of the planned working set (torch's per-thread top-k buffers, glibc
#: arenas): a constant, not something that grows with N.
SLACK_BYTES = 48 << 20

MEASURE = r"""
import json, sys
import numpy as np
import torch
from harness.memory import AnonymousMemoryPeak
from harness.plugins.knn import blocks_for, nearest_neighbours

path, n_queries, k, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
train = np.load(path, mmap_mode="r")
queries = np.load(path.replace("train", "queries"), mmap_mode="r")
blocks = blocks_for(train.shape[0], n_queries, train.shape[1], k, memory_budget_bytes=budget)
nearest_neighbours(train[:2000], queries[:8], k, train_block=500)  # warm up torch's kernels and thread pool
with AnonymousMemoryPeak() as peak:
    sims, idx = nearest_neighbours(train, queries, k, blocks=blocks)
print(json.dumps({"growth": peak.growth_bytes, "samples": peak.samples,
                  "working": blocks.working_bytes(n_queries, train.shape[1], k),
                  "train_block": blocks.train_block, "query_block": blocks.query_block,
                  "resident": blocks.queries_resident, "idx": idx[:5].tolist(), "sims": sims[:5].tolist()}))
"""


def test_knn_peak_memory_is_bounded_by_blocks_not_by_n(tmp_path: Path) -> None:
    whole = N * DIM * 4
    free = shutil.disk_usage(tmp_path).free
    assert free > 2 * whole, (f"this test writes a {whole / 2**20:.0f} MiB bank into {tmp_path}, which has "
                              f"{free / 2**20:.0f} MiB free: free some space there or point --basetemp elsewhere")
    try:
        _measure_and_check(tmp_path)
    finally:
        (tmp_path / "train.npy").unlink(missing_ok=True)


def _measure_and_check(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = (rng.standard_normal((20_000, DIM), dtype=np.float32) for _ in range(0, N, 20_000))
    _write_rows(tmp_path / "train.npy", (N, DIM), blocks, np.dtype(np.float32))
    train = np.load(tmp_path / "train.npy", mmap_mode="r")
    queries = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    np.save(tmp_path / "queries.npy", queries)

    # The installed harness, never the checkout (its harness/ folder has no harness.plugins): nothing is added to
    # PYTHONPATH, and the working directory is the test's own folder.
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "train.npy"), str(QUERIES), str(K),
                          str(BUDGET_MB << 20)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    whole = N * DIM * 4
    print(f"\nkNN {N} x {DIM}, {QUERIES} queries, k={K}, budget {BUDGET_MB} MiB: train_block "
          f"{result['train_block']}, query_block {result['query_block']}, queries resident {result['resident']}; "
          f"planned working set {result['working'] / 2**20:.1f} MiB, measured RssAnon growth "
          f"{result['growth'] / 2**20:.1f} MiB ({result['samples']} samples); the bank is {whole / 2**20:.0f} MiB")
    assert result["train_block"] < N  # streamed
    assert result["working"] <= BUDGET_MB << 20
    assert result["growth"] <= result["working"] + SLACK_BYTES
    assert result["growth"] < whole / 4

    # The first queries' neighbours, against float64 numpy over the whole bank (read here, in the test process).
    q = queries[:5].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims = np.empty((len(q), N))
    for start in range(0, N, 20_000):
        block = np.asarray(train[start:start + 20_000], dtype=np.float64)
        sims[:, start:start + 20_000] = q @ (block / np.linalg.norm(block, axis=1, keepdims=True)).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(np.array(result["idx"]), order)
    np.testing.assert_allclose(np.array(result["sims"]), np.take_along_axis(sims, order, 1), atol=1e-5)
