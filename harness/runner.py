"""Run a plan: extract once -> evaluate -> write a record per cell.

Each (encoder, dataset, split) is extracted once, whatever the number of evaluators and seeds, and a record is
written as soon as its cell is done, so a later failure loses nothing already computed. What a run measures and
what a resumed run already has is planned in `harness.plan`; records are built in `harness.record_builder`.
"""

from __future__ import annotations

import inspect
import logging
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from harness import distributed
from harness.defaults import DEFAULT_CACHE_DIR, DEFAULT_DATASETS, DEFAULT_ENCODERS, DEFAULT_RESULTS_DIR
from harness.distributed import Ranks, together
from harness.errors import HarnessError
from harness.eval_splits import (TEST, check_evaluation_splits, evaluation_splits, per_split, split_classes,
                                  with_split_classes)
from harness.files import check_writable_dir, writable_dir_problem
from harness.extract import ExtractionOptions, ExtractionReport, check_storage_dtype, extract, resolve_device
from harness.plan import (DatasetSpec, EncoderSpec, PlannedEncoder, RunConfig, build_dataset, build_encoders,
                          build_evaluators, check_row_name, done_cells, encoder_label, needed_splits, options_for,
                          plan_cells, run_seeds, spec_label, splits_of, usable_evaluators)
from harness.plugin_manager import Plugins, get_plugins
from harness.record_builder import PairRecords
from harness.record_types import ResultRecord
from harness.records import load_record, record_path, write_record
from harness.shared_forward import extract_shared
from harness.store import EmbeddingStore
from harness.types import BASELINE_PRETRAINING, Dataset, Embeddings, EvaluationResult, Evaluator, ExecutionSettings

log = logging.getLogger(__name__)

__all__ = ["BASELINE_PRETRAINING", "DEFAULT_CACHE_DIR", "DEFAULT_DATASETS", "DEFAULT_ENCODERS", "DEFAULT_RESULTS_DIR",
           "CellFailure", "DatasetSpec", "EncoderSpec", "RunConfig", "RunReport", "call_evaluate", "encoder_label",
           "options_for", "plan_cells", "run", "run_seeds", "spec_label"]


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


@dataclass
class RunContext:
    """What every pair of one run shares."""

    config: RunConfig
    command: str
    store: EmbeddingStore
    ranks: Ranks
    report: RunReport
    extraction: ExtractionOptions  # the run's; a pair may change the batch size
    settings: ExecutionSettings  # what every evaluator gets

    @property
    def seeds(self) -> list[int]:
        return run_seeds(self.config)


@dataclass
class PairJob:
    """One (encoder, dataset) of the plan, with the evaluators the dataset can feed and the splits they need."""

    planned: PlannedEncoder
    dataset: Any
    info: dict[str, Any]
    evaluators: list[Evaluator]
    needed: list[str]
    options: ExtractionOptions
    evaluation: list[str]  # the dataset's evaluation splits (`test` first)

    @property
    def where(self) -> str:
        return f"{self.planned.label} on {self.dataset.name}"


#: How long ranks wait for each other while one fetches or builds a dataset's files (`leader_first`): no practical
#: limit, as a first download may take hours; torchrun stops the waiting ranks if one dies.
LEADER_FIRST_TIMEOUT_S = distributed.RECORDS_TIMEOUT_S


