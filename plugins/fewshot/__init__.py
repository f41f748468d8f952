"""Few-shot `fewshot/simpleshot-logreg-v1`: accuracy from k labelled train items per class, k in 1, 2, 5, 10.

Each shot count is drawn several times (5) from train, seeded by (run seed, shots, draw). On each support set two
classifiers run on SimpleShot's CL2N features (centred by the support mean, L2-normalised): nearest centroid by
cosine, and logistic regression with the linear probe's solver, C chosen by cross-validation inside the support
(a fixed C at one shot). The record keeps every draw's accuracies and C, the support ids (artifact
`support_ids`), and per shot count the mean and a Student-t 95 % interval over draws; main score: the logistic
5-shot mean. Every evaluation split is scored with the same draws and fits (a class subset over its classes'
means and logits). Modules: `support` (the draws), `centroid`, `logistic`, `interval`, `options`, `splits`,
`evaluator`. Every parameter: docs/protocols.md#fewshotsimpleshot-logreg-v1.
"""

from __future__ import annotations

from typing import Callable

from harness import hookimpl

from .evaluator import PROTOCOL, SUPPORT_IDS, FewShot, support_sets
from .options import CLASSIFIERS, DEFAULTS, metric_name
from .support import draw_generator, draw_support

__all__ = ["CLASSIFIERS", "DEFAULTS", "PROTOCOL", "SUPPORT_IDS", "FewShot", "draw_generator", "draw_support",
           "metric_name", "register_evaluators", "support_sets"]


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("fewshot", FewShot, "Few-shot (fewshot/simpleshot-logreg-v1): 1/2/5/10 shots x 5 draws, CL2N nearest "
                                 "centroid and logistic regression; main score logistic 5-shot mean")
