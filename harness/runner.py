"""Plan -> extract once -> evaluate -> record.

Every name is resolved before any work starts, so a typo fails in a second, not after an hour of extraction.
Each (encoder, dataset, split) is extracted once, whatever the number of evaluators, and a record is written as
soon as its cell is done, so a later failure loses nothing already computed.
"""

from __future__ import annotations

import inspect
import logging
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.extract import (STORAGE_DTYPES, ExtractionOptions, ExtractionReport, extract, precision_for,
                             resolve_device)
from harness.plugins import Plugins, get_plugins
from harness.records import SCHEMA_VERSION, cell_key, library_versions, load_record, write_record
from harness.store import EmbeddingStore
from harness.types import Embeddings, Encoder, Evaluator

log = logging.getLogger(__name__)

DEFAULT_ENCODERS = ("efficientnet_lite0", "pixels", "random:tf_efficientnet_lite0")
DEFAULT_DATASETS = ("cifar10-mini",)
BASELINE_PRETRAINING = ("random", "none")


@dataclass
class RunConfig:
    encoders: Sequence[str | Encoder] = DEFAULT_ENCODERS
    datasets: Sequence[str] = DEFAULT_DATASETS
    evaluators: Sequence[str] = ("knn",)
    results_dir: str | Path = "results"
    cache_dir: str | Path = ".harness-cache"
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    seed: int = 0
    skip_bad_images: bool = False
    shard_size: int | None = None
    encoder_options: dict[str, Any] = field(default_factory=dict)  # applied to every encoder built by name
    dataset_options: dict[str, Any] = field(default_factory=dict)  # e.g. data_root, to datasets that take it
    evaluator_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # evaluator name -> options
    progress: bool = True
    command: str | None = None
    storage_dtype: str = "float32"  # how features are cached: float16 halves the cache (another row, another key)


@dataclass
class CellFailure:
    encoder: str
    dataset: str
    evaluator: str | None
    error: str

    def __str__(self) -> str:
        where = f"{self.encoder} on {self.dataset}" + (f" ({self.evaluator})" if self.evaluator else "")
        return f"{where}: {self.error}"