def run(config: RunConfig, plugins: Plugins | None = None, ranks: Ranks | None = None) -> RunReport:
    """Evaluate every encoder on every dataset with every evaluator; write one record per cell.

    Under torchrun every rank runs this, in the process group that `ranks` (default: the one this process
    belongs to, see `harness.distributed.process_group`) describes: the extractions are shared out among the
    ranks, then rank 0 alone evaluates and writes the records while the others wait for it at one last collective,
    which raises on every rank if rank 0 failed (the other ranks return a report with no records)."""
    ranks = ranks or _current_ranks()
    plugins = plugins or get_plugins()
    context = _run_context(config, plugins, ranks)
    # Resolve every name first: a typo must fail before any extraction.
    encoders = build_encoders(config, plugins)
    if not config.force:  # a row name is one encoder; --force replaces what the results hold under it
        for planned in encoders:
            check_row_name(planned, context.extraction, config.results_dir)
    datasets = [build_dataset(spec, config, plugins) for spec in config.datasets]
    evaluators = build_evaluators(config, plugins)
    # Under torchrun, every extraction comes first and the records after (evaluated, or failed markers), on rank 0
    # only, so that no rank waits inside an extraction collective for evaluators that may run for hours.
    deferred: list[Callable[[], None]] = []
    plans = []
    # Every dataset scanned and every option checked before the first extraction: a bad path fails here, naming it.
    for dataset, info in zip(datasets, scan_datasets(datasets, ranks)):
        usable, skipped = usable_evaluators(dataset, info, evaluators)
        check_evaluation_splits(dataset.name, info)  # a split naming a class train lacks: refused before any work
        for evaluator in usable:
            evaluator.check_dataset(info)  # an option that cannot apply to this dataset: refused before any work
        evaluation = evaluation_splits(dataset.name, info)  # the same for every encoder of this dataset
        plans.append((dataset, info, usable, skipped, evaluation, needed_splits(usable, evaluation)))
    open_splits([(dataset, needed) for dataset, *_, needed in plans], ranks)
    for dataset, info, usable, skipped, evaluation, needed in plans:
        for message in skipped:
            log.warning(message)
        context.report.skipped.extend(skipped)
        for planned in encoders:
            options = replace(context.extraction, batch_size=planned.batch_size or config.batch_size)
            job = PairJob(planned, dataset, info, usable, needed, options, evaluation)
            records = _extract_pair(context, job)
            if records is not None and not ranks.distributed:
                records()
            elif records is not None:
                deferred.append(records)
    if ranks.distributed:
        _write_deferred(context, deferred)
    return context.report


def scan_datasets(datasets: list[Dataset], ranks: Ranks) -> list[dict[str, Any]]:
    """Every dataset's `info()`; under torchrun rank 0 first (`distributed.leader_first`), so that what a scan
    fetches or builds (an `hfds:` download or parquet conversion, the index of `wds:` shards) is made once."""
    return distributed.leader_first(ranks, "scanning the datasets", lambda: [dataset.info() for dataset in datasets],
                                    timeout_s=LEADER_FIRST_TIMEOUT_S)


def open_splits(wanted: list[tuple[Dataset, list[str]]], ranks: Ranks) -> None:
    """Under torchrun, open the splits the cells need, rank 0 first (`distributed.leader_first`), so that a set
    that downloads its files when a split is first opened (the torchvision sets) downloads them once, before the
    ranks extract side by side. A single process opens each split where it extracts it."""
    if ranks.distributed:
        distributed.leader_first(ranks, "opening the datasets' splits",
                                 lambda: [dataset.split(name) for dataset, names in wanted for name in names],
                                 timeout_s=LEADER_FIRST_TIMEOUT_S)


def _current_ranks() -> Ranks:
    ranks = distributed.current()
    if not ranks.distributed and distributed.launched_by_torchrun():
        raise HarnessError("launched by torchrun, but this process has not joined the process group: run inside "
                           "`with harness.distributed.process_group() as ranks:` and pass `ranks=ranks` "
                           "(`harness run` does)")
    return ranks


