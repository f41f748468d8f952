"""Evaluation splits: the `test` split and any other split a dataset offers to score on (`test-sketch`, ...).

A dataset names them in `info()["evaluation_splits"]` (default `["test"]`); every evaluator that reads `test` is
scored on each of them, one record (and one leaderboard column) per split. Their labels are indices into the
dataset's `class_names` (train's classes). A split that holds only some of those classes says which in
`info()["split_classes"][split]` (class names); it is then scored over those classes only: the generic path
(`per_split`) hands the evaluator the train items of those classes, and fit-once evaluators (the linear probe)
restrict their scores to them.

The `test` split keeps the cell key, record path and column it had before evaluation splits existed: only the
other splits put their name in those.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from harness.errors import HarnessError
from harness.types import Embeddings, EvaluationResult

#: The split every labelled dataset is scored on; records of it carry no `split` key.
TEST = "test"
#: `Embeddings.meta` key of an evaluation split's classes: their indices into the dataset's class names, sorted;
#: absent when the split is scored over every class.
SPLIT_CLASSES = "split_classes"


def evaluation_splits(dataset_name: str, info: Mapping[str, Any]) -> list[str]:
    """The dataset's evaluation splits, `test` first; each must be one of its `splits`."""
    declared = list(info.get("evaluation_splits") or [TEST])
    splits = [TEST] + [s for s in declared if s != TEST] if TEST in declared else declared
    missing = [s for s in splits if s not in info.get("splits", [])]
    if missing:
        raise HarnessError(f"dataset {dataset_name!r} names evaluation split(s) {missing} that are not among its "
                           f"splits {list(info.get('splits', []))}; its info() must list every evaluation split "
                           f"under `splits`")
    if len(set(splits)) != len(splits):
        raise HarnessError(f"dataset {dataset_name!r} names an evaluation split twice: {declared}")
    return splits


def split_classes(dataset_name: str, info: Mapping[str, Any], split: str) -> list[int] | None:
    """The class indices (into `class_names`) the split is scored over, sorted; None when it holds them all.
    A class name the dataset's `class_names` lacks is an error naming it."""
    declared = (info.get("split_classes") or {}).get(split)
    if declared is None:
        return None
    names = list(info.get("class_names") or [])
    index = {name: i for i, name in enumerate(names)}
    unknown = [name for name in declared if name not in index]
    if unknown:
        raise HarnessError(f"dataset {dataset_name!r}: split {split!r} has class(es) {unknown} that train does not "
                           f"have (train's classes: {names[:10]}{' ...' if len(names) > 10 else ''}); a split can "
                           f"only hold classes of train")
    classes = sorted({index[name] for name in declared})
    return None if len(classes) == len(names) else classes


def check_evaluation_splits(dataset_name: str, info: Mapping[str, Any]) -> None:
    """Every evaluation split exists and names only train's classes: checked before anything is extracted."""
    for split in evaluation_splits(dataset_name, info):
        split_classes(dataset_name, info, split)


def with_split_classes(embeddings: Embeddings, classes: list[int] | None) -> Embeddings:
    """The split's embeddings, their meta naming the classes it is scored over (when a subset)."""
    if classes is None:
        return embeddings
    return dataclasses.replace(embeddings, meta={**embeddings.meta, SPLIT_CLASSES: list(classes)})


def classes_of(split: Embeddings) -> np.ndarray | None:
    """The class indices `split` is scored over (sorted), or None for every class. Its labelled items must belong
    to them."""
    classes = split.meta.get(SPLIT_CLASSES)
    if classes is None:
        return None
    classes = np.asarray(classes, dtype=np.int64)
    labels = np.asarray(split.labels)
    outside = np.setdiff1d(np.unique(labels[labels >= 0]), classes)
    if len(outside):
        raise HarnessError(f"split {split.meta.get('split', '?')!r} has items of class(es) {outside.tolist()} outside "
                           f"the classes it declares ({classes.tolist()})")
    return classes


def train_of_classes(train: Embeddings, classes: np.ndarray | None) -> Embeddings:
    """The train items of `classes` only (a copy of their rows), or `train` itself for every class (or when it
    already holds just those)."""
    if classes is None or train.meta.get(SPLIT_CLASSES) == classes.tolist():
        return train
    rows = np.flatnonzero(np.isin(np.asarray(train.labels), classes))
    return Embeddings(features=np.asarray(train.features[rows]), labels=np.asarray(train.labels)[rows],
                      ids=np.asarray(train.ids)[rows], meta={**train.meta, SPLIT_CLASSES: classes.tolist()})


def per_split(evaluate: Callable[[Embeddings | None, Embeddings], EvaluationResult], train: Embeddings | None,
              splits: Mapping[str, Embeddings]) -> dict[str, EvaluationResult]:
    """`evaluate(train, split)` for each split, `train` limited to the split's classes where it holds a subset:
    what `Evaluator.evaluate_splits` does unless an evaluator fits once for every split."""
    return {name: evaluate(train_for(train, split), split) for name, split in splits.items()}


def train_for(train: Embeddings | None, split: Embeddings) -> Embeddings | None:
    """`train` as an evaluator without a fit-once `evaluate_splits` sees it for `split`."""
    return None if train is None else train_of_classes(train, classes_of(split))

