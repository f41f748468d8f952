"""The kNN's top-k on the CPU: one pass over each block of similarities into per-query heaps, compiled by numba.

Each query keeps its k best (similarity, train index) pairs so far as a min-heap whose root is the worst of them.
A block's columns are scanned in train-index order, so a column enters exactly when its similarity is strictly
above the root's: an equal one has a higher index than everything already held and ranks after it (the kNN's tie
rule, docs/protocols.md#knndino-v1). Almost every column fails that one comparison, which is why the selection
costs a small fraction of the matrix product that made the block; torch's `topk` plus a merge per block cost a
third of it (benchmarks/README.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def _compiled(**options):
    """numba's `njit`, cached on disk where numba finds a writable folder (beside this module, else the user's
    cache folder); where neither is writable (a read-only install run by a user without a writable home) it
    compiles afresh in each process rather than fail."""
    def decorate(func):
        try:
            return njit(cache=True, **options)(func)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available for file ..."
            return njit(**options)(func)
    return decorate


@_compiled(nogil=True, inline="always")
def _worse(sim_a, idx_a, sim_b, idx_b):
    """Whether (sim_a, idx_a) ranks after (sim_b, idx_b): lower similarity, or equal and a higher index."""
    return sim_a < sim_b or (sim_a == sim_b and idx_a > idx_b)


@_compiled(nogil=True)
def _sift_down(sims, idx, size):
    """Restore the heap (worst at the root) of the first `size` entries after the root was replaced."""
    pos = 0
    sim, index = sims[0], idx[0]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _worse(sims[right], idx[right], sims[child], idx[child]):
            child = right
        if not _worse(sims[child], idx[child], sim, index):
            break
        sims[pos], idx[pos] = sims[child], idx[child]
        pos = child
    sims[pos], idx[pos] = sim, index


@_compiled(nogil=True, parallel=True)
def scan_block(block, first_index, heap_sims, heap_idx):
    """Offer every entry of `block` (queries x train columns, column j is train row first_index + j) to its
    query's heap; the heaps' rows must start as -inf similarities (fewer than k entries seen yet)."""
    k = heap_sims.shape[1]
    for row in prange(block.shape[0]):
        sims, idx, values = heap_sims[row], heap_idx[row], block[row]
        worst = sims[0]
        for j in range(values.shape[0]):
            if values[j] > worst:
                sims[0], idx[0] = values[j], first_index + j
                _sift_down(sims, idx, k)
                worst = sims[0]


@_compiled(nogil=True, parallel=True)
def sort_heaps(heap_sims, heap_idx):
    """Each heap row in place into rank order: similarity descending, train index ascending (heapsort)."""
    k = heap_sims.shape[1]
    for row in prange(heap_sims.shape[0]):
        sims, idx = heap_sims[row], heap_idx[row]
        for end in range(k - 1, 0, -1):
            sims[0], sims[end] = sims[end], sims[0]
            idx[0], idx[end] = idx[end], idx[0]
            _sift_down(sims, idx, end)


def empty_heaps(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Heaps with nothing seen: every similarity -inf, which any finite similarity beats."""
    return np.full((n_queries, k), -np.inf, dtype=np.float32), np.zeros((n_queries, k), dtype=np.int64)
