"""What the linear probe reports about its test predictions: top-1, top-5, per-class and balanced accuracy."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.metric_names import NULL_REASONS
from harness.types import Embeddings


def class_names(test: Embeddings, train: Embeddings, num_classes: int) -> list[str]:
    """A name for each class index: the dataset's class names where it has them, else the index."""
    names = list(test.meta.get("class_names") or train.meta.get("class_names") or [])
    return [str(names[i]) if i < len(names) else str(i) for i in range(num_classes)]


def accuracy_metrics(labels: np.ndarray, prediction: np.ndarray, top5: np.ndarray, names: Sequence[str]
                     ) -> dict[str, Any]:
    """Accuracies over the labelled test items; `top5` is -1 where the model has fewer than five classes."""
    known = labels >= 0
    labels, prediction, top5 = labels[known], prediction[known], top5[known]
    hit = prediction == labels
    metrics: dict[str, Any] = {"top1": float(hit.mean()), NULL_REASONS: {}}
    if len(names) < 5 or (top5 < 0).any():
        metrics["top5"] = None
        metrics[NULL_REASONS]["top5"] = "fewer than 5 classes in the model"
    else:
        metrics["top5"] = float((top5 == labels[:, None]).any(1).mean())
    per_class = {}
    for index in np.unique(labels):
        mask = labels == index
        per_class[names[index]] = float(hit[mask].mean())
    metrics["per_class_accuracy"] = per_class
    # sklearn's balanced_accuracy_score: the mean recall over the classes present in the test labels
    metrics["balanced_accuracy"] = float(np.mean(list(per_class.values())))
    metrics["test_size"] = int(len(labels))
    if not metrics[NULL_REASONS]:
        del metrics[NULL_REASONS]
    return metrics