def _run_context(config: RunConfig, plugins: Plugins, ranks: Ranks) -> RunContext:
    check_storage_dtype(config.storage_dtype)  # before any work, not once per cell
    check_writable_dir(config.results_dir, "results directory", "--results-dir")
    cache_problem = writable_dir_problem(config.cache_dir, "embedding cache", "--cache-dir")
    if cache_problem and Path(config.cache_dir).is_dir():
        # A read-only shared cache still serves the entries it holds (`EmbeddingStore`): only a split it lacks fails.
        log.warning("%s (only the embeddings it already holds can be used)", cache_problem)
    elif cache_problem:
        raise HarnessError(f"{cache_problem} (nothing was computed yet)")
    device = resolve_device(distributed.rank_device(config.device, ranks))
    extraction = ExtractionOptions(device=device, batch_size=config.batch_size, workers=config.workers,
                                   skip_bad_images=config.skip_bad_images, progress=config.progress,
                                   storage_dtype=config.storage_dtype)
    if config.shard_size:
        extraction.shard_size = config.shard_size
    settings = ExecutionSettings(device=device, memory_budget_mb=config.memory_budget_mb, workers=config.workers,
                                 progress=config.progress)
    command = config.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return RunContext(config, command, EmbeddingStore(config.cache_dir), ranks, RunReport(ranks=ranks), extraction,
                      settings)


def _write_deferred(context: RunContext, deferred: list[Callable[[], None]]) -> None:
    """Under torchrun, after every extraction: rank 0 evaluates and writes the records; the other ranks wait for
    it at one last collective, so that every rank fails (and exits non-zero) if rank 0 could not write them, and
    then hear which cells failed (an evaluator raising on rank 0), so that every rank's report and exit status
    say so.

    The wait has no practical limit (`distributed.RECORDS_TIMEOUT_S`): evaluators may run for hours, and torchrun
    stops the waiting ranks anyway if rank 0 dies."""
    ranks = context.ranks

    def write_on_leader() -> None:
        if ranks.leader:
            for records in deferred:
                records()

    together(ranks, f"evaluating and writing the records into {str(context.config.results_dir)!r}", write_on_leader,
             timeout_s=distributed.RECORDS_TIMEOUT_S)
    context.report.failures[:] = ranks.broadcast(context.report.failures)


def _extract_pair(context: RunContext, job: PairJob) -> Callable[[], None] | None:
    """Extract every split that the cells of one (encoder, dataset) still to measure need; what writes their
    records (evaluated, or failed markers when the extraction failed), or None when every cell is already done.
    Under torchrun every rank extracts and only rank 0 is to call what this returns."""
    report = context.report
    embeddings: dict[str, Embeddings] = {}
    timings: dict[str, float] = {}
    try:
        # Rank 0 decides what is done and tells the others, so that every rank extracts the same splits.
        done, cache_keys = _find_done(context, job)
        report.already_done.extend(done.values())
        todo = [(e, seed, split) for e in job.evaluators for seed in context.seeds
                for split in splits_of(e, job.evaluation) if (e.name, seed, split) not in done]
        if not todo:
            return None  # every cell measured with these very embeddings: no extraction, no model loaded
        for split in needed_splits([e for e, _, _ in todo], sorted({s for _, _, s in todo}, key=job.evaluation.index)):
            started = time.perf_counter()
            embeddings[split], extraction = _extract_split(context, job, split, cache_keys.get(split))
            timings[f"extract_{split}_s"] = round(time.perf_counter() - started, 3)
            report.extractions.append(extraction)
    except Exception as error:  # noqa: BLE001 - a broken encoder plugin must not stop the other encoders
        text = _log_failure(error, job.where, ": extraction failed")
        report.failures.append(CellFailure(job.planned.label, job.dataset.name, None, _short(error)))
        return lambda: _write_extraction_failures(context, job, text)
    return lambda: _evaluate_pair(context, job, embeddings, timings, todo)


def _find_done(context: RunContext,
               job: PairJob) -> tuple[dict[tuple[str, int, str], dict[str, Any]], dict[str, str]]:
    """The finished cells of a resumed run (rank 0 looks, every rank learns), and the cache keys rank 0 computed
    to compare, which its extraction reuses (the other ranks fingerprint for themselves: extraction compares)."""
    config, ranks = context.config, context.ranks
    found: list[Any] = []  # rank 0's DoneCells, when it looked

    def look() -> dict[tuple[str, int, str], dict[str, Any]]:
        if not (config.resume and ranks.leader):
            return {}
        found.append(done_cells(job.planned.label, job.planned.encoder, job.dataset, job.needed, job.evaluators,
                                job.options, config, job.evaluation))
        return found[0].records

    done = ranks.broadcast(together(ranks, f"looking for the finished cells of {job.where}", look))
    return done, (found[0].cache_keys if found else {})


