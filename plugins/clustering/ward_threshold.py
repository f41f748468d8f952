"""Agglomerative ward without labels: the tree cut at the distance threshold with the best silhouette.

Lowe et al.'s rule for unlabelled data. One ward tree; the candidate thresholds lie in the gaps between its merge
heights that leave 2 .. min(1000, N/5) clusters: about 40 log-spaced cluster counts, then every count between the
best one's neighbours. The pairwise distances are read once, into the distance sums from every (sampled) point to
each cluster of the finest candidate cut; the cuts are nested, so walking from fine to coarse, each cut's sums are
sums of rows of the previous one's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .silhouette import cluster_distance_sums, silhouette_of_codes

#: Candidate cuts leave 2 .. min(AUTO_MAX_CLUSTERS, N // AUTO_MIN_MEAN_SIZE) clusters.
AUTO_MAX_CLUSTERS = 1000
AUTO_MIN_MEAN_SIZE = 5
AUTO_GRID_POINTS = 40


def _merge_rows(sums_t: np.ndarray, labels_from: np.ndarray, labels_to: np.ndarray, k_to: int) -> np.ndarray:
    """Rows of per-cluster sums for a finer cut (`labels_from`) -> rows for a coarser, nested cut (`labels_to`)."""
    member = np.empty(sums_t.shape[0], dtype=np.int64)
    member[labels_from] = np.arange(len(labels_from))  # one point of each fine cluster
    target = labels_to[member]
    order = np.argsort(target, kind="stable")
    starts = np.searchsorted(target[order], np.arange(k_to))
    return np.add.reduceat(sums_t[order], starts, axis=0)


@dataclass
class WardCuts:
    """One ward tree of n points, and the silhouette (on `rows`) of each cut scored so far."""

    tree: np.ndarray  # scipy's linkage matrix
    n: int
    rows: np.ndarray  # the points the silhouettes are computed on
    scores: dict[int, float] = field(default_factory=dict)

    def threshold(self, k: int) -> float:
        """The distance threshold halfway through the gap that leaves k clusters."""
        heights = self.tree[:, 2]  # ascending: after merge i, n - 1 - i clusters are left
        return float((heights[self.n - k - 1] + heights[self.n - k]) / 2.0)

    def cut(self, k: int) -> np.ndarray:
        from scipy.cluster.hierarchy import fcluster

        return fcluster(self.tree, self.threshold(k), criterion="distance").astype(np.int64) - 1

    def walk(self, ks: Sequence[int], labels: np.ndarray, sums_t: np.ndarray) -> None:
        """Score the cuts with `ks` clusters (descending), each from the previous, finer one."""
        for k in ks:
            new = self.cut(k)
            if int(new.max()) + 1 != k:  # two heights too close for a threshold between them
                self.scores[k] = -math.inf
                continue
            sums_t = _merge_rows(sums_t, labels, new, k)
            labels = new
            value, _ = silhouette_of_codes(sums_t.T, new[self.rows], k)
            self.scores[k] = -math.inf if value is None else value


def feasible_cluster_counts(heights: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """(k_max, the counts 2..k_max that some threshold gives): cutting between merge n-k-1 and merge n-k leaves
    exactly k clusters; a tie in heights has no such cut."""
    k_max = max(2, min(AUTO_MAX_CLUSTERS, n // AUTO_MIN_MEAN_SIZE, n - 1))
    feasible = np.array([k for k in range(2, k_max + 1) if heights[n - k - 1] < heights[n - k]], dtype=np.int64)
    return k_max, feasible


def _finest_sums(points: np.ndarray, cuts: WardCuts, finest_k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(the finest candidate cut, its transposed distance sums (clusters x sampled points))."""
    finest = cuts.cut(finest_k)
    finest_k = int(finest.max()) + 1  # should a threshold fall on a height, the cut has what it has
    (sums,) = cluster_distance_sums(points[cuts.rows], [finest[cuts.rows]], device)
    finest_sums_t = np.zeros((finest_k, len(cuts.rows)))
    finest_sums_t[np.unique(finest[cuts.rows])] = sums.T  # clusters without sampled points keep zero rows
    return finest, finest_sums_t


def _search(cuts: WardCuts, k_max: int, feasible: np.ndarray, finest: np.ndarray, finest_sums_t: np.ndarray) -> None:
    """Score about AUTO_GRID_POINTS log-spaced counts, then every feasible count between the best one's neighbours."""
    grid = np.unique(np.round(np.geomspace(2, k_max, AUTO_GRID_POINTS)).astype(np.int64))
    coarse = np.unique(feasible[np.minimum(np.searchsorted(feasible, grid), len(feasible) - 1)])
    cuts.walk([int(k) for k in coarse[::-1]], finest, finest_sums_t)
    best_index = int(np.argmax([cuts.scores[int(k)] for k in coarse]))
    low = int(coarse[best_index - 1]) if best_index > 0 else int(feasible[0])
    high = int(coarse[best_index + 1]) if best_index + 1 < len(coarse) else int(feasible[-1])
    between = [int(k) for k in feasible[(feasible > low) & (feasible < high)][::-1]]
    if between:
        high_cut = cuts.cut(high)
        if int(high_cut.max()) + 1 == high:
            cuts.walk(between, high_cut, _merge_rows(finest_sums_t, finest, high_cut, high))
        else:
            cuts.walk(between, finest, finest_sums_t)


def ward_by_silhouette(points: np.ndarray, sample: np.ndarray | None,
                       device: str = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
    """Ward clustering of `points` cut at the distance threshold with the best silhouette (on `sample` rows).

    Returns (labels, info): info has the chosen `threshold`, `n_clusters`, the number of `candidates` scored and
    `k_max`, or a `reason` when no cut has a defined silhouette.
    """
    from scipy.cluster.hierarchy import linkage

    n = points.shape[0]
    tree = linkage(np.asarray(points, dtype=np.float64), method="ward")
    k_max, feasible = feasible_cluster_counts(tree[:, 2], n)
    info: dict[str, Any] = {"candidates": 0, "k_max": int(k_max)}
    if len(feasible) == 0:
        info["reason"] = "the ward tree has no cut with 2 or more clusters (all points coincide?)"
        return np.zeros(n, dtype=np.int64), info
    cuts = WardCuts(tree, n, np.arange(n) if sample is None else sample)
    finest, finest_sums_t = _finest_sums(points, cuts, int(feasible[-1]), device)
    _search(cuts, k_max, feasible, finest, finest_sums_t)
    best_k = max(cuts.scores, key=lambda k: (cuts.scores[k], -k))  # ties go to fewer clusters
    info.update(threshold=cuts.threshold(best_k), n_clusters=int(best_k), candidates=len(cuts.scores))
    if cuts.scores[best_k] == -math.inf:
        info["reason"] = "no candidate cut has a defined silhouette"
    return cuts.cut(best_k), info
