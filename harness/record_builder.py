"""Building result records: one builder for every cell, finished or failed, so both carry the same provenance.

`PairRecords` holds what the records of one (encoder, dataset) share (the encoder and dataset sections, the cache
keys, device and command); `PairRecords.record(...)` makes the record of one (evaluator, seed) from an
`EvaluationResult`, or from an error for a failed cell. Writing is the runner's job (`records.write_record`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.eval_splits import TEST, evaluation_splits, split_classes
from harness.extract import precision_for
from harness.plan import PlannedEncoder
from harness.records import SCHEMA_VERSION, cell_key, library_versions
from harness.record_types import DatasetSection, EncoderSection, EvaluatorSection, ResultRecord
from harness.types import BASELINE_PRETRAINING, Embeddings, EvaluationResult, Evaluator


@dataclass(frozen=True)
class PairRecords:
    """What every record of one (encoder, dataset) shares."""

    encoder: EncoderSection
    dataset: DatasetSection
    cache_keys: dict[str, str]
    device: str
    command: str
    #: The class names of each evaluation split that holds only some of train's classes.
    subsets: dict[str, list[str]]

    @classmethod
    def extracted(cls, planned: PlannedEncoder, dataset: Any, info: dict[str, Any],
                  embeddings: dict[str, Embeddings], device: str, command: str) -> PairRecords:
        """The pair's records after its extraction: sizes, fingerprints and keys of the embeddings themselves."""
        return cls(encoder_section(planned, embeddings), dataset_section(dataset, info, embeddings),
                   {s: e.meta["key"] for s, e in embeddings.items()}, device, command, class_subsets(dataset, info))

    @classmethod
    def failed_extraction(cls, planned: PlannedEncoder, dataset: Any, info: dict[str, Any], device: str,
                          command: str) -> PairRecords:
        """The pair's records when its extraction failed: what the encoder and the dataset say of themselves."""
        return cls(encoder_section(planned, None), dataset_section(dataset, info, None), {}, device, command,
                   class_subsets(dataset, info))

    def record(self, evaluator: Evaluator, seed: int, *, split: str = TEST, result: EvaluationResult | None = None,
               error: str | None = None, timings: dict[str, float] | None = None) -> ResultRecord:
        """The record of one cell: `ok` with `result`, else `failed` with `error` (what went wrong, for the user).
        A split other than `test` is named in the record (and its cell key), with its classes if a subset."""
        if (result is None) == (error is None):
            raise ValueError("a record has either a result (ok) or an error (failed)")
        record: ResultRecord = {
            "schema_version": SCHEMA_VERSION,
            "cell": cell_key(self.encoder["name"], self.dataset["name"], evaluator.name, evaluator.protocol,
                             evaluator.options, seed, split),
            "encoder": self.encoder, "dataset": self.dataset, "evaluator": evaluator_section(evaluator),
            "seed": seed, "cache_keys": dict(self.cache_keys), "versions": library_versions(),
            "device": self.device, "precision": precision_for(self.device),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command,
            "status": "ok" if result is not None else "failed", "error": error,
            "metrics": result.metrics if result is not None else {},
            "main_metric": result.main_metric if result is not None else "",
            "main_score": result.main_score if result is not None else None,
            "timings": dict(timings or {}),
        }
        if split != TEST:
            record["split"] = split
        if split in self.subsets:
            record["split_classes"] = list(self.subsets[split])
        return record


def class_subsets(dataset: Any, info: dict[str, Any]) -> dict[str, list[str]]:
    """{split: its class names} for the evaluation splits that hold only some of the dataset's classes."""
    names = list(info.get("class_names") or [])
    subsets = {}
    for split in evaluation_splits(dataset.name, info):
        classes = split_classes(dataset.name, info, split)
        if classes is not None:
            subsets[split] = [names[c] for c in classes]
    return subsets


def evaluator_section(evaluator: Evaluator) -> EvaluatorSection:
    return {"name": evaluator.name, "protocol": evaluator.protocol, "options": evaluator.options,
            "non_default_options": evaluator.non_default_options}


def encoder_section(planned: PlannedEncoder, embeddings: dict[str, Embeddings] | None) -> EncoderSection:
    """The encoder as its records show it. With embeddings, the info saved at extraction time adds what only a
    loaded model can tell (parameter count, hub hash); without (a failed extraction), an encoder too broken to
    describe itself still gets a section, so it fails only its own cells."""
    encoder = planned.encoder
    if embeddings is None:
        try:
            info = {"architecture": "unknown", "weights": {}, **encoder.info()}
            fingerprint = encoder.fingerprint()
        except Exception:  # noqa: BLE001 - see the docstring
            return {"name": planned.label, "fingerprint": {}, "baseline": bool(planned.baseline),
                    "info": {"architecture": "unknown", "weights": {}, "pretraining": "unknown"}}
    else:
        any_split = next(iter(embeddings.values()))
        info = {**encoder.info(), **any_split.meta.get("encoder_info", {})}
        fingerprint = any_split.meta["encoder_fingerprint"]
        info["embedding_dim"] = int(any_split.features.shape[1])
        parameters = encoder.parameter_count()
        info["parameters"] = parameters if parameters is not None else any_split.meta.get("parameters")
    info.setdefault("pretraining", getattr(encoder, "pretraining", "unknown"))
    baseline = info["pretraining"] in BASELINE_PRETRAINING if planned.baseline is None else planned.baseline
    return {"name": planned.label, "fingerprint": fingerprint, "info": info, "baseline": baseline}


def dataset_section(dataset: Any, info: dict[str, Any], embeddings: dict[str, Embeddings] | None) -> DatasetSection:
    """The dataset as its records show it: with embeddings, the fingerprints and sizes of what was encoded (and the
    items skipped); without, the sizes the dataset states."""
    section: DatasetSection = {"name": dataset.name, "fingerprint": {},
                               "split_sizes": dict(info.get("split_sizes", {})),
                               "class_names": list(info.get("class_names", [])), "source": info.get("source"),
                               "revision": info.get("revision")}
    if embeddings is not None:
        section["fingerprint"] = {s: e.meta["dataset_fingerprint"] for s, e in embeddings.items()}
        section["split_sizes"] = {s: int(e.features.shape[0]) for s, e in embeddings.items()}
        section["skipped_items"] = [item for e in embeddings.values() for item in e.meta.get("skipped", [])]
    return section
