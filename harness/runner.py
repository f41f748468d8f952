"""Plan -> extract once -> evaluate -> record.

Every name is resolved before any work starts, so a typo fails in a second, not after an hour of extraction.
Each (encoder, dataset, split) is extracted once, whatever the number of evaluators and seeds, and a record is
written as soon as its cell is done, so a later failure loses nothing already computed. A resumed run
(`resume=True`) first looks for each cell's record: an `ok` record with the same cell key and the same embedding
cache keys is kept, and a pair whose cells are all done is not extracted at all.
"""

from __future__ import annotations

import inspect
import logging
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from harness import distributed
from harness.distributed import Ranks, together
from harness.errors import HarnessError
from harness.extract import (STORAGE_DTYPES, ExtractionOptions, ExtractionReport, extract, precision_for,
                             resolve_device, split_cache_key)
from harness.plugin_manager import Plugins, get_plugins
from harness.records import (SCHEMA_VERSION, cell_key, library_versions, load_record, record_path,
                             write_record)
from harness.store import EmbeddingStore
from harness.types import EvaluationResult, Embeddings, Encoder, Evaluator, ExecutionSettings

log = logging.getLogger(__name__)

DEFAULT_ENCODERS = ("efficientnet_lite0", "pixels", "random:tf_efficientnet_lite0")
DEFAULT_DATASETS = ("cifar10-mini",)
BASELINE_PRETRAINING = ("random", "none")


@dataclass
class EncoderSpec:
    """One encoder with options of its own (a suite's `[[encoders]]` table); `RunConfig.encoder_options` does not
    apply to it."""

    name: str  # the registry name, as on the command line (`timm:vit_small_patch16_224@/abs/w.pth`)
    options: dict[str, Any] = field(default_factory=dict)  # factory keyword arguments, for this encoder only
    display_name: str | None = None  # the name its row starts from, when `name` holds a resolved path
    label: str | None = None  # the row name, replacing the one built from display_name and non-default options
    batch_size: int | None = None  # None: RunConfig.batch_size
    baseline: bool | None = None  # None: from the pretraining kind (random and none are baselines)


