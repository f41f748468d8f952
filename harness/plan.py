"""Planning a run: what it measures, built from names before any work starts, and what a resumed run already has.

Every name is resolved here, so a typo fails in a second, not after an hour of extraction. A resumed run
(`resume=True`) looks for each cell's record: an `ok` record with the same cell key and the same embedding cache
keys is kept, and a pair whose cells are all done is not extracted at all.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.defaults import (DEFAULT_CACHE_DIR, DEFAULT_DATASETS, DEFAULT_ENCODERS, DEFAULT_EVALUATORS,
                              DEFAULT_RESULTS_DIR)
from harness.errors import HarnessError
from harness.eval_splits import TEST, evaluation_splits
from harness.extract import ExtractionOptions, encoder_fingerprint, split_cache_key
from harness.layers import split_choices
from harness.plugin_manager import Plugins, get_plugins
from harness.records import cell_key, library_versions, load_record, record_path, record_paths, safe_part
from harness.shared_forward import forward_groups
from harness.types import Encoder, Evaluator

log = logging.getLogger(__name__)

#: The splits a pair may need, in the order they are extracted.
SPLITS = ("train", "val", "test")


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
    evaluators: Sequence[str] = DEFAULT_EVALUATORS
    results_dir: str | Path = DEFAULT_RESULTS_DIR
    cache_dir: str | Path = DEFAULT_CACHE_DIR
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    seed: int = 0
    seeds: Sequence[int] | None = None  # several evaluation seeds (one record each); None: (seed,)
    resume: bool = False  # keep cells whose ok record has the same cell key and cache keys
    force: bool = False  # write even where the results hold a row of the same name from another encoder
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
class PlannedEncoder:
    """An encoder of the plan: built (not loaded), with the row name its records get."""

    label: str
    encoder: Encoder
    batch_size: int | None = None
    baseline: bool | None = None
    #: The encoders of the plan that share this one's forward pass (itself included), or empty.
    siblings: list[Encoder] = field(default_factory=list)


def run_seeds(config: RunConfig) -> list[int]:
    return [int(s) for s in (config.seeds if config.seeds is not None else (config.seed,))]


def encoder_label(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The name a record shows: non-default encoder options make another row, never a silent merge."""
    shown = {k: v for k, v in options.items() if defaults.get(k, object()) != v}
    return name if not shown else f"{name}[{','.join(f'{k}={v}' for k, v in sorted(shown.items()))}]"


def layer_choices(options: dict[str, Any]) -> list[dict[str, Any]]:
    """The `layers` option of each encoder a comma list of layer choices makes (`harness.layers`); [{}] for an
    encoder that does not take the option."""
    if "layers" not in options:
        return [{}]
    return [{"layers": choice} for choice in split_choices(options["layers"])]


