"""Silhouettes computed in torch from one pass of pairwise distances shared by many labelings.

The same values as scikit-learn's `silhouette_score` (a test checks it): a point alone in its cluster scores 0,
noise (-1) is left out, and a labeling needs 2 <= clusters <= points - 1. The original feature space, the
expensive one, is read once for every clusterer and seed; `ward_threshold` reuses the distance sums for its cuts.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Bounds on the torch work of the silhouettes: a block of pairwise distances, and the one-hot columns per pass.
_DISTANCE_BLOCK_ELEMENTS = 1 << 24
_ONEHOT_ELEMENTS = 1 << 25


def dense_codes(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster labels -> codes 0..k-1, with every negative label (noise) kept as -1."""
    codes = np.full(labels.shape, -1, dtype=np.int64)
    valid = labels >= 0
    uniques, inverse = np.unique(labels[valid], return_inverse=True)
    codes[valid] = inverse
    return codes, len(uniques)


def _torch_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return device
    return "cpu"  # MPS has no float64; UMAP and the clusterers run on the CPU anyway


def _passes(widths: Sequence[int], columns_per_pass: int) -> list[list[int]]:
    """Consecutive labelings grouped so that each group's one-hot columns (its `widths`) fit in one pass."""
    group: list[int] = []
    groups: list[list[int]] = []
    width = 0
    for i, k in enumerate(widths):
        if group and width + k > columns_per_pass:
            groups.append(group)
            group, width = [], 0
        group.append(i)
        width += k
    if group:
        groups.append(group)
    return groups


def cluster_distance_sums(points: np.ndarray, labelings: Sequence[np.ndarray],
                          device: str = "cpu") -> list[np.ndarray]:
    """For each labeling, an (n, k) float64 array: the sum of Euclidean distances from each point to each cluster.

    Noise (-1) belongs to no cluster. One pass over blocks of the pairwise distances serves many labelings (their
    one-hot matrices side by side), so the original space, the expensive one, is read once for every clusterer
    and seed. Distances are computed in float64 as |x|^2 + |y|^2 - 2xy with a zero diagonal, as scikit-learn does.
    """
    import torch

    dev = _torch_device(device)
    n = points.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float64)).to(dev)
    sq = (x * x).sum(1)
    coded = [dense_codes(np.asarray(labels)) for labels in labelings]
    results: list[np.ndarray] = [np.zeros((n, k)) for _, k in coded]
    rows_per_block = max(1, _DISTANCE_BLOCK_ELEMENTS // max(n, 1))
    for members in _passes([k for _, k in coded], max(1, _ONEHOT_ELEMENTS // max(n, 1))):
        offsets = np.cumsum([0] + [coded[i][1] for i in members])
        onehot = torch.zeros(n, int(offsets[-1]), dtype=torch.float64, device=dev)
        for j, i in enumerate(members):
            codes = torch.from_numpy(coded[i][0]).to(dev)
            rows = torch.nonzero(codes >= 0).squeeze(1)
            onehot[rows, codes[rows] + int(offsets[j])] = 1.0
        if onehot.shape[1] == 0:
            continue
        for start in range(0, n, rows_per_block):
            stop = min(start + rows_per_block, n)
            d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
            dist = d2.clamp_min_(0.0).sqrt_()
            idx = torch.arange(start, stop, device=dev)
            dist[idx - start, idx] = 0.0
            sums = (dist @ onehot).cpu().numpy()
            for j, i in enumerate(members):
                results[i][start:stop] = sums[:, offsets[j]:offsets[j + 1]]
    return results


def silhouette_from_sums(sums: np.ndarray, labels: np.ndarray) -> tuple[float | None, str | None]:
    """Mean silhouette of the non-noise points, from their distance sums to each cluster (`cluster_distance_sums`).

    As scikit-learn: a point alone in its cluster scores 0, and the score needs 2 <= clusters <= points - 1.
    """
    codes, k = dense_codes(np.asarray(labels))
    return silhouette_of_codes(sums, codes, k)


def silhouette_of_codes(sums: np.ndarray, codes: np.ndarray, k: int) -> tuple[float | None, str | None]:
    """`sums[i, j]`: distance sum from point i to cluster j; `codes`: each point's column (-1: left out)."""
    valid = codes >= 0
    n_valid = int(valid.sum())
    counts = np.bincount(codes[valid], minlength=k).astype(np.float64)
    k_present = int((counts > 0).sum())
    if k_present < 2:
        return None, f"silhouette needs at least 2 clusters; {k_present} predicted"
    if k_present > n_valid - 1:
        return None, f"silhouette needs fewer clusters than points; {k_present} clusters for {n_valid} points"
    own = codes[valid]
    s = sums[valid]
    rows = np.arange(n_valid)
    own_count = counts[own]
    a = s[rows, own] / np.maximum(own_count - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(counts > 0, s / counts, np.inf)
    means[rows, own] = np.inf
    b = means.min(axis=1)
    denominator = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where((own_count > 1) & (denominator > 0), (b - a) / denominator, 0.0)
    value = float(score.mean())
    if not math.isfinite(value):
        return None, "silhouette is not finite"
    return value, None


def silhouettes(points: np.ndarray, labelings: Sequence[np.ndarray],
                device: str = "cpu") -> list[tuple[float | None, str | None]]:
    """Silhouette (value or None, reason) of each labeling of `points`; noise (-1) is left out."""
    sums = cluster_distance_sums(points, labelings, device)
    return [silhouette_from_sums(s, labels) for s, labels in zip(sums, labelings)]
