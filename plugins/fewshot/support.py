"""The support sets of the few-shot protocol: which train items each draw uses.

A draw takes, for every class, `shots` train items without replacement, from a generator seeded by
SeedSequence([run seed, shots, draw]): the draw is a function of those three numbers and the train labels alone,
never of the features, the test split or the other draws. Items of a class are kept in the order drawn, which is
the order of the cross-validation folds (`logistic.cv_folds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.errors import HarnessError


@dataclass(frozen=True)
class Support:
    """One draw: the train rows of each class (in the order drawn) and their labels, flattened class by class."""

    shots: int
    draw: int
    per_class: list[np.ndarray]  # train rows of class c (classes in `classes` order), as drawn

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate(self.per_class)

    def labels(self, classes: np.ndarray) -> np.ndarray:
        return np.repeat(classes, [len(rows) for rows in self.per_class])


def draw_generator(seed: int, shots: int, draw: int) -> np.random.Generator:
    """The generator of one draw (numpy's PCG64 seeded by SeedSequence([seed, shots, draw]))."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(shots), int(draw)]))


def rows_by_class(train_labels: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
    """The train rows of each class, ascending."""
    return [np.flatnonzero(train_labels == c) for c in classes]


def check_class_sizes(sizes: Sequence[int], names: Sequence[str], shots: int, allow_smaller: bool) -> None:
    """A class with fewer train items than `shots` is an error naming it, unless smaller classes are allowed."""
    small = [(name, size) for name, size in zip(names, sizes) if size < shots]
    if small and not allow_smaller:
        listed = ", ".join(f"{name!r} ({size})" for name, size in small[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        raise HarnessError(f"fewshot: {shots} shots per class, but the train split has fewer items of class(es) "
                           f"{listed}{more}; drop that shot count (--eval-option fewshot.shots=[...]) or allow "
                           f"smaller classes (--eval-option fewshot.allow_smaller_classes=true)")


def draw_support(class_rows: Sequence[np.ndarray], shots: int, seed: int, draw: int) -> Support:
    """`shots` rows of each class (all of a smaller class's rows, in drawn order), from the draw's generator."""
    rng = draw_generator(seed, shots, draw)
    per_class = [rows[rng.permutation(len(rows))[:shots]] for rows in class_rows]
    return Support(shots, draw, per_class)
