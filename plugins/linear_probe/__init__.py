"""The linear probe `linear/logreg-v1`: multinomial logistic regression on frozen features (DINOv2's recipe).

scikit-learn's `LogisticRegression(C=C)` objective, solved by full-batch L-BFGS in torch (`solver`); C from
10^linspace(-6, 5, 45), chosen on a seeded stratified 10 % split of train, ties towards the smaller C, by a
warm-started coarse-to-fine search (`c_search`); refit on all of train; test top-1 is the main score
(`evaluator`). Features larger than the memory budget are streamed from the cache (`features`). Every parameter
and every difference from DINOv2's logistic-regression eval: docs/protocols.md#linearlogreg-v1.
"""

from __future__ import annotations

from typing import Callable

from harness import hookimpl

from .accuracy import accuracy_metrics, class_names
from .c_search import (SEARCH_STRATEGIES, CPath, c_grid, coarse_indices, select_c_index, validation_split,
                       warm_start_index)
from .evaluator import DTYPES, PROTOCOL, FittedProbe, LinearProbe
from .features import MAX_BLOCK_ELEMENTS, CentredFeatures, StreamedFeatures
from .solver import HISTORY_SIZE, Solution, SoftmaxRegression, fit_logistic_regression, scores, streaming_plan

__all__ = [
    "DTYPES", "HISTORY_SIZE", "MAX_BLOCK_ELEMENTS", "PROTOCOL", "SEARCH_STRATEGIES", "CPath", "CentredFeatures",
    "FittedProbe", "LinearProbe", "SoftmaxRegression", "Solution", "StreamedFeatures", "accuracy_metrics", "c_grid",
    "class_names", "coarse_indices", "fit_logistic_regression", "register_evaluators", "scores", "select_c_index",
    "streaming_plan", "validation_split", "warm_start_index",
]


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("linear", LinearProbe,
             "Logistic-regression probe (linear/logreg-v1): C chosen on a 10% split, L-BFGS in torch")
