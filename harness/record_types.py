"""The shape of a result record as it crosses stages (built by the runner, written and read by `records`, read by
the leaderboard): `TypedDict`s that mirror `schema/result-record.schema.json`, which stays the authority (it is
what records are validated against on every write and read). Keys the schema does not require are `total=False`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class _EncoderSectionRequired(TypedDict):
    name: str  # the row name (the encoder's label, options and storage dtype included)
    fingerprint: Dict[str, Any]  # what went into the embedding cache key ({} when the encoder failed to describe itself)
    info: Dict[str, Any]  # architecture, weights, pretraining (required), parameters, embedding_dim, ...


class EncoderSection(_EncoderSectionRequired, total=False):
    baseline: bool  # a baseline row: the suite's word, else from the pretraining kind
    options: Dict[str, Any]


class _DatasetSectionRequired(TypedDict):
    name: str
    fingerprint: Dict[str, Any]  # split -> the dataset fingerprint the embeddings were made from
    split_sizes: Dict[str, int]


class DatasetSection(_DatasetSectionRequired, total=False):
    class_names: List[str]
    source: Optional[str]
    revision: Optional[str]
    skipped_items: List[Any]  # unreadable items left out (--skip-bad-images)


class _EvaluatorSectionRequired(TypedDict):
    name: str
    protocol: str  # a versioned id, e.g. knn/dino-v1
    options: Dict[str, Any]  # every option, defaults included (part of the cell key)


class EvaluatorSection(_EvaluatorSectionRequired, total=False):
    non_default_options: Dict[str, Any]  # what makes another column (and the record's folder name)


class _ResultRecordRequired(TypedDict):
    schema_version: int
    cell: str  # records.cell_key(...): one cell key is one measurement
    encoder: EncoderSection
    dataset: DatasetSection
    evaluator: EvaluatorSection
    seed: int
    status: str  # "ok" or "failed"
    metrics: Dict[str, Any]
    main_metric: str
    main_score: Optional[float]
    cache_keys: Dict[str, str]  # split -> embedding cache key ({} when the extraction failed)
    timings: Dict[str, float]
    versions: Dict[str, str]
    device: str
    precision: str
    date: str
    command: str


class ResultRecord(_ResultRecordRequired, total=False):
    error: Optional[str]  # None when ok; what went wrong otherwise
    split: str  # the evaluation split measured, only when not "test" (harness.eval_splits)
    split_classes: List[str]  # the classes a split holding a subset of train's was scored over
    predictions_file: Optional[str]  # set by records.write_record (required on disk, not before)
    artifacts: Dict[str, str]  # set by records.write_record
