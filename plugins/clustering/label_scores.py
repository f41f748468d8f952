"""Scores of one predicted labeling against the classes (AMI, ARI, NMI), and the rule that no value is NaN."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .metrics import AMI, AMI_CLUSTERED, ARI, LABEL_METRICS, N_CLUSTERS, NMI, NOISE_FRACTION


def label_metrics(predicted: np.ndarray, true: np.ndarray,
                  hdbscan: bool = False) -> dict[str, tuple[float | int | None, str | None]]:
    """Metric -> (value, reason when None) for one predicted labeling; `true` is -1 where an item has no label.

    Predicted noise (-1) is one more label for AMI, ARI and NMI, as in Lowe et al.; `ami_clustered` (HDBSCAN
    only) is the AMI over the labelled points that were not noise. Label metrics use the labelled items only.
    """
    from sklearn import metrics as skm

    predicted = np.asarray(predicted)
    true = np.asarray(true)
    noise = predicted < 0
    out: dict[str, tuple[float | int | None, str | None]] = {
        N_CLUSTERS: (int(len(np.unique(predicted[~noise]))), None),
        NOISE_FRACTION: (float(noise.mean()), None),
    }
    names = (*LABEL_METRICS, AMI_CLUSTERED) if hdbscan else LABEL_METRICS
    has_label = true >= 0
    if not has_label.any():
        out.update({m: (None, "the test split has no labels") for m in names})
        return out
    y, p = true[has_label], predicted[has_label]
    out[AMI] = (float(skm.adjusted_mutual_info_score(y, p, average_method="arithmetic")), None)
    out[ARI] = (float(skm.adjusted_rand_score(y, p)), None)
    out[NMI] = (float(skm.normalized_mutual_info_score(y, p, average_method="arithmetic")), None)
    if hdbscan:
        clustered = p >= 0
        if clustered.any():
            out[AMI_CLUSTERED] = (float(skm.adjusted_mutual_info_score(y[clustered], p[clustered],
                                                                   average_method="arithmetic")), None)
        else:
            out[AMI_CLUSTERED] = (None, "HDBSCAN labelled every point as noise")
    return out


def finite(value: Any) -> Any:
    """A float that is finite, else None (JSON has no NaN); numpy scalars as Python numbers."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