@dataclass
class DatasetSpec:
    """One dataset with options of its own; non-default options make its name (and column) another one."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    display_name: str | None = None


@dataclass
class RunConfig:
    encoders: Sequence[str | Encoder | EncoderSpec] = DEFAULT_ENCODERS
    datasets: Sequence[str | DatasetSpec] = DEFAULT_DATASETS
    evaluators: Sequence[str] = ("knn",)
    results_dir: str | Path = "results"
    cache_dir: str | Path = ".harness-cache"
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    seed: int = 0
    seeds: Sequence[int] | None = None  # several evaluation seeds (one record each); None: (seed,)
    resume: bool = False  # keep cells whose ok record has the same cell key and cache keys
    skip_bad_images: bool = False
    shard_size: int | None = None
    encoder_options: dict[str, Any] = field(default_factory=dict)  # applied to every encoder built by name
    dataset_options: dict[str, Any] = field(default_factory=dict)  # e.g. data_root, to datasets that take it
    evaluator_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # evaluator name -> options
    progress: bool = True
    command: str | None = None
    storage_dtype: str = "float32"  # how features are cached: float16 halves the cache (another row, another key)
    memory_budget_mb: float | None = None  # evaluators' working memory (ExecutionSettings); None: from the device


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
    already_done: list[dict[str, Any]] = field(default_factory=list)  # records kept by a resumed run
    ranks: Ranks = field(default_factory=Ranks)  # under torchrun, only rank 0's report holds records

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


@dataclass
class _PlannedEncoder:
    label: str
    encoder: Encoder
    batch_size: int | None = None
    baseline: bool | None = None


def _build_encoders(config: RunConfig, plugins: Plugins) -> list[_PlannedEncoder]:
    built = []
    for spec in config.encoders:
        if isinstance(spec, Encoder):
            built.append(_PlannedEncoder(spec.name, spec))
            continue
        if isinstance(spec, EncoderSpec):
            encoder = plugins.encoder(spec.name, **spec.options)
            built.append(_PlannedEncoder(spec_label(spec, plugins), encoder, spec.batch_size, spec.baseline))
            continue
        entry, _ = plugins.encoders.resolve(spec)
        options, defaults = options_for(entry.factory, config.encoder_options)
        encoder = plugins.encoder(spec, **options)
        built.append(_PlannedEncoder(encoder_label(spec, options, defaults), encoder))
    if config.storage_dtype != "float32":  # features rounded for storage are another measurement: another row
        for planned in built:
            planned.label = f"{planned.label}[storage={config.storage_dtype}]"
    return built


def spec_label(spec: EncoderSpec, plugins: Plugins) -> str:
    """The row name of an encoder spec: its label, else its name plus its non-default options."""
    _, defaults = options_for(plugins.encoders.resolve(spec.name)[0].factory, {})
    return spec.label or encoder_label(spec.display_name or spec.name, spec.options, defaults)


def _build_dataset(spec: str | DatasetSpec, config: RunConfig, plugins: Plugins) -> Any:
    if isinstance(spec, DatasetSpec):
        entry, _ = plugins.datasets.resolve(spec.name)
        shared, defaults = options_for(entry.factory, config.dataset_options)  # data_root: where, not what
        dataset = plugins.dataset(spec.name, **shared, **spec.options)
        dataset.name = encoder_label(plugins.datasets.canonical(spec.display_name or spec.name), spec.options, defaults)
        return dataset
    return plugins.dataset(spec, **options_for(plugins.datasets.resolve(spec)[0].factory, config.dataset_options)[0])


def options_for(factory: Any, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options a factory accepts (`--pooling` means nothing to `pixels`), and its defaults."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = {k: v for k, v in options.items() if takes_any or k in parameters}
    defaults = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return accepted, defaults


def plan_cells(config: RunConfig, plugins: Plugins | None = None) -> list[str]:
    """The cell keys a run of `config` measures (before skipping what a dataset cannot feed), without running
    anything: to compare two ways of asking for a run, e.g. a suite file and command-line flags."""
    plugins = plugins or get_plugins()
    evaluators = [plugins.evaluator(name, **config.evaluator_options.get(name, {})) for name in config.evaluators]
    dataset_names = [_build_dataset(spec, config, plugins).name for spec in config.datasets]
    return [cell_key(planned.label, name, e.name, e.protocol, e.options, seed)
            for planned in _build_encoders(config, plugins) for name in dataset_names
            for e in evaluators for seed in run_seeds(config)]


def run(config: RunConfig, plugins: Plugins | None = None) -> RunReport:
    """Evaluate every encoder on every dataset with every evaluator; write one record per cell.

    Under torchrun every rank runs this: the extractions are shared out among the ranks, then rank 0 alone
    evaluates and writes the records (the other ranks return a report with no records). The process group is
    joined here if need be and kept: a process cannot join a second one once it has left."""
    ranks, _ = distributed.join()
    plugins = plugins or get_plugins()
    device = resolve_device(distributed.rank_device(config.device, ranks))
    command = config.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    # Resolve every name first: a typo must fail before any extraction.
    encoders = _build_encoders(config, plugins)
    datasets = [_build_dataset(spec, config, plugins) for spec in config.datasets]
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
    report = RunReport(ranks=ranks)
    # Under torchrun, every extraction comes first and the records after (evaluated, or failed markers), on rank 0
    # only: the other ranks are then free to exit instead of waiting, inside a collective with a timeout, for
    # evaluators that may run for hours, and no error in the results directory can leave a rank behind.
    deferred: list[Callable[[], None]] = []
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
        for planned in encoders:
            options = replace(extraction_options, batch_size=planned.batch_size or config.batch_size)
            records = _extract_pair(planned, dataset, info, needed, usable, store, options, config, command, ranks,
                                    report)
            if records is not None and not ranks.distributed:
                records()
            elif records is not None:
                deferred.append(records)
    if ranks.leader:
        for records in deferred:
            records()
    return report


def run_seeds(config: RunConfig) -> list[int]:
    return [int(s) for s in (config.seeds if config.seeds is not None else (config.seed,))]


def _done_cells(label: str, encoder: Encoder, dataset: Any, needed: list[str], evaluators: list[Evaluator],
                options: ExtractionOptions, config: RunConfig) -> dict[tuple[str, int], dict[str, Any]]:
    """The cells of this pair that an earlier run already measured: an `ok` record at the cell's path with the same
    cell key and the same embedding cache keys (computed from fingerprints: no model is loaded or run). Anything
    else (no record, a failed marker, other weights or data, an unreadable file) is measured again."""
    keys = {split: split_cache_key(encoder, dataset, split, dataset.split(split), options)[0] for split in needed}
    done = {}
    for evaluator in evaluators:
        for seed in run_seeds(config):
            stub = {"encoder": {"name": label}, "dataset": {"name": dataset.name}, "seed": seed,
                    "evaluator": {"name": evaluator.name, "protocol": evaluator.protocol,
                                  "non_default_options": evaluator.non_default_options}}
            path = record_path(Path(config.results_dir), stub)
            if not path.is_file():
                continue
            try:
                record = load_record(path)
            except HarnessError as error:
                log.warning("%s; its cell is measured again", error)
                continue
            same_cell = record["cell"] == cell_key(label, dataset.name, evaluator.name, evaluator.protocol,
                                                   evaluator.options, seed)
            same_data = all(record["cache_keys"].get(split) == keys[split] for split in evaluator.needs)
            if record["status"] == "ok" and same_cell and same_data:
                done[evaluator.name, seed] = record
    return done


def _extract_pair(planned: _PlannedEncoder, dataset: Any, info: dict[str, Any], needed: list[str],
                  evaluators: list[Evaluator], store: EmbeddingStore, options: ExtractionOptions, config: RunConfig,
                  command: str, ranks: Ranks, report: RunReport) -> Callable[[], None] | None:
    """Extract every split that the cells of one (encoder, dataset) still to measure need; what writes their
    records (evaluated, or failed markers when the extraction failed), or None when every cell is already done.
    Under torchrun every rank extracts and only rank 0 is to call what this returns."""
    label, encoder = planned.label, planned.encoder
    embeddings: dict[str, Embeddings] = {}
    timings: dict[str, float] = {}
    seeds = run_seeds(config)
    try:
        # Rank 0 decides what is done and tells the others, so that every rank extracts the same splits.
        done = ranks.broadcast(together(ranks, f"looking for the finished cells of {label} on {dataset.name}",
                                        lambda: _done_cells(label, encoder, dataset, needed, evaluators, options,
                                                            config) if config.resume and ranks.leader else {}))
        report.already_done.extend(done.values())
        todo = [(evaluator, seed) for evaluator in evaluators for seed in seeds if (evaluator.name, seed) not in done]
        if not todo:
            return None  # every cell measured with these very embeddings: no extraction, no model loaded
        needed = [s for s in needed if any(s in evaluator.needs for evaluator, _ in todo)]
        for split in needed:
            started = time.perf_counter()
            embeddings[split], extraction = extract(encoder, dataset, split, store, options, ranks)
            timings[f"extract_{split}_s"] = round(time.perf_counter() - started, 3)
            report.extractions.append(extraction)
    except HarnessError as error:  # the user's to fix: the message says how
        log.error("%s on %s: %s", label, dataset.name, error)
        report.failures.append(CellFailure(label, dataset.name, None, str(error)))
        return partial(_write_extraction_failures, label, encoder, dataset, info, evaluators, str(error), options,
                       config, command, planned.baseline)
    except Exception as error:  # noqa: BLE001 - a broken encoder plugin must not stop the other encoders
        log.error("%s on %s: extraction failed:\n%s", label, dataset.name, traceback.format_exc())
        report.failures.append(CellFailure(label, dataset.name, None, f"{type(error).__name__}: {error}"))
        return partial(_write_extraction_failures, label, encoder, dataset, info, evaluators, traceback.format_exc(),
                       options, config, command, planned.baseline)
    return partial(_evaluate_pair, planned, dataset, info, embeddings, timings, todo, options, config, command,
                   report)


def _evaluate_pair(planned: _PlannedEncoder, dataset: Any, info: dict[str, Any], embeddings: dict[str, Embeddings],
                   timings: dict[str, float], todo: list[tuple[Evaluator, int]], options: ExtractionOptions,
                   config: RunConfig, command: str, report: RunReport) -> None:
    """Evaluate the cells `todo` of one (encoder, dataset) on its embeddings and write a record for each."""
    label, encoder = planned.label, planned.encoder
    seeds = run_seeds(config)
    encoder_record = _encoder_record(label, encoder, embeddings, planned.baseline)
    dataset_record = {"name": dataset.name, "fingerprint": {s: e.meta["dataset_fingerprint"] for s, e in
                                                            embeddings.items()},
                      "split_sizes": {s: int(e.features.shape[0]) for s, e in embeddings.items()},
                      "class_names": list(info.get("class_names", [])), "source": info.get("source"),
                      "revision": info.get("revision"),
                      "skipped_items": [item for e in embeddings.values() for item in e.meta.get("skipped", [])]}
    for evaluator, seed in todo:
        started = time.perf_counter()
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "cell": cell_key(label, dataset.name, evaluator.name, evaluator.protocol, evaluator.options, seed),
            "encoder": encoder_record, "dataset": dataset_record,
            "evaluator": {"name": evaluator.name, "protocol": evaluator.protocol, "options": evaluator.options,
                          "non_default_options": evaluator.non_default_options},
            "seed": seed, "cache_keys": {s: e.meta["key"] for s, e in embeddings.items()},
            "versions": library_versions(), "device": options.device, "precision": precision_for(options.device),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        }
        try:
            settings = ExecutionSettings(device=options.device, memory_budget_mb=config.memory_budget_mb,
                                         workers=config.workers)
            result = call_evaluate(evaluator, embeddings.get("train"), embeddings["test"], seed, settings)
        except Exception as error:  # noqa: BLE001 - one failing cell must not stop the others
            log.error("%s on %s, evaluator %s failed:\n%s", label, dataset.name, evaluator.name,
                      traceback.format_exc())
            which = f" (seed {seed})" if len(seeds) > 1 else ""
            report.failures.append(CellFailure(label, dataset.name, evaluator.name,
                                               f"{type(error).__name__}: {error}{which}"))
            record.update(status="failed", error=traceback.format_exc(), metrics={}, main_metric="",
                          main_score=None, timings={**timings, "evaluate_s": round(time.perf_counter() - started, 3)})
            _write_failed_marker(config.results_dir, record)
            continue
        record.update(status="ok", error=None, metrics=result.metrics, main_metric=result.main_metric,
                      main_score=result.main_score,
                      timings={**timings, "evaluate_s": round(time.perf_counter() - started, 3)})
        path = write_record(config.results_dir, record, result.predictions, result.artifacts)
        report.records.append(load_record(path))  # exactly what is on disk, file names of its arrays included
        report.record_paths.append(path)


def call_evaluate(evaluator: Evaluator, train: Embeddings | None, test: Embeddings, seed: int,
                  settings: ExecutionSettings) -> EvaluationResult:
    """`evaluator.evaluate(...)` with the execution settings; an evaluator written before 0.2, whose `evaluate` takes
    `device` instead of `settings`, gets the device alone (and a deprecation warning once per evaluator class)."""
    parameters = inspect.signature(evaluator.evaluate).parameters
    if "settings" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return evaluator.evaluate(train, test, seed=seed, settings=settings)
    if type(evaluator) not in _LEGACY_WARNED:
        _LEGACY_WARNED.add(type(evaluator))
        log.warning("evaluator %r takes evaluate(..., device=) (the pre-0.2 contract): it gets the device but not "
                    "the memory budget; take `settings: ExecutionSettings` instead (docs/plugins.md)", evaluator.name)
    return evaluator.evaluate(train, test, seed=seed, device=settings.device)


_LEGACY_WARNED: set[type] = set()


def _write_extraction_failures(label: str, encoder: Encoder, dataset: Any, info: dict[str, Any],
                               evaluators: list[Evaluator], error: str, options: ExtractionOptions,
                               config: RunConfig, command: str, baseline: bool | None = None) -> None:
    """A failed marker per cell of an encoder whose extraction failed, so the results say what happened.
    `baseline`: the suite's word on it (None: from the pretraining kind, as for finished records)."""
    try:
        encoder_info = {"architecture": "unknown", "weights": {}, **encoder.info()}
        encoder_info.setdefault("pretraining", getattr(encoder, "pretraining", "unknown"))
        encoder_record = {"name": label, "fingerprint": encoder.fingerprint(), "info": encoder_info,
                          "baseline": encoder_info["pretraining"] in BASELINE_PRETRAINING if baseline is None
                          else baseline}
    except Exception:  # noqa: BLE001 - an encoder too broken to describe itself still fails only its own cells
        encoder_record = {"name": label, "fingerprint": {}, "baseline": bool(baseline),
                          "info": {"architecture": "unknown", "weights": {}, "pretraining": "unknown"}}
    dataset_record = {"name": dataset.name, "fingerprint": {}, "split_sizes": dict(info.get("split_sizes", {})),
                      "class_names": list(info.get("class_names", [])), "source": info.get("source"),
                      "revision": info.get("revision")}
    for evaluator, seed in ((e, s) for e in evaluators for s in run_seeds(config)):
        record = {
            "schema_version": SCHEMA_VERSION,
            "cell": cell_key(label, dataset.name, evaluator.name, evaluator.protocol, evaluator.options, seed),
            "encoder": encoder_record, "dataset": dataset_record,
            "evaluator": {"name": evaluator.name, "protocol": evaluator.protocol, "options": evaluator.options,
                          "non_default_options": evaluator.non_default_options},
            "seed": seed, "cache_keys": {}, "versions": library_versions(), "device": options.device,
            "precision": precision_for(options.device), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command, "status": "failed", "error": f"extraction failed: {error}", "metrics": {},
            "main_metric": "", "main_score": None, "timings": {},
        }
        _write_failed_marker(config.results_dir, record)