@dataclass
class RunReport:
    records: list[dict[str, Any]] = field(default_factory=list)
    record_paths: list[Path] = field(default_factory=list)
    extractions: list[ExtractionReport] = field(default_factory=list)
    failures: list[CellFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def forward_passes(self) -> int:
        return sum(r.forward_passes for r in self.extractions)

    @property
    def items_encoded(self) -> int:
        return sum(r.items_encoded for r in self.extractions)


def encoder_label(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The name a record shows: non-default encoder options make another row, never a silent merge."""
    shown = {k: v for k, v in options.items() if defaults.get(k, object()) != v}
    return name if not shown else f"{name}[{','.join(f'{k}={v}' for k, v in sorted(shown.items()))}]"


def _build_encoders(config: RunConfig, plugins: Plugins) -> list[tuple[str, Encoder]]:
    built = []
    for spec in config.encoders:
        if isinstance(spec, Encoder):
            built.append((spec.name, spec))
            continue
        entry, _ = plugins.encoders.resolve(spec)
        options, defaults = options_for(entry.factory, config.encoder_options)
        encoder = plugins.encoder(spec, **options)
        built.append((encoder_label(spec, options, defaults), encoder))
    return built


def options_for(factory: Any, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options a factory accepts (`--pooling` means nothing to `pixels`), and its defaults."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = {k: v for k, v in options.items() if takes_any or k in parameters}
    defaults = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return accepted, defaults


def run(config: RunConfig, plugins: Plugins | None = None) -> RunReport:
    """Evaluate every encoder on every dataset with every evaluator; write one record per cell."""
    plugins = plugins or get_plugins()
    device = resolve_device(config.device)
    command = config.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    # Resolve every name first: a typo must fail before any extraction.
    encoders = _build_encoders(config, plugins)
    datasets = [plugins.dataset(name, **options_for(plugins.datasets.resolve(name)[0].factory,
                                                    config.dataset_options)[0]) for name in config.datasets]
    evaluators: list[Evaluator] = [plugins.evaluator(name, **config.evaluator_options.get(name, {}))
                                   for name in config.evaluators]
    store = EmbeddingStore(config.cache_dir)
    if config.storage_dtype not in STORAGE_DTYPES:  # before any work, not once per cell
        raise HarnessError(f"storage dtype {config.storage_dtype!r}: use one of {', '.join(STORAGE_DTYPES)}")
    extraction_options = ExtractionOptions(device=device, batch_size=config.batch_size, workers=config.workers,
                                           skip_bad_images=config.skip_bad_images, progress=config.progress,
                                           storage_dtype=config.storage_dtype)
    if config.shard_size:
        extraction_options.shard_size = config.shard_size
    report = RunReport()
    for dataset in datasets:
        info = dataset.info()  # scans the dataset: a bad path fails here, naming it
        usable = []
        for evaluator in evaluators:
            if evaluator.requires_labels and not info.get("class_names"):
                message = f"{evaluator.name} skipped on {dataset.name}: it needs labels and the dataset has none"
                log.warning(message)
                report.skipped.append(message)
            elif missing := [s for s in evaluator.needs if s not in info["splits"]]:
                message = f"{evaluator.name} skipped on {dataset.name}: no split(s) {missing}"
                log.warning(message)
                report.skipped.append(message)
            else:
                usable.append(evaluator)
        needed = [s for s in ("train", "val", "test") if any(s in e.needs for e in usable)]
        for label, encoder in encoders:
            if config.storage_dtype != "float32":  # features rounded for storage are another measurement: a row
                label = f"{label}[storage={config.storage_dtype}]"
            _run_pair(label, encoder, dataset, info, needed, usable, store, extraction_options, config, command,
                      report)
    return report


def _run_pair(label: str, encoder: Encoder, dataset: Any, info: dict[str, Any], needed: list[str],
              evaluators: list[Evaluator], store: EmbeddingStore, options: ExtractionOptions, config: RunConfig,
              command: str, report: RunReport) -> None:
    embeddings: dict[str, Embeddings] = {}
    timings: dict[str, float] = {}
    try:
        for split in needed:
            started = time.perf_counter()
            embeddings[split], extraction = extract(encoder, dataset, split, store, options)
            timings[f"extract_{split}_s"] = round(time.perf_counter() - started, 3)
            report.extractions.append(extraction)
    except HarnessError as error:  # the user's to fix: the message says how
        log.error("%s on %s: %s", label, dataset.name, error)
        report.failures.append(CellFailure(label, dataset.name, None, str(error)))
        return
    except Exception as error:  # noqa: BLE001 - a broken encoder plugin must not stop the other encoders
        log.error("%s on %s: extraction failed:\n%s", label, dataset.name, traceback.format_exc())
        report.failures.append(CellFailure(label, dataset.name, None, f"{type(error).__name__}: {error}"))
        return
    encoder_record = _encoder_record(label, encoder, embeddings)
    dataset_record = {"name": dataset.name, "fingerprint": {s: e.meta["dataset_fingerprint"] for s, e in
                                                            embeddings.items()},
                      "split_sizes": {s: int(e.features.shape[0]) for s, e in embeddings.items()},
                      "class_names": list(info.get("class_names", [])), "source": info.get("source"),
                      "revision": info.get("revision"),
                      "skipped_items": [item for e in embeddings.values() for item in e.meta.get("skipped", [])]}
    for evaluator in evaluators:
        started = time.perf_counter()
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "cell": cell_key(label, dataset.name, evaluator.name, evaluator.protocol, evaluator.options, config.seed),
            "encoder": encoder_record, "dataset": dataset_record,
            "evaluator": {"name": evaluator.name, "protocol": evaluator.protocol, "options": evaluator.options,
                          "non_default_options": evaluator.non_default_options},
            "seed": config.seed, "cache_keys": {s: e.meta["key"] for s, e in embeddings.items()},
            "versions": library_versions(), "device": options.device, "precision": precision_for(options.device),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        }
        try:
            result = evaluator.evaluate(embeddings.get("train"), embeddings["test"], seed=config.seed,
                                        device=options.device)
        except Exception as error:  # noqa: BLE001 - one failing cell must not stop the others
            log.error("%s on %s, evaluator %s failed:\n%s", label, dataset.name, evaluator.name,
                      traceback.format_exc())
            report.failures.append(CellFailure(label, dataset.name, evaluator.name, f"{type(error).__name__}: {error}"))
            record.update(status="failed", error=traceback.format_exc(), metrics={}, main_metric="",
                          main_score=None, timings={**timings, "evaluate_s": round(time.perf_counter() - started, 3)})
            write_record(config.results_dir, record)
            continue
        record.update(status="ok", error=None, metrics=result.metrics, main_metric=result.main_metric,
                      main_score=result.main_score,
                      timings={**timings, "evaluate_s": round(time.perf_counter() - started, 3)})
        path = write_record(config.results_dir, record, result.predictions, result.artifacts)
        report.records.append(load_record(path))  # exactly what is on disk, file names of its arrays included
        report.record_paths.append(path)


def _encoder_record(label: str, encoder: Encoder, embeddings: dict[str, Embeddings]) -> dict[str, Any]:
    any_split = next(iter(embeddings.values()))
    # The info saved at extraction time knows what only a loaded model can tell (parameter count, hub hash).
    info = {**encoder.info(), **any_split.meta.get("encoder_info", {})}
    info.setdefault("pretraining", getattr(encoder, "pretraining", "unknown"))
    info["embedding_dim"] = int(any_split.features.shape[1])
    parameters = encoder.parameter_count()
    info["parameters"] = parameters if parameters is not None else any_split.meta.get("parameters")
    return {"name": label, "fingerprint": any_split.meta["encoder_fingerprint"], "info": info,
            "baseline": info["pretraining"] in BASELINE_PRETRAINING}