def _extract_split(context: RunContext, job: PairJob, split: str,
                   cache_key: str | None) -> tuple[Embeddings, ExtractionReport]:
    # A resumed run passes the key it computed while looking for finished cells: no split is fingerprinted twice.
    if job.planned.siblings:  # encoders sharing its forward pass (other layer choices of its model): done with it
        return extract_shared(job.planned.encoder, job.planned.siblings, job.dataset, split, context.store,
                              job.options, context.ranks, cache_key=cache_key)
    return extract(job.planned.encoder, job.dataset, split, context.store, job.options, context.ranks,
                   cache_key=cache_key)


def _evaluate_pair(context: RunContext, job: PairJob, embeddings: dict[str, Embeddings], timings: dict[str, float],
                   todo: list[tuple[Evaluator, int, str]]) -> None:
    """Evaluate the cells `todo` of one (encoder, dataset) on its embeddings and write a record for each: per
    (evaluator, seed), every evaluation split still to measure in one `evaluate_splits` call when the evaluator
    fits once for all of them, else one `evaluate` call per split (each failing on its own)."""
    pair = PairRecords.extracted(job.planned, job.dataset, job.info, embeddings, job.options.device, context.command)
    evaluation = {split: with_split_classes(embeddings[split], split_classes(job.dataset.name, job.info, split))
                  for split in job.evaluation if split in embeddings}
    cells: dict[tuple[Evaluator, int], list[str]] = {}
    for evaluator, seed, split in todo:
        cells.setdefault((evaluator, seed), []).append(split)
    for (evaluator, seed), splits in cells.items():
        for group in ([splits] if fits_once(evaluator) else [[split] for split in splits]):
            _evaluate_cells(context, job, pair, evaluator, seed, timings, embeddings.get("train"),
                            {split: evaluation[split] for split in group})


def fits_once(evaluator: Evaluator) -> bool:
    """Whether the evaluator overrides `evaluate_splits` to score every evaluation split from one fit."""
    return type(evaluator).evaluate_splits is not Evaluator.evaluate_splits


def call_evaluate_splits(evaluator: Evaluator, train: Embeddings | None, splits: dict[str, Embeddings], seed: int,
                         settings: ExecutionSettings) -> dict[str, EvaluationResult]:
    """The results of `splits`: one `evaluate_splits` call for an evaluator that fits once, else `call_evaluate`
    per split (so that evaluators written before 0.2 still get the device), train limited to a subset's classes."""
    if fits_once(evaluator):
        return dict(evaluator.evaluate_splits(train, splits, seed=seed, settings=settings))
    return per_split(lambda tr, te: call_evaluate(evaluator, tr, te, seed, settings), train, splits)


