"""The `fewshot/simpleshot-logreg-v1` evaluator: support sets drawn from train, two classifiers, test accuracy
per draw, mean and 95 % interval per shot count; every evaluation split scored with the same draws and fits
(`evaluate_splits`).

This module wires the parts together (`support`, `centroid`, `logistic`, `interval`, `splits`) and lays out the
record: metrics per shot count and per draw, the support ids as an artifact (`support_ids`), the per-item score of
the main classifier and shot count. The protocol: docs/protocols.md#fewshotsimpleshot-logreg-v1.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from harness.errors import HarnessError
from harness.metric_names import IDS, LABEL, NULL_REASONS, PER_SHOTS, SCORE
from harness.progress import Progress
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings, require_two_classes
from harness.plugins.linear_probe import c_grid, class_names

from . import logistic
from .centroid import cl2n, centroid_scores, class_means
from .interval import DESCRIPTION as INTERVAL_DESCRIPTION
from .interval import summarise
from .options import CLASSIFIERS, DEFAULTS, FewShotOptions, metric_name, parse_options
from .splits import Target, predict, target
from .support import Support, check_class_sizes, draw_support, rows_by_class

if TYPE_CHECKING:
    import torch

PROTOCOL = "fewshot/simpleshot-logreg-v1"
#: Below this many elements (support rows x dimension x classes), the fits run on one CPU thread (see `threads_for`).
SMALL_PROBLEM_ELEMENTS = 1 << 24
#: The artifact holding every draw's support item ids, one after another; each draw's `support` is [start, stop).
SUPPORT_IDS = "support_ids"


@dataclass(frozen=True)
class FittedDraw:
    """Both classifiers fitted on one support set: the CL2N centre, the class means, the logistic model."""

    classes: np.ndarray  # the train classes with items, the rows of `means`
    mean: "torch.Tensor"  # the support mean every row is centred by
    means: "torch.Tensor"  # (K, D) class means of the CL2N support rows
    choice: logistic.CChoice
    model: logistic.LogisticModel


class FewShot(Evaluator):
    """Few-shot accuracy `fewshot/simpleshot-logreg-v1`: nearest centroid (CL2N) and logistic regression."""

    name = "fewshot"
    protocol = PROTOCOL
    needs = ("train", "test")
    requires_labels = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.parsed = parse_options(self.options)  # a bad option fails when the evaluator is built, before any work

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, list) else value for key, value in DEFAULTS.items()}

    def check_dataset(self, info: Mapping[str, Any]) -> None:
        """A train split too small for the largest shot count in every class: refused before any extraction.
        (Fewer than two classes fail the cell in `evaluate`, as with every evaluator: `require_two_classes`.)"""
        o = self.parsed
        names = list(info.get("class_names") or [])
        n_train = (info.get("split_sizes") or {}).get("train")
        if names and n_train is not None and not o.allow_smaller_classes and n_train < len(names) * max(o.shots):
            fitting = [s for s in o.shots if s * len(names) <= n_train]
            raise HarnessError(f"fewshot: {max(o.shots)} shots per class need {len(names) * max(o.shots)} train "
                               f"items for {len(names)} classes, but the train split has {n_train}; use "
                               + (f"--eval-option fewshot.shots={fitting} (and main_shots among them) or "
                                  if fitting else "")
                               + "--eval-option fewshot.allow_smaller_classes=true")

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        return self.evaluate_splits(train, {"test": test}, seed=seed, settings=settings)["test"]

    def evaluate_splits(self, train: Embeddings | None, splits: Mapping[str, Embeddings], *, seed: int,
                        settings: ExecutionSettings) -> dict[str, EvaluationResult]:
        """Each (shot count, draw)'s support drawn and both classifiers fitted once, on every train class, then
        every split scored with them; a split holding a subset of the classes (`meta["split_classes"]`) is scored
        over those classes' means and logits only (`splits.predict`). Every split's record has the same draws."""
        import torch

        if train is None:
            raise HarnessError("fewshot needs the train split")
        require_two_classes(train, "fewshot", "train")
        o = self.parsed
        train_labels = np.asarray(train.labels).astype(np.int64)
        targets = [target(name, split, train.features.shape[1]) for name, split in splits.items()]
        num_classes = max(train.num_classes, int(train_labels.max()) + 1)
        names = class_names(targets[0].split, train, num_classes)
        sizes = [int(n) for n in np.bincount(train_labels[train_labels >= 0], minlength=num_classes)]
        for shots in o.shots:
            check_class_sizes(sizes, names, shots, o.allow_smaller_classes)
        # With allow_smaller_classes, a class without any train item has no centroid and no logit: its test items
        # count as wrong. Every other class takes part with min(shots, its size) items.
        classes = np.flatnonzero(np.asarray(sizes) > 0)
        class_rows = rows_by_class(train_labels, classes)
        largest = len(classes) * max(o.shots) * train.features.shape[1] * len(classes)
        with torch.no_grad(), threads_for(settings.device, largest):
            return self._evaluate(train, targets, classes, class_rows, names, sizes, seed, settings)

    def _evaluate(self, train: Embeddings, targets: list[Target], classes: np.ndarray,
                  class_rows: list[np.ndarray], names: list[str], sizes: list[int], seed: int,
                  settings: ExecutionSettings) -> dict[str, EvaluationResult]:
        import torch

        o = self.parsed
        started = time.monotonic()
        grid = c_grid(o.log10_c_min, o.log10_c_max, o.num_c)
        budget = settings.memory_budget_bytes()
        block_rows = rows_per_test_block(budget, train.features.shape[1], len(classes))
        support_ids: list[np.ndarray] = []
        per_shots: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
        main_correct: dict[str, list[np.ndarray]] = {t.name: [] for t in targets}
        with Progress(len(o.shots) * o.draws, f"fewshot: {len(o.shots)} shot counts x {o.draws} draws",
                      unit="draw", enabled=settings.progress, every_s=10.0) as shown:
            for shots in o.shots:
                draws: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
                for d in range(o.draws):
                    support = draw_support(class_rows, shots, seed, d)
                    start = sum(len(ids) for ids in support_ids)
                    support_ids.append(np.asarray(train.ids)[support.rows].astype(str))
                    fitted = self._fit(train, classes, support, grid, settings.device)
                    for t in targets:
                        entry, correct = self._score(fitted, t, block_rows, settings.device)
                        draws[t.name].append({"draw": d, "support": [start, start + len(support.rows)], **entry})
                        if shots == o.main_shots:
                            main_correct[t.name].append(correct[o.main_classifier])
                    entry = draws[targets[0].name][-1]
                    shown.update(1, f"{shots}-shot draw {d}: {entry['logistic_top1']:.3f} logistic, "
                                    f"{entry['centroid_top1']:.3f} centroid")
                for t in targets:
                    per_shots[t.name][str(shots)] = self._shot_summary(draws[t.name], shots, sizes, names)
        runtime = {"seconds": time.monotonic() - started, "test_block_rows": block_rows,
                   "memory_budget_bytes": budget, "torch_threads": torch.get_num_threads()}
        artifacts = {SUPPORT_IDS: np.concatenate(support_ids)}
        return {t.name: self._result(t, per_shots[t.name], main_correct[t.name], classes, grid, runtime, artifacts)
                for t in targets}

    def _result(self, t: Target, per_shots: dict[str, Any], main_correct: list[np.ndarray], classes: np.ndarray,
                grid: np.ndarray, runtime: dict[str, Any], artifacts: dict[str, np.ndarray]) -> EvaluationResult:
        """One split's record: the metrics per shot count over the shared draws, its per-item main score."""
        o = self.parsed
        metrics: dict[str, Any] = {}
        for shots, summary in per_shots.items():
            for classifier in CLASSIFIERS:
                metrics[metric_name(classifier, int(shots))] = summary[classifier]["mean"]
        metrics.update(self._summary(o, per_shots, classes, len(t.known), grid))
        if t.subset is not None:
            metrics["classes_scored"] = int(len(t.subset))  # as the linear probe; the record lists their names
        metrics["runtime"] = dict(runtime)
        score = np.mean(np.stack(main_correct), axis=0)  # per test item; its mean is the main score
        return EvaluationResult(
            metrics=metrics, main_score=metrics[o.main_metric], main_metric=o.main_metric,
            predictions={IDS: np.asarray(t.split.ids)[t.known], LABEL: t.labels, SCORE: score},
            artifacts=dict(artifacts))

    def _fit(self, train: Embeddings, classes: np.ndarray, support: Support, grid: np.ndarray, device: str
             ) -> FittedDraw:
        """Both classifiers fitted on one support set (every class of it): what scores every split."""
        import torch

        o = self.parsed
        counts = [len(rows) for rows in support.per_class]
        y = support.labels(classes)
        raw = torch.as_tensor(np.asarray(train.features[support.rows], dtype=np.float64), device=device)
        mean = raw.mean(0)
        x = cl2n(raw, mean)
        choice = logistic.choose_c(x.cpu().numpy(), y, counts, grid, o.one_shot_c, device=device,
                                   max_iter=o.max_iter, tol=o.tolerance)
        model = logistic.fit(x.cpu().numpy(), y, choice.c, device=device, max_iter=o.max_iter, tol=o.tolerance)
        return FittedDraw(classes, mean, class_means(x, counts), choice, model)

    def _score(self, fitted: FittedDraw, t: Target, block_rows: int, device: str
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """One draw's classifiers scored on a split's labelled items, over its classes when a subset."""
        import torch

        predicted: dict[str, list[np.ndarray]] = {"centroid": [], "logistic": []}
        for start in range(0, len(t.known), block_rows):
            rows = t.known[start:start + block_rows]
            block = cl2n(torch.as_tensor(np.asarray(t.split.features[rows], dtype=np.float64), device=device),
                         fitted.mean)
            predicted["centroid"].append(predict(centroid_scores(block, fitted.means), fitted.classes, t.subset))
            predicted["logistic"].append(predict(fitted.model.scores(block), fitted.model.classes, t.subset))
        correct = {name: np.concatenate(parts) == t.labels for name, parts in predicted.items()}
        choice, model = fitted.choice, fitted.model
        entry = {"centroid_top1": float(correct["centroid"].mean()), "logistic_top1": float(correct["logistic"].mean()),
                 "C": choice.c, "C_choice": choice.how, "cv_folds": choice.folds, "cv_correct": choice.cv_correct,
                 "cv_items": choice.cv_items, "logistic_iterations": model.iterations,
                 "logistic_converged": model.converged}
        return entry, {name: hit.astype(np.float64) for name, hit in correct.items()}

    def _shot_summary(self, draws: list[dict[str, Any]], shots: int, sizes: list[int], names: list[str]
                      ) -> dict[str, Any]:
        summary: dict[str, Any] = {c: summarise([draw[f"{c}_top1"] for draw in draws]) for c in CLASSIFIERS}
        smaller = {name: size for name, size in zip(names, sizes) if size < shots}
        if smaller:
            summary["smaller_classes"] = smaller  # allowed by the option: these classes had all their items
        summary["draws"] = draws
        return summary

    def _summary(self, o: FewShotOptions, per_shots: dict[str, Any], classes: np.ndarray, n_test: int,
                 grid: np.ndarray) -> dict[str, Any]:
        reasons = {}
        if o.draws < 2:
            for shots in o.shots:
                for classifier in CLASSIFIERS:
                    reasons[f"per_shots.{shots}.{classifier}.ci95"] = "one draw: no spread, no interval"
        summary: dict[str, Any] = {
            "shots": list(o.shots), "draws": o.draws, "classes_in_support": int(len(classes)),
            "test_size": int(n_test), PER_SHOTS: per_shots, "interval": INTERVAL_DESCRIPTION,
            "support_ids": f"artifact {SUPPORT_IDS!r}: every draw's support item ids, shot counts ascending, draws in "
                           "order; each draw's `support` is its [start, stop) in that array",
            "C_grid": [float(c) for c in grid], "one_shot_C": o.one_shot_c,
            "max_iter": o.max_iter, "tolerance": o.tolerance, "dtype": logistic.DTYPE,
        }
        if reasons:
            summary[NULL_REASONS] = reasons
        return summary


@contextmanager
def threads_for(device: str, elements: int) -> Iterator[None]:
    """One torch thread on the CPU for small support sets, restored afterwards. Their matrices are tiny and L-BFGS
    makes thousands of small calls, where the thread pool's hand-offs cost more than they save: on this project's
    busy 2-core machine a 10-shot fit ran 10x slower with two threads than with one. An execution setting, like the
    device: only the order of floating-point sums can differ."""
    import torch

    if not str(device).startswith("cpu") or elements > SMALL_PROBLEM_ELEMENTS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rows_per_test_block(budget: int, dim: int, num_classes: int) -> int:
    """Test rows scored at a time: float64 raw, centred and normalised rows, and two score matrices, in budget."""
    per_row = 8 * (3 * dim + 2 * max(num_classes, 1))
    return int(max(1, min(1 << 20, budget // 2 // per_row)))


def support_sets(record: Mapping[str, Any], support_ids: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """{(shots, draw): support item ids} of a few-shot record, given its `support_ids` artifact array."""
    return {(int(shots), draw["draw"]): support_ids[draw["support"][0]:draw["support"][1]]
            for shots, summary in record["metrics"][PER_SHOTS].items() for draw in summary["draws"]}
