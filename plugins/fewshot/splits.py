"""The evaluation splits as the few-shot classifiers score them (`harness.eval_splits`): each split's labelled
items and, for a split holding only some of the classes, the score columns of those classes.

Both classifiers are fitted once per draw on every train class; a class subset split is then scored over its
classes alone (the centroid's class means and the logistic logits of the other classes are left out before the
argmax), as the linear probe restricts its logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import HarnessError
from harness.eval_splits import classes_of
from harness.types import Embeddings

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Target:
    """One evaluation split: its labelled rows and their labels, and its classes (None: every class)."""

    name: str
    split: Embeddings
    known: np.ndarray  # rows of the labelled items, the ones the accuracies count
    labels: np.ndarray  # their labels
    subset: np.ndarray | None  # class indices the split is scored over, sorted; None for every class


def target(name: str, split: Embeddings, train_dim: int) -> Target:
    """The split checked (labelled, train's dimension) and its classes read from its meta."""
    labels = np.asarray(split.labels).astype(np.int64)
    known = np.flatnonzero(labels >= 0)
    if not len(known):
        raise HarnessError(f"fewshot: the {name} split has no labels; the accuracy needs them")
    if split.features.shape[1] != train_dim:
        raise HarnessError(f"fewshot: train and {name} embeddings differ in dimension: {train_dim} vs "
                           f"{split.features.shape[1]}")
    return Target(name, split, known, labels[known], classes_of(split))


def predict(scores: "torch.Tensor", classes: np.ndarray, subset: np.ndarray | None) -> np.ndarray:
    """The class of each row's highest score (columns in `classes` order), over the columns of `subset`'s classes
    only when given; ties to the lower class."""
    if subset is None:
        return classes[scores.argmax(1).cpu().numpy()]
    kept = np.flatnonzero(np.isin(classes, subset))
    if not len(kept):
        raise HarnessError(f"fewshot: none of the split's classes {subset.tolist()} has train items, so nothing "
                           f"can be predicted for it; give train items of those classes")
    import torch

    return classes[kept][scores[:, torch.as_tensor(kept, device=scores.device)].argmax(1).cpu().numpy()]
