"""The `linear/logreg-v1` evaluator: C chosen on a 10 % split of train, refit on all of train, scored on test
(and on each other evaluation split with the same fit: `evaluate_splits`).

This module wires the parts together (`c_search`, `solver`, `features`, `accuracy`) and says in the record what
was chosen and how it was computed; the protocol is in docs/protocols.md#linearlogreg-v1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from harness.errors import HarnessError
from harness.eval_splits import classes_of
from harness.metric_names import CONFIDENCE, IDS, LABEL, NULL_REASONS, PREDICTION, SCORE, TOP5
from harness.progress import Progress
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings, require_two_classes

from .accuracy import accuracy_metrics, class_names
from .calibration import calibration_metrics
from .c_search import SEARCH_STRATEGIES, CPath, c_grid, coarse_indices, select_c_index, validation_split
from .features import CentredFeatures, StreamedFeatures
from .solver import Solution, SoftmaxRegression, scores, streaming_plan

PROTOCOL = "linear/logreg-v1"
DTYPES = ("float32", "float64")


@contextmanager
def exact_matmul() -> Iterator[None]:
    """Full-precision float32 matrix products, without autograd: TF32 or bf16 (which an extractor may have
    switched on for the whole process with `set_float32_matmul_precision`) cannot reach the gradient tolerance.
    The precision is restored after."""
    import torch

    matmul_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_float32_matmul_precision(matmul_precision)


@dataclass(frozen=True)
class ProbeData:
    """The train embeddings of one evaluation, with the labels the probe fits on."""

    train: Embeddings
    train_labels: np.ndarray  # of the labelled train items only
    labelled: np.ndarray | None  # their rows in `train`; None when every item is labelled


@dataclass(frozen=True)
class Holding:
    """Where the features live during the fit: copied to the device whole, or streamed in chunks from the cache."""

    device: str
    dtype: str
    chunk_rows: int | None  # None: on the device whole

    def load(self, features: np.ndarray, *, rows: np.ndarray | None = None,
             shift: Any = None) -> CentredFeatures | StreamedFeatures:
        if self.chunk_rows is None:
            return CentredFeatures.from_array(features, device=self.device, dtype=self.dtype, rows=rows, shift=shift)
        return StreamedFeatures.from_array(features, device=self.device, dtype=self.dtype, rows=rows, shift=shift,
                                           chunk_rows=self.chunk_rows)


@dataclass
class FittedProbe:
    """The probe fitted once on train: what scores every evaluation split."""

    train: Embeddings
    train_labels: np.ndarray
    holding: Holding
    shift: Any  # the train mean the features are centred by (a tensor on the device)
    solution: Solution
    coef: np.ndarray  # (K, D) in raw-feature coordinates, rows in `solution.classes` order
    intercept: np.ndarray  # (K,)
    metrics: dict[str, Any]  # the chosen C, the search and the refit's convergence
    runtime: dict[str, Any]

    @property
    def classes(self) -> np.ndarray:
        return self.solution.classes


@dataclass
class CChoice:
    """The outcome of the C search on the split: the chosen grid index, every fitted index's count, and the
    chosen solution (the refit's starting point)."""

    chosen: int
    correct: dict[int, int]
    curve: list[dict[str, Any]]
    start: Solution
    fit_size: int
    val_size: int
    split_how: str


class LinearProbe(Evaluator):
    """Logistic-regression probe `linear/logreg-v1`: C chosen on a 10 % split of train, refit, test accuracy."""

    name = "linear"
    protocol = PROTOCOL
    needs = ("train", "test")
    requires_labels = True

    def __init__(self, *, streaming: bool | None = None, **options: Any) -> None:
        """`streaming=True/False` forces the features to be streamed from the cache or held on the device; by
        default the memory budget of the execution settings decides. Like the device, it changes neither the
        objective nor the solver, so it is not an option (not part of the cell key)."""
        super().__init__(**options)
        if streaming not in (None, True, False):
            raise HarnessError(f"linear probe streaming={streaming!r}: True, False or None (automatic)")
        self.streaming = streaming

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "log10_c_min": -6.0,
            "log10_c_max": 5.0,
            "num_c": 45,
            "val_fraction": 0.1,
            "max_iter": 1000,
            "tolerance": 1e-4,  # max |gradient| of mean CE + ||W||^2/(2Cn), as scikit-learn's `tol`
            "search": "coarse-to-fine",
            "coarse_stride": 4,
            "refine_margin": 0.01,  # fraction of the validation set (at least two items)
            "dtype": "float32",
        }

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        return self.evaluate_splits(train, {"test": test}, seed=seed, settings=settings)["test"]

    def evaluate_splits(self, train: Embeddings | None, splits: Mapping[str, Embeddings], *, seed: int,
                        settings: ExecutionSettings) -> dict[str, EvaluationResult]:
        """One fit on all of train (C search and refit), then every split scored with it; a split holding a
        subset of the classes (`meta["split_classes"]`) is scored over the logits of those classes only."""
        for name, split in splits.items():
            if not (np.asarray(split.labels) >= 0).any():
                raise HarnessError(f"the {name} split has no labels; the linear probe needs them")
        fitted = self.fit(train, seed=seed, settings=settings)
        with exact_matmul():
            return {name: self._score(fitted, split) for name, split in splits.items()}

    def _data(self, train: Embeddings | None) -> ProbeData:
        """Check the options and the train split; the labelled train rows."""
        o = self.options
        if train is None:
            raise HarnessError("the linear probe needs the train split")
        require_two_classes(train, "linear", "train")
        if o["dtype"] not in DTYPES:
            raise HarnessError(f"linear probe dtype must be one of {DTYPES}, not {o['dtype']!r}")
        if o["search"] not in SEARCH_STRATEGIES:
            raise HarnessError(f"linear probe search must be one of {SEARCH_STRATEGIES}, not {o['search']!r}")
        train_labels = np.asarray(train.labels).astype(np.int64)
        labelled: np.ndarray | None = np.flatnonzero(train_labels >= 0)
        if len(labelled) < len(train_labels):  # type: ignore[arg-type]
            train_labels = train_labels[labelled]
        else:
            labelled = None
        return ProbeData(train, train_labels, labelled)

    def fit(self, train: Embeddings | None, *, seed: int, settings: ExecutionSettings) -> FittedProbe:
        """C chosen on a seeded split of train, then the refit on all of it: what every split is scored with."""
        with exact_matmul():
            return self._fit(train, seed, settings)

    def _fit(self, train: Embeddings | None, seed: int, settings: ExecutionSettings) -> FittedProbe:
        o = self.options
        data = self._data(train)
        grid = c_grid(o["log10_c_min"], o["log10_c_max"], o["num_c"])
        budget = settings.memory_budget_bytes()
        plan = streaming_plan(len(data.train_labels), data.train.features.shape[1],
                              len(np.unique(data.train_labels)), o["dtype"], budget)
        streamed = (not plan["fits"]) if self.streaming is None else self.streaming
        holding = Holding(settings.device, o["dtype"], plan["chunk_rows"] if streamed else None)
        x_train = holding.load(data.train.features, rows=data.labelled)
        choice = self._choose_c(x_train, data.train_labels, grid, seed, settings.progress)

        refit_problem = SoftmaxRegression(x_train, data.train_labels)
        final = refit_problem.fit(float(grid[choice.chosen]), choice.start, max_iter=o["max_iter"],
                                  tol=o["tolerance"])
        final.data_term = None
        coef, intercept = refit_problem.raw_coefficients(final)
        # How it was computed (differs between machines, not the objective or the solver).
        runtime = {"streamed": bool(streamed), "chunk_rows": holding.chunk_rows, "memory_budget_bytes": budget,
                   "in_memory_bytes": plan["in_memory_bytes"], "streamed_bytes": plan["streamed_bytes"]}
        return FittedProbe(data.train, data.train_labels, holding, x_train.shift, final, coef, intercept,
                           self._fit_metrics(grid, choice, final), runtime)

    def _score(self, fitted: FittedProbe, test: Embeddings) -> EvaluationResult:
        """Accuracies and calibration of one split; a class subset split is scored over its classes' logits."""
        import torch

        test_labels = np.asarray(test.labels).astype(np.int64)
        x_test = fitted.holding.load(test.features, shift=fitted.shift)
        logits = scores(x_test, fitted.solution)
        del x_test
        classes = fitted.solution.classes
        subset = classes_of(test)
        if subset is not None:  # the argmax, top-5 and softmax over the split's classes alone
            kept = np.flatnonzero(np.isin(classes, subset))
            logits, classes = logits[:, torch.as_tensor(kept, device=logits.device)], classes[kept]
        top_k = min(5, logits.shape[1])
        ranked = torch.as_tensor(classes, device=logits.device)[logits.topk(top_k, dim=1).indices]
        ranked = ranked.cpu().numpy().astype(np.int64)

        prediction = ranked[:, 0]
        top5 = np.full((len(prediction), 5), -1, dtype=np.int64)
        top5[:, :top_k] = ranked
        num_classes = max(int(fitted.train_labels.max()), int(test_labels.max())) + 1
        num_classes = max(num_classes, len(test.meta.get("class_names") or []))
        metrics = accuracy_metrics(test_labels, prediction, top5, class_names(test, fitted.train, num_classes))
        calibration, confidence = calibration_metrics(logits, classes, test_labels, prediction)
        reasons = {**metrics.get(NULL_REASONS, {}), **calibration.pop(NULL_REASONS, {})}
        metrics.update(calibration)
        if reasons:
            metrics[NULL_REASONS] = reasons
        metrics.update(fitted.metrics)
        if subset is not None:
            metrics["classes_scored"] = int(len(classes))
        metrics["runtime"] = dict(fitted.runtime)
        # Per-item outputs of the items the accuracies count (the labelled ones), so that `score` averages to top1.
        known = test_labels >= 0
        return EvaluationResult(
            metrics=metrics, main_score=metrics["top1"], main_metric="top1",
            predictions={IDS: np.asarray(test.ids)[known], LABEL: test_labels[known],
                         PREDICTION: prediction[known], TOP5: top5[known], CONFIDENCE: confidence[known],
                         SCORE: (prediction[known] == test_labels[known]).astype(np.float64)})

    def _choose_c(self, x_train: CentredFeatures | StreamedFeatures, train_labels: np.ndarray, grid: np.ndarray,
                  seed: int, progress: bool = True) -> CChoice:
        """The C search on a seeded stratified split of train (`c_search`)."""
        import torch

        o = self.options
        fit_rows, val_rows, split_how = validation_split(train_labels, o["val_fraction"], seed)
        path = CPath(problem=SoftmaxRegression(x_train.subset(fit_rows), train_labels[fit_rows]),
                     x_val=x_train.subset(val_rows),
                     y_val=torch.as_tensor(train_labels[val_rows], device=x_train.device), grid=grid,
                     coarse=coarse_indices(len(grid), int(o["coarse_stride"])), max_iter=o["max_iter"],
                     tol=o["tolerance"])
        margin = max(2, int(math.floor(o["refine_margin"] * len(val_rows))))
        # The coarse grid first; the refinement around its best points adds to the count as it goes.
        expected = len(grid) if o["search"] == "full" else len(path.coarse)
        with Progress(expected, f"linear: C search ({len(fit_rows)} train, {len(val_rows)} validation items)",
                      unit="fit", enabled=progress, every_s=10.0) as shown:
            def fit_at(i: int) -> int:
                correct_here = path.correct_at(i)
                shown.update(1, f"C={grid[i]:.3g}: {correct_here / len(val_rows):.3f} on validation")
                return correct_here

            chosen, correct = select_c_index(fit_at, len(grid), strategy=o["search"],
                                             stride=int(o["coarse_stride"]), refine_margin=margin)
            shown.note = f"chose C={grid[chosen]:.3g} ({correct[chosen] / len(val_rows):.3f} on validation)"
        solutions = path.solutions
        curve = [{"C": float(grid[i]), "val_top1": correct[i] / len(val_rows),
                  "iterations": solutions[i].iterations, "converged": solutions[i].converged}
                 for i in sorted(correct)]
        start = solutions[chosen]
        start.data_term = None  # it holds the split's problem (its rows on the device)
        return CChoice(chosen, correct, curve, start, len(fit_rows), len(val_rows), split_how)

    def _fit_metrics(self, grid: np.ndarray, choice: CChoice, final: Solution) -> dict[str, Any]:
        """The chosen C, the search, and the refit's convergence, as the record reports them."""
        o = self.options
        return {
            "chosen_C": float(grid[choice.chosen]),
            "chosen_C_index": int(choice.chosen),
            "val_top1": choice.correct[choice.chosen] / choice.val_size,
            "val_accuracy_per_C": choice.curve,
            "val_size": int(choice.val_size),
            "fit_size": int(choice.fit_size),
            "val_split": choice.split_how,
            "Cs_fitted": len(choice.correct),
            "iterations": final.iterations,
            "function_evaluations": final.function_evaluations,
            "converged": final.converged,
            "final_grad_max": final.grad_max,
            "objective": final.objective,
            "objective_scaled": final.objective_scaled,
            "val_fraction": float(o["val_fraction"]),
            "max_iter": int(o["max_iter"]),
            "tolerance": float(o["tolerance"]),
            "tolerance_definition": "max |gradient| of mean cross-entropy + ||W||^2/(2 C n) w.r.t. (W, b), features "
                                    "centred by the train mean",
            "search": o["search"],
            "dtype": o["dtype"],
            "classes_in_model": int(len(final.classes)),
        }