def _evaluate_cells(context: RunContext, job: PairJob, pair: PairRecords, evaluator: Evaluator, seed: int,
                    timings: dict[str, float], train: Embeddings | None, evaluation: dict[str, Embeddings]) -> None:
    """Evaluate the splits `evaluation` in one call and write a record per split: a failed marker for each when
    the call raises, or for a split it leaves out."""
    started = time.perf_counter()
    splits = list(evaluation)
    named = [s for s in splits if s != TEST]
    cell = (f"{job.where}, {evaluator.name}" + (f" (seed {seed})" if len(context.seeds) > 1 else "")
            + (f" [{', '.join(splits)}]" if named else ""))
    log.info("%s: evaluating", cell)
    try:
        results = call_evaluate_splits(evaluator, train, evaluation, seed, context.settings)
        if missing := [s for s in splits if s not in results]:
            raise HarnessError(f"evaluator {evaluator.name!r}: evaluate_splits returned no result for split(s) "
                               f"{missing}; it must return one per split it is given")
    except Exception as error:  # noqa: BLE001 - one failing cell must not stop the others
        text = _log_failure(error, f"{job.where}, evaluator {evaluator.name}", " failed")
        which = f" (seed {seed})" if len(context.seeds) > 1 else ""
        cell_timings = {**timings, "evaluate_s": round(time.perf_counter() - started, 3)}
        for split in splits:
            where = "" if split == TEST else f" [{split}]"
            context.report.failures.append(CellFailure(job.planned.label, job.dataset.name, evaluator.name,
                                                       f"{type(error).__name__}: {error}{which}{where}"))
            _write_failed_marker(context, pair.record(evaluator, seed, split=split, error=text, timings=cell_timings))
        return
    # One call scored every split: its time is each record's evaluate_s.
    cell_timings = {**timings, "evaluate_s": round(time.perf_counter() - started, 3)}
    for split in splits:
        result = results[split]
        record = pair.record(evaluator, seed, split=split, result=result, timings=cell_timings)
        score = "—" if result.main_score is None else f"{result.main_score:.3f}"
        log.info("%s%s: %s %s, %.1f s", cell, "" if split == TEST or len(splits) == 1 else f" {split}",
                 result.main_metric, score, cell_timings["evaluate_s"])
        path = write_record(context.config.results_dir, record, result.predictions, result.artifacts)
        context.report.records.append(load_record(path))  # exactly what is on disk, file names of its arrays included
        context.report.record_paths.append(path)


def _write_extraction_failures(context: RunContext, job: PairJob, error: str) -> None:
    """A failed marker per cell of an encoder whose extraction failed, so the results say what happened."""
    pair = PairRecords.failed_extraction(job.planned, job.dataset, job.info, job.options.device, context.command)
    for evaluator in job.evaluators:
        for seed in context.seeds:
            for split in splits_of(evaluator, job.evaluation):
                _write_failed_marker(context, pair.record(evaluator, seed, split=split,
                                                          error=f"extraction failed: {error}"))


def _write_failed_marker(context: RunContext, record: ResultRecord) -> None:
    """Write a failed marker, unless the cell already has a finished result: one cell key is one measurement, so
    a failure now (a full disk, a flaky plugin) must not destroy the result an earlier run computed."""
    results_dir = context.config.results_dir
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


def _short(error: Exception) -> str:
    """A failure as the report lists it; a HarnessError's message says what to do on its own."""
    return str(error) if isinstance(error, HarnessError) else f"{type(error).__name__}: {error}"


def _log_failure(error: Exception, where: str, failed: str) -> str:
    """Log a failure (`where` + `failed`) and return the text its failed records keep: a HarnessError is the user's
    to fix and says how, so it is one line; anything else is a bug somewhere and keeps its traceback."""
    if isinstance(error, HarnessError):
        log.error("%s: %s", where, error)
        return str(error)
    text = traceback.format_exc()
    log.error("%s%s:\n%s", where, failed, text)
    return text


def call_evaluate(evaluator: Evaluator, train: Embeddings | None, test: Embeddings, seed: int,
                  settings: ExecutionSettings) -> EvaluationResult:
    """`evaluator.evaluate(...)` with the execution settings; an evaluator written before 0.2, whose `evaluate` takes
    `device` instead of `settings`, gets the device alone (and a deprecation warning once per evaluator class)."""
    parameters = inspect.signature(evaluator.evaluate).parameters
    if "settings" in parameters:
        return evaluator.evaluate(train, test, seed=seed, settings=settings)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):  # either contract may read it
        return evaluator.evaluate(train, test, seed=seed, settings=settings, device=settings.device)
    if type(evaluator) not in _LEGACY_WARNED:
        _LEGACY_WARNED.add(type(evaluator))
        log.warning("evaluator %r takes evaluate(..., device=) (the pre-0.2 contract): it gets the device but not "
                    "the memory budget; take `settings: ExecutionSettings` instead (docs/plugins.md)", evaluator.name)
    return evaluator.evaluate(train, test, seed=seed, device=settings.device)


_LEGACY_WARNED: set[type] = set()
