"""The shapes that flow between plugins and the core.

Encoders turn raw items into vectors, datasets hand out raw items with labels, evaluators turn arrays into
numbers. The core only moves values of these types around; it never looks inside an image or a model.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# The kinds whose encoders are baselines unless a suite says otherwise: defined with the other names records carry.
from harness.metric_names import BASELINE_PRETRAINING  # noqa: F401

#: Pretraining kinds an encoder can declare; `random` and `none` mark the "no pretraining" baselines.
PRETRAINING_KINDS = ("supervised", "ssl", "image-text", "random", "none", "unknown")


class Encoder(abc.ABC):
    """A frozen model that maps raw items to fixed-size vectors.

    Construction must be cheap: listing encoders or checking the cache must not load weights. `load()` is called
    once, before the first `encode`, with the device to run on.
    """

    #: The name the user typed (`timm:resnet50`, `pixels`, ...); it names the encoder in records and tables.
    name: str

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the vectors: weights hash or revision, pooling, transform, library versions.

        It is part of the embedding cache key, so it must be JSON-serialisable and stable across runs.
        """

    @abc.abstractmethod
    def info(self) -> dict[str, Any]:
        """Provenance for the record: architecture, weights source and hash, pretraining kind, pooling, ...

        Keys `architecture`, `weights`, `pretraining` (one of PRETRAINING_KINDS) are expected; `parameters` and
        `embedding_dim` are filled in by the extractor once the model has run.
        """

    @abc.abstractmethod
    def load(self, device: str) -> None:
        """Build the model (load weights) and move it to `device`."""

    @property
    @abc.abstractmethod
    def transform(self) -> Callable[[Any], Any]:
        """Raw item -> tensor, from the model's own preprocessing config. Runs in DataLoader workers."""

    @abc.abstractmethod
    def encode(self, batch: Any) -> Any:
        """A batch of transformed items (B, ...) on the device -> a (B, D) tensor."""

    def parameter_count(self) -> int | None:
        """Number of parameters once loaded, or None where the idea does not apply."""
        return None

    #: True for convolutional networks, which run faster in channels_last memory format on CUDA.
    channels_last: bool = False


class DatasetSplit(abc.ABC):
    """One split of a dataset: an indexable sequence of (raw item, label) with stable item ids."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(raw item, label); label is -1 for unlabelled data. Raises BadItemError for an unreadable item."""

    @abc.abstractmethod
    def item_id(self, index: int) -> str:
        """A stable id for the item (a relative file path, or `<split>/<index>`)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash of the item ids and their content markers (file size and mtime, or content hash)."""


class Dataset(abc.ABC):
    """A named collection of splits.

    Construction reads nothing (listing datasets builds them). `info()` may read the dataset's *index*: list its
    folders, read a manifest or a metadata file, so as to know the class names and split sizes; it must not open
    or decode items, and should keep what it read for `split()`. Items are read only through a split's
    `__getitem__`.
    """

    name: str
    #: Optional: the one folder holding the dataset's files, when there is one (`harness datasets --path NAME`
    #: and `harness.dataset_path(NAME)` print it). Datasets spread over several places leave it None.
    root: Any = None

    @abc.abstractmethod
    def info(self) -> dict[str, Any]:
        """Provenance: `source`, `revision`, `class_names` (empty when unlabelled), `splits` (names) and
        `split_sizes` ({split: number of items}) when known. May read the index (folder listing, manifest), not
        the items.

        Optional, for splits scored besides `test` (`harness.eval_splits`): `evaluation_splits` (names, default
        `["test"]`; each one also in `splits`), whose labels are indices into `class_names` (train's classes),
        and `split_classes` ({split: [class names]}) for a split that holds only some of those classes: it is
        scored over those classes only. A name that `class_names` lacks is an error naming it."""

    @abc.abstractmethod
    def split(self, name: str) -> DatasetSplit:
        """The split called `name`; raises HarnessError naming the available ones when it does not exist."""

    @property
    def labelled(self) -> bool:
        return bool(self.info().get("class_names"))


@dataclass(frozen=True)
class Embeddings:
    """The vectors of one (encoder, dataset, split), as read from the embedding cache.

    `features` is usually a read-only memory map: evaluators must not write to it and should avoid copying it
    whole when the set is large.
    """

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64, -1 where unlabelled
    ids: np.ndarray  # (N,) str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(f"embeddings disagree on N: features {self.features.shape}, "
                             f"labels {self.labels.shape}, ids {self.ids.shape}")

    @property
    def num_classes(self) -> int:
        names = self.meta.get("class_names") or []
        return len(names) if names else int(self.labels.max()) + 1


@dataclass
class EvaluationResult:
    """What an evaluator returns: JSON-able metrics, its main score and optional per-item predictions.

    A metric that cannot be computed is None, with the reason under `metrics["null_reasons"][name]`.

    `predictions` (the per-item outputs) maps column names to arrays of length N(test); they are saved beside the
    record (`seed-<n>.predictions.npz`). Columns with a meaning to the harness (names in `harness.metric_names`):

    - `ids` (required): the test items' ids, so that records of two encoders pair item by item.
    - `score` (optional, any evaluator): one finite float per item whose mean is `main_score` (per-item
      correctness, per-query average precision, ...). `harness compare` bootstraps it, paired over the ids, for
      the main metric; a record whose `score` does not average to its main score is an error naming both values.
    - `label`, `prediction` and `top5` (N x 5): the special case of a top-1 classifier, the true and predicted
      classes for the main metric. `compare` reads them only for the top-5 metric named like the main one
      (`top5_k20` beside `top1_k20`) and for older records without `score`.

    Other columns are the evaluator's own; the harness saves them and reads nothing into their names.
    """

    metrics: dict[str, Any]
    main_score: float | None
    main_metric: str
    predictions: dict[str, np.ndarray] | None = None
    artifacts: dict[str, np.ndarray] | None = None  # other arrays for plots (e.g. a 2-D layout)