def options_for(factory: Any, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options a factory accepts (`--pooling` means nothing to `pixels`), and its defaults."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = {k: v for k, v in options.items() if takes_any or k in parameters}
    defaults = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return accepted, defaults


def spec_label(spec: EncoderSpec, plugins: Plugins) -> str:
    """The row name of an encoder spec: its label, else its name plus its non-default options."""
    _, defaults = options_for(plugins.encoders.resolve(spec.name)[0].factory, {})
    return spec.label or encoder_label(spec.display_name or spec.name, spec.options, defaults)


def build_encoders(config: RunConfig, plugins: Plugins) -> list[PlannedEncoder]:
    built = []
    for spec in config.encoders:
        if isinstance(spec, Encoder):
            built.append(PlannedEncoder(spec.name, spec))
            continue
        if isinstance(spec, EncoderSpec):
            encoder = plugins.encoder(spec.name, **spec.options)
            built.append(PlannedEncoder(spec_label(spec, plugins), encoder, spec.batch_size, spec.baseline))
            continue
        entry, _ = plugins.encoders.resolve(spec)
        options, defaults = options_for(entry.factory, config.encoder_options)
        for choice in layer_choices(options):  # `--layers last,last4`: an encoder (and a row) per choice
            encoder = plugins.encoder(spec, **{**options, **choice})
            built.append(PlannedEncoder(encoder_label(spec, {**options, **choice}, defaults), encoder))
    for group in forward_groups([planned.encoder for planned in built]):  # one forward pass for each group
        for planned in built:
            if any(planned.encoder is member for member in group):
                planned.siblings = group
    if config.storage_dtype != "float32":  # features rounded for storage are another measurement: another row
        for planned in built:
            planned.label = f"{planned.label}[storage={config.storage_dtype}]"
    return built


def build_dataset(spec: str | DatasetSpec, config: RunConfig, plugins: Plugins) -> Any:
    if isinstance(spec, DatasetSpec):
        entry, _ = plugins.datasets.resolve(spec.name)
        shared, defaults = options_for(entry.factory, config.dataset_options)  # data_root: where, not what
        dataset = plugins.dataset(spec.name, **shared, **spec.options)
        # A prefix dataset's path is its identity: data/x, ./data/x and data/x/ must be one column.
        name = plugins.datasets.canonical(spec.display_name or spec.name)
        dataset.name = encoder_label(name, spec.options, defaults)
        return dataset
    return plugins.dataset(spec, **options_for(plugins.datasets.resolve(spec)[0].factory, config.dataset_options)[0])


def build_evaluators(config: RunConfig, plugins: Plugins) -> list[Evaluator]:
    return [plugins.evaluator(name, **config.evaluator_options.get(name, {})) for name in config.evaluators]


def plan_cells(config: RunConfig, plugins: Plugins | None = None) -> list[str]:
    """The cell keys a run of `config` measures (before skipping what a dataset cannot feed), without running
    anything: to compare two ways of asking for a run, e.g. a suite file and command-line flags."""
    plugins = plugins or get_plugins()
    evaluators = build_evaluators(config, plugins)
    datasets = [build_dataset(spec, config, plugins) for spec in config.datasets]
    splits = {d.name: evaluation_splits(d.name, d.info()) for d in datasets}
    return [cell_key(planned.label, d.name, e.name, e.protocol, e.options, seed, split)
            for planned in build_encoders(config, plugins) for d in datasets
            for e in evaluators for seed in run_seeds(config) for split in splits_of(e, splits[d.name])]


def usable_evaluators(dataset: Any, info: dict[str, Any],
                      evaluators: list[Evaluator]) -> tuple[list[Evaluator], list[str]]:
    """The evaluators this dataset can feed, and a message for each one it cannot (no labels, a missing split)."""
    usable, skipped = [], []
    for evaluator in evaluators:
        if evaluator.requires_labels and not info.get("class_names"):
            skipped.append(f"{evaluator.name} skipped on {dataset.name}: it needs labels and the dataset has none")
        elif missing := [s for s in evaluator.needs if s not in info["splits"]]:
            skipped.append(f"{evaluator.name} skipped on {dataset.name}: no split(s) {missing}")
        else:
            usable.append(evaluator)
    return usable, skipped


def splits_of(evaluator: Evaluator, evaluation: Sequence[str]) -> list[str]:
    """The evaluation splits an evaluator is scored on: every one when it reads `test`, else `test` alone (the
    split its single record has always been filed under)."""
    return list(evaluation) if TEST in evaluator.needs else [TEST]


def needed_splits(evaluators: Sequence[Evaluator], evaluation: Sequence[str] = (TEST,)) -> list[str]:
    """The splits to extract for these evaluators: what they need, `test` standing for every evaluation split."""
    needed = [s for s in SPLITS if any(s in e.needs for e in evaluators)]
    if TEST in needed:
        needed[needed.index(TEST):needed.index(TEST) + 1] = evaluation
    return needed


@dataclass
class DoneCells:
    """What a resumed run finds for one (encoder, dataset): the finished records by (evaluator, seed), and the
    cache keys it computed to compare with theirs, which extraction then reuses instead of fingerprinting again."""

    records: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)  # by (evaluator, seed, split)
    cache_keys: dict[str, str] = field(default_factory=dict)


