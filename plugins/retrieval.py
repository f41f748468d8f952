"""Retrieval `retrieval/map-at-r-v1`: each test item queries the train split (the gallery) by cosine similarity.

Reported: mAP@R (Musgrave et al., 2020, "A Metric Learning Reality Check": R is the number of gallery items of the
query's class, AP@R = (1/R) * sum over the first R ranks of precision@i where rank i is relevant) and recall@K for
K in 1, 5, 10 (the fraction of queries with at least one gallery item of their class among the K nearest). The
neighbours come from the kNN's streamed kernel (`harness.plugins.knn.nearest_neighbours`), with k the largest
gallery class, so memory is bounded by the execution settings' budget as for the kNN. Every parameter, the tie rule
and the treatment of queries whose class has no gallery item: docs/protocols.md#retrievalmap-at-r-v1.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.metric_names import IDS, LABEL, NULL_REASONS, SCORE
from harness.plugins.knn import blocks_for, nearest_neighbours
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings, require_two_classes

MAIN_METRIC = "map_at_r"


def average_precision_at_r(relevant: np.ndarray, r: np.ndarray) -> np.ndarray:
    """AP@R of each query from the relevance of its ranked gallery items (Q x k bool, k >= max R) and its R (>= 1).

    Precision at rank i counts the relevant items among the first i; only ranks i <= R enter, each relevant one
    adding its precision; the sum is divided by R (not by the number of relevant items retrieved).
    """
    ranks = np.arange(1, relevant.shape[1] + 1)
    hits = relevant & (ranks[None, :] <= r[:, None])
    return (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1) / r


def recall_keys(ks: list[int]) -> list[str]:
    return [f"recall_at_{k}" for k in ks]


class Retrieval(Evaluator):
    name = "retrieval"
    protocol = "retrieval/map-at-r-v1"
    needs = ("train", "test")

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"recall_ks": [1, 5, 10]}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.recall_ks = self._recall_ks()  # checked when the evaluator is built, before anything is extracted

    def _recall_ks(self) -> list[int]:
        ks = self.options["recall_ks"]
        if (not isinstance(ks, (list, tuple)) or not ks
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks)):
            raise HarnessError(f"retrieval option recall_ks={ks!r}: give a list of positive integers, e.g. a suite's "
                               f"[[evaluators]] options = {{ recall_ks = [1, 5, 10] }} (--eval-option takes no lists)")
        return sorted(set(ks))

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        """Queries whose class has no gallery item (and unlabelled ones) are left out and counted; the per-item
        `score` (AP@R) covers the other queries only, so its mean is the main score."""
        assert train is not None
        recall_ks = self.recall_ks
        require_two_classes(train, "retrieval", "train")
        if train.features.shape[1] != test.features.shape[1]:
            raise HarnessError(f"train and test embeddings differ in dimension: {train.features.shape[1]} vs "
                               f"{test.features.shape[1]}")
        gallery_labels = np.asarray(train.labels, dtype=np.int64)
        query_labels = np.asarray(test.labels, dtype=np.int64)
        # R per query: gallery items of its class (unlabelled gallery items, -1, are never relevant).
        class_sizes = np.bincount(gallery_labels[gallery_labels >= 0],
                                  minlength=max(int(gallery_labels.max()), int(query_labels.max())) + 1)
        r = np.where(query_labels >= 0, class_sizes[np.maximum(query_labels, 0)], 0)
        included = r > 0
        names = list(test.meta.get("class_names") or train.meta.get("class_names") or [])
        if not included.any():
            raise HarnessError(f"retrieval: none of the {len(query_labels)} test items has a class with an item in "
                               f"the train split (the gallery), so there is nothing to retrieve; check that train "
                               f"and test name the same classes")
        n_train, dim = train.features.shape
        k = min(n_train, max(int(r.max()), max(recall_ks)))
        budget = settings.memory_budget_bytes()
        blocks = blocks_for(n_train, test.features.shape[0], dim, k, settings.device, memory_budget_bytes=budget)
        # Every test item is a query of the kernel (no copy of the queries); excluded ones are dropped after.
        _, neighbours = nearest_neighbours(train.features, test.features, k=k, device=settings.device, blocks=blocks)
        neighbours = neighbours.numpy()
        ap = np.zeros(len(query_labels))
        found = {K: np.zeros(len(query_labels), dtype=bool) for K in recall_ks if K <= n_train}
        # In chunks of the kernel's query block: the (chunk x k) relevance and its cumulative sums stay within the
        # memory the kernel's plan counts for its merges.
        for start in range(0, len(query_labels), blocks.query_block):
            rows = slice(start, start + blocks.query_block)
            relevant = gallery_labels[neighbours[rows]] == query_labels[rows, None]
            ap[rows] = average_precision_at_r(relevant, np.maximum(r[rows], 1))
            for K, hit in found.items():
                hit[rows] = relevant[:, :K].any(axis=1)
        excluded_labels = query_labels[~included]
        metrics: dict[str, Any] = {
            MAIN_METRIC: float(ap[included].mean()),
            "n_queries": int(included.sum()), "n_excluded_queries": int((~included).sum()),
            "excluded_classes": {(names[c] if 0 <= c < len(names) else str(c)): int((excluded_labels == c).sum())
                                 for c in np.unique(excluded_labels[excluded_labels >= 0]).tolist()},
            "n_unlabelled_queries": int((query_labels < 0).sum()),
            "n_gallery": int(n_train), "max_r": int(r.max()), "neighbours": int(k), NULL_REASONS: {}}
        for K, key in zip(recall_ks, recall_keys(recall_ks)):
            if K in found:
                metrics[key] = float(found[K][included].mean())
            else:
                metrics[key] = None
                metrics[NULL_REASONS][key] = f"K={K} exceeds the {n_train} gallery items"
        # How it was computed (differs between machines, never the numbers above).
        metrics["runtime"] = {**asdict(blocks), "memory_budget_bytes": budget,
                              "working_bytes": blocks.working_bytes(test.features.shape[0], dim, k)}
        predictions = {IDS: np.asarray(test.ids)[included], LABEL: query_labels[included], SCORE: ap[included]}
        return EvaluationResult(metrics=metrics, main_score=metrics[MAIN_METRIC], main_metric=MAIN_METRIC,
                                predictions=predictions)


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("retrieval", Retrieval, "Retrieval (retrieval/map-at-r-v1): test queries the train gallery by cosine; "
                                     "mAP@R and recall@1/5/10; main score mAP@R")