def _write_failed_marker(results_dir: str | Path, record: dict[str, Any]) -> None:
    """Write a failed marker, unless the cell already has a finished result: one cell key is one measurement, so
    a failure now (a full disk, a flaky plugin) must not destroy the result an earlier run computed."""
    path = record_path(Path(results_dir), record)
    if path.is_file():
        try:
            earlier_ok = load_record(path)["status"] == "ok"
        except HarnessError:
            earlier_ok = False
        if earlier_ok:
            log.warning("kept the earlier finished result %s; this attempt failed (see above)", path)
            return
    write_record(results_dir, record)


def _encoder_record(label: str, encoder: Encoder, embeddings: dict[str, Embeddings],
                    baseline: bool | None = None) -> dict[str, Any]:
    any_split = next(iter(embeddings.values()))
    # The info saved at extraction time knows what only a loaded model can tell (parameter count, hub hash).
    info = {**encoder.info(), **any_split.meta.get("encoder_info", {})}
    info.setdefault("pretraining", getattr(encoder, "pretraining", "unknown"))
    info["embedding_dim"] = int(any_split.features.shape[1])
    parameters = encoder.parameter_count()
    info["parameters"] = parameters if parameters is not None else any_split.meta.get("parameters")
    return {"name": label, "fingerprint": any_split.meta["encoder_fingerprint"], "info": info,
            "baseline": info["pretraining"] in BASELINE_PRETRAINING if baseline is None else baseline}