@dataclass(frozen=True)
class ExecutionSettings:
    """How an evaluation runs, never what it measures: the same for built-in and third-party evaluators.

    None of these is part of a cell key or an options hash, so records made on another device or under another
    memory budget are the same measurement. An evaluator sizes its work from `memory_budget_bytes()`; it reports
    what it used under `metrics["runtime"]`, not as an option.
    """

    device: str = "cpu"  # a torch device string: "cpu", "cuda", "cuda:1"
    memory_budget_mb: float | None = None  # None: the device's default (`harness.memory.default_budget_bytes`)
    workers: int | None = None  # CPU worker processes or threads an evaluator may start (None: its own choice)
    progress: bool = True  # show the progress of long stages (`harness.progress.Progress`); --no-progress: False

    def memory_budget_bytes(self) -> int:
        """The working-memory budget in bytes: `memory_budget_mb`, else the device's default."""
        from harness.memory import budget_bytes

        return budget_bytes(self.memory_budget_mb, self.device)


class Evaluator(abc.ABC):
    """Arrays in, numbers out. Evaluators never see models or images, so any encoder's cache feeds them."""

    name: str
    #: A versioned protocol id (`knn/dino-v1`). Changing what the numbers mean requires a new id.
    protocol: str
    #: The dataset splits this evaluator reads.
    needs: Sequence[str] = ("train", "test")
    #: Whether the evaluator needs class labels; it is skipped on unlabelled datasets otherwise.
    requires_labels: bool = True
    #: Whether a built-in evaluator runs in a plain `harness run` (and a suite without `[[evaluators]]`). A preset
    #: that measures a second column of another evaluator's kind sets False: it runs when asked for by name.
    in_default_run: bool = True

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.default_options())
        if unknown:
            from harness.errors import HarnessError

            # Before 0.2 the built-ins took the memory budget as a constructor argument; it is an execution setting.
            moved = (" (the memory budget is an execution setting since 0.2: --memory-budget-mb, or "
                     "evaluate(..., settings=ExecutionSettings(memory_budget_mb=...)))"
                     if "memory_budget_mb" in unknown else "")
            raise HarnessError(f"evaluator {self.name!r} has no option(s) {sorted(unknown)}; "
                               f"it accepts {sorted(self.default_options())}{moved}")
        self.options = {**self.default_options(), **options}

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        """The options of the written protocol. Records with other options form another column."""
        return {}

    @property
    def non_default_options(self) -> dict[str, Any]:
        defaults = self.default_options()
        return {k: v for k, v in self.options.items() if defaults.get(k) != v}

    def check_dataset(self, info: Mapping[str, Any]) -> None:
        """Refuse, with a HarnessError, options that cannot apply to a dataset, from its `info()` (split sizes,
        class names) before anything is extracted: e.g. kNN's main_k above the number of train items. Optional."""

    @abc.abstractmethod
    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        """Compute the metrics. `train` is None when `needs` does not include it. Every random step uses `seed`;
        `settings` says where and within how much memory to compute (`harness.types.ExecutionSettings`).

        Evaluators written before 0.2 take `device: str` instead of `settings`; the runner still calls them so."""

    def evaluate_splits(self, train: Embeddings | None, splits: Mapping[str, Embeddings], *, seed: int,
                        settings: ExecutionSettings) -> dict[str, EvaluationResult]:
        """One result per evaluation split (`test`, `test-sketch`, ...; see `harness.eval_splits`). A split that
        holds a subset of the classes has their indices in `meta["split_classes"]`.

        This default calls `evaluate` once per split, with `train` limited to the train items of the split's
        classes when it holds a subset, so every evaluator works unchanged; the runner then fails each split on
        its own. An evaluator that fits something on train overrides it to fit once and score every split,
        restricting its scores to a subset split's classes (the linear probe); a failure there fails every split."""
        from harness.eval_splits import per_split

        return per_split(lambda tr, te: self.evaluate(tr, te, seed=seed, settings=settings), train, splits)


def require_two_classes(embeddings: Embeddings, evaluator: str, split: str) -> None:
    """Refuse a split whose labelled items belong to fewer than two classes: there every prediction is right and
    every clustering agrees with the labels, so a score of 1.0 would look perfect and mean nothing."""
    labels = np.asarray(embeddings.labels)
    present = np.unique(labels[labels >= 0])
    if len(present) < 2:
        from harness.errors import HarnessError

        names = list(embeddings.meta.get("class_names") or [])
        which = ", ".join(repr(names[c]) if c < len(names) else str(c) for c in present.tolist()) or "none"
        raise HarnessError(f"{evaluator}: the {split} split's labelled items belong to {len(present)} class(es) "
                           f"({which}); a score over fewer than two classes is 1.0 whatever the encoder, so none "
                           f"is computed. Evaluate on a dataset with at least two classes")

