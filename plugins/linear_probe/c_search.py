"""The choice of C: the protocol's grid, the stratified validation split, and the warm-started search over C.

C is the grid point with the most correct validation predictions, ties towards the smaller C. Every fit starts
from the solution at the coarse point just below it (`warm_start_index`), so the coarse-to-fine search and the
full sweep compute bit-identical solutions where they meet; the rule in full: docs/protocols.md#linearlogreg-v1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from harness.errors import HarnessError

from .solver import Solution, SoftmaxRegression, scores

if TYPE_CHECKING:  # torch is imported where it is used, so `import harness.plugins.linear_probe` stays cheap
    import torch

SEARCH_STRATEGIES = ("coarse-to-fine", "full")


def c_grid(log10_c_min: float = -6.0, log10_c_max: float = 5.0, num_c: int = 45) -> np.ndarray:
    """The C values of the protocol, ascending."""
    return 10.0 ** np.linspace(log10_c_min, log10_c_max, num_c)



def coarse_indices(num_c: int, stride: int) -> list[int]:
    """The coarse grid indices: every `stride`-th point, always including both ends."""
    stride = max(1, int(stride))
    coarse = list(range(0, num_c, stride))
    if coarse[-1] != num_c - 1:
        coarse.append(num_c - 1)
    return coarse


def warm_start_index(i: int, coarse: Sequence[int]) -> int | None:
    """The grid point whose solution starts the fit at point i: the coarse point just below it.

    Coarse points chain from one to the next, and every other point starts from the coarse point below it, in both
    the full sweep and the coarse-to-fine search. So the two searches compute bit-identical solutions (and
    validation scores) at every point they share, and can only differ in which points they look at.
    """
    below = [j for j in coarse if j < i]
    return below[-1] if below else None


def select_c_index(evaluate: Callable[[int], int], num_c: int, *, strategy: str, stride: int,
                   refine_margin: int) -> tuple[int, dict[int, int]]:
    """Pick the grid index with the most correct validation predictions, ties towards the smaller C.

    `evaluate(i)` fits grid point i (starting from the solution at `warm_start_index(i)`, which has been fitted
    before) and returns its number of correct validation predictions. `refine_margin` is in correct predictions:
    coarse points within it of the best coarse point get their neighbours (up to stride - 1 steps either side)
    fitted too. Returns (chosen index, {index: correct} for every index fitted).
    """
    if strategy not in SEARCH_STRATEGIES:
        raise HarnessError(f"unknown C search {strategy!r}; use one of {SEARCH_STRATEGIES}")
    coarse = coarse_indices(num_c, stride)
    correct: dict[int, int] = {}
    if strategy == "full":
        for i in range(num_c):
            correct[i] = evaluate(i)
    else:
        for i in coarse:
            correct[i] = evaluate(i)
        best = max(correct.values())
        centres = [i for i in coarse if correct[i] >= best - refine_margin]
        refine = sorted({j for i in centres for j in range(i - stride + 1, i + stride)
                         if 0 <= j < num_c and j not in correct})
        for j in refine:
            correct[j] = evaluate(j)
    best = max(correct.values())
    chosen = min(i for i, value in correct.items() if value == best)
    return chosen, correct



def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(fit rows, validation rows, how): a stratified split; classes with one item stay in the fit part."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    singletons = np.isin(labels, classes[counts < 2])
    rest = np.flatnonzero(~singletons)
    how = "stratified"
    if len(rest) < 2:
        raise HarnessError(f"train has {n} labelled items; the linear probe needs a validation split to choose C")
    try:
        fit_rel, val_rel = next(StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
                                .split(np.zeros(len(rest)), labels[rest]))
    except ValueError as error:  # e.g. fewer validation items than classes: fall back, and say so in the record
        fit_rel, val_rel = next(ShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
                                .split(np.zeros(len(rest))))
        how = f"random (stratified split impossible: {error})"
    fit_rows = np.sort(np.concatenate([rest[fit_rel], np.flatnonzero(singletons)]))
    return fit_rows, np.sort(rest[val_rel]), how


@dataclass
class CPath:
    """Fits along the C grid on the fit split, each warm-started as `warm_start_index` says, and their validation
    counts: `correct_at(i)` is the `evaluate` callback of `select_c_index`."""

    problem: SoftmaxRegression  # the fit split
    x_val: Any  # CentredFeatures | StreamedFeatures of the validation rows
    y_val: "torch.Tensor"
    grid: np.ndarray
    coarse: Sequence[int]
    max_iter: int
    tol: float
    solutions: dict[int, Solution] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def correct_at(self, i: int) -> int:
        """Fit grid point i and count its correct validation predictions."""
        import torch

        start = warm_start_index(i, self.coarse)
        init = None if start is None else self.solutions[start]
        solution = self.problem.fit(float(self.grid[i]), init, max_iter=self.max_iter, tol=self.tol)
        self.solutions[i] = solution
        if init is not None and solution.theta is init.theta:  # unchanged: same predictions
            self.counts[i] = self.counts[start]  # type: ignore[index]
        else:
            classes = torch.as_tensor(solution.classes, device=self.y_val.device)
            self.counts[i] = int((classes[scores(self.x_val, solution).argmax(1)] == self.y_val).sum())
        return self.counts[i]