def done_cells(label: str, encoder: Encoder, dataset: Any, needed: list[str], evaluators: list[Evaluator],
               options: ExtractionOptions, config: RunConfig, evaluation: Sequence[str] = (TEST,)) -> DoneCells:
    """The cells of this pair that an earlier run already measured: an `ok` record at the cell's path with the same
    cell key and the same embedding cache keys (computed from fingerprints: no model is loaded or run). Anything
    else (no record, a failed marker, other weights or data, an unreadable file) is measured again."""
    keys = {split: split_cache_key(encoder, dataset, split, dataset.split(split), options)[0] for split in needed}
    done = DoneCells(cache_keys=keys)
    for evaluator in evaluators:
        for seed in run_seeds(config):
            for split in splits_of(evaluator, evaluation):
                record = _finished_record(label, dataset.name, evaluator, seed, split, config.results_dir)
                if record is None:
                    continue
                same_cell = record["cell"] == cell_key(label, dataset.name, evaluator.name, evaluator.protocol,
                                                       evaluator.options, seed, split)
                read = [split if s == TEST else s for s in evaluator.needs]  # `test` stands for the split scored
                same_data = all(record["cache_keys"].get(s) == keys[s] for s in read)
                if record["status"] == "ok" and same_cell and same_data:
                    done.records[evaluator.name, seed, split] = record
    return done


def _finished_record(label: str, dataset_name: str, evaluator: Evaluator, seed: int, split: str,
                     results_dir: str | Path) -> dict[str, Any] | None:
    """The record at this cell's path, if there is a readable one."""
    stub = {"encoder": {"name": label}, "dataset": {"name": dataset_name}, "seed": seed,
            "evaluator": {"name": evaluator.name, "protocol": evaluator.protocol,
                          "non_default_options": evaluator.non_default_options}, "split": split}
    path = record_path(Path(results_dir), stub)
    if not path.is_file():
        return None
    try:
        return load_record(path)
    except HarnessError as error:
        log.warning("%s; its cell is measured again", error)
        return None


def check_row_name(planned: PlannedEncoder, options: ExtractionOptions, results_dir: str | Path) -> None:
    """Refuse a row name that records in `results_dir` already give to another encoder (other weights, another
    model): its new results would silently replace some of those and sit beside the others in one leaderboard row.
    Other library versions, another device's precision or weights moved to another path are the same encoder."""
    folder = Path(results_dir) / safe_part(planned.label)
    if not folder.is_dir():
        return
    try:
        mine = _identity(encoder_fingerprint(planned.encoder, options.device))
    except Exception:  # noqa: BLE001 - an encoder too broken to fingerprint fails its own cells later
        return
    if options.storage_dtype != "float32":  # as `split_cache_key` records it: another row, not another encoder
        mine["storage_dtype"] = options.storage_dtype
    for path in record_paths(folder):
        try:
            record = load_record(path)
        except HarnessError:
            continue
        if record["status"] != "ok" or record["encoder"]["name"] != planned.label:
            continue
        theirs = _identity(record["encoder"]["fingerprint"])
        if theirs != mine:
            differs = ", ".join(sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)))
            raise HarnessError(
                f"{str(results_dir)!r} already holds results of a row named {planned.label!r} from another encoder "
                f"(it differs in: {differs}; {path}). Give this one another name (a suite's `label`, "
                f"evaluate_model(name=...)), or another --results-dir; --force (force=True in the API) measures it "
                f"under this name anyway, replacing those cells (remove {str(folder)!r} first to drop the row's other cells)")


def _identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """An encoder fingerprint without what does not make it another encoder: library versions, the precision
    the device chose, and where a weights file lies (its hash stays)."""
    versions = set(library_versions()) | {"open_clip"}  # open_clip_torch's own name for itself

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "path"}
        return value

    return {k: strip(v) for k, v in fingerprint.items() if k not in versions and k != "precision"}
