"""SimpleShot's CL2N features and the nearest-centroid classifier on them (Wang et al., 2019, "SimpleShot").

CL2N: centre by the mean of the support features, then L2-normalise each row; the test features are centred by
the same support mean. The classifier: each class's mean of its normalised support rows, scored against a test
row by cosine similarity; the highest wins, ties to the lower class index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so importing the plugin stays cheap
    import torch

#: Rows whose norm is below this after centring are left at (nearly) zero instead of divided by ~0.
NORM_FLOOR = 1e-12


def cl2n(x: "torch.Tensor", support_mean: "torch.Tensor") -> "torch.Tensor":
    """Rows centred by `support_mean`, then divided by their norm (clamped at NORM_FLOOR)."""
    centred = x - support_mean
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(NORM_FLOOR)


def class_means(support: "torch.Tensor", counts: list[int]) -> "torch.Tensor":
    """(K, D): the mean of each class's rows; `support` holds the classes' rows one class after another."""
    import torch

    return torch.stack([block.mean(0) for block in torch.split(support, counts)])


def centroid_scores(test: "torch.Tensor", means: "torch.Tensor") -> "torch.Tensor":
    """Cosine similarity of every (CL2N) test row to every class mean: (N, K)."""
    unit = means / means.norm(dim=1, keepdim=True).clamp_min(NORM_FLOOR)
    return test @ unit.T
