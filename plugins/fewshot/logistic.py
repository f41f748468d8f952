"""The few-shot logistic regression: the linear probe's solver on the CL2N support features, C chosen inside the
support.

Two or more shots: C is the grid point with the most correct held-out predictions over k-fold cross-validation
within the support (fold f holds out each class's f-th drawn item), ties towards the smaller C. Fits along the
grid are warm-started from the next smaller C, as the linear probe's search does (`CPath`). One shot (or any
draw where some fold would leave fewer than two classes to fit): the protocol's fixed C. Nothing outside the
support set, and nothing of the test split, takes part in the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from harness.plugins.linear_probe import (CentredFeatures, CPath, SoftmaxRegression, coarse_indices,
                                          fit_logistic_regression, select_c_index)

if TYPE_CHECKING:
    import torch

#: The solver's precision: support sets are small, and float64 keeps the logits' differences at small C.
DTYPE = "float64"


@dataclass(frozen=True)
class CChoice:
    """The C used for one draw, and how it was chosen."""

    c: float
    how: str  # "cross-validation" or "fixed"
    folds: int  # 0 when fixed
    cv_correct: list[int] | None  # correct held-out predictions per grid point, summed over the folds
    cv_items: int  # held-out predictions per grid point, summed over the folds


@dataclass(frozen=True)
class LogisticModel:
    """The refit on the whole support: coefficients (K, D) and intercepts (K,) on the CL2N features."""

    classes: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    iterations: int
    converged: bool

    def scores(self, test: "torch.Tensor") -> "torch.Tensor":
        import torch

        coef = torch.as_tensor(self.coef, dtype=test.dtype, device=test.device)
        return test @ coef.T + torch.as_tensor(self.intercept, dtype=test.dtype, device=test.device)


def cv_folds(counts: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) of each fold, as rows of the support (classes one after another, items in drawn
    order). Fold f holds out the f-th item of every class that has one; [] when some fold would leave fewer than
    two classes to fit (one shot, or classes too small), where the fixed C applies."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    counts_array = np.asarray(counts)
    folds = []
    for f in range(int(max(counts, default=0))):
        held = starts[counts_array > f] + f
        fit = np.setdiff1d(np.arange(int(sum(counts))), held)
        # classes left with an item to fit: those with more than one item, or whose only item is not held out
        if int(np.sum((counts_array - (counts_array > f)) > 0)) < 2:
            return []
        folds.append((fit, held))
    return folds if len(folds) >= 2 else []


def choose_c(x: np.ndarray, y: np.ndarray, counts: Sequence[int], grid: np.ndarray, fixed_c: float, *,
             device: str, max_iter: int, tol: float) -> CChoice:
    """C for one support set `x` (CL2N rows, class by class) with labels `y` and `counts` items per class."""
    import torch

    folds = cv_folds(counts)
    if not folds:
        return CChoice(float(fixed_c), "fixed", 0, None, 0)
    features = CentredFeatures.from_array(x, device=device, dtype=DTYPE)
    paths = [CPath(problem=SoftmaxRegression(features.subset(fit), y[fit]), x_val=features.subset(held),
                   y_val=torch.as_tensor(y[held], device=features.device), grid=grid,
                   coarse=coarse_indices(len(grid), 1), max_iter=max_iter, tol=tol)
             for fit, held in folds]
    # Every point is fitted ("full"), each warm-started from the point below it (stride 1: every point coarse).
    chosen, correct = select_c_index(lambda i: sum(path.correct_at(i) for path in paths), len(grid),
                                     strategy="full", stride=1, refine_margin=0)
    return CChoice(float(grid[chosen]), "cross-validation", len(folds), [correct[i] for i in range(len(grid))],
                   int(sum(len(held) for _, held in folds)))


def fit(x: np.ndarray, y: np.ndarray, c: float, *, device: str, max_iter: int, tol: float) -> LogisticModel:
    """The refit on the whole support at C: scikit-learn's `LogisticRegression(C=c)` objective (`solver`)."""
    coef, intercept, solution = fit_logistic_regression(x, y, c, device=device, dtype=DTYPE, max_iter=max_iter,
                                                        tol=tol)
    return LogisticModel(solution.classes, coef, intercept, solution.iterations, solution.converged)
