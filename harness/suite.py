"""Suite files: a TOML description of a whole evaluation (encoders x datasets x evaluators x seeds).

A suite is data, parsed with `tomllib` and never executed: a file holding Python is a TOML syntax error naming the
file and the line. Everything is checked before any work starts: unknown keys (with close matches), wrong types,
unknown encoder/dataset/evaluator names, options a plugin does not take, weights files that do not exist.

Paths in a suite (results_dir, cache_dir, data_root, weights, dataset paths) resolve against the suite file's
folder. The places a suite may make the harness *write* (results_dir, cache_dir, data_root) must stay inside that
folder: a suite someone sent you cannot point the harness at `~/.ssh` or `/etc`. Writing elsewhere is the decision
of the person running it, through --results-dir / --cache-dir / --data-root. Weights files and datasets are only
read, and may live anywhere.

    [suite]
    name = "my-checkpoint"            # optional
    seeds = [0, 1, 2]                 # evaluation seeds, one record each (default [0])
    results_dir = "results"           # default: ./results of the current directory, as `harness run`
    cache_dir = ".harness-cache"      # default: ./.harness-cache
    device = "auto"                   # optional, as --device; likewise batch_size, workers, skip_bad_images
    data_root = "data"                # optional: where torchvision sets are downloaded (inside this folder)
    baselines = ["pixels"]            # rows marked as baselines (default: untrained and pixel encoders)

    [[encoders]]                      # repeatable
    name = "timm:vit_small_patch16_224"
    weights = "checkpoints/dino.pth"  # optional: `name@weights`, resolved against this folder
    label = "dino-vits16"             # optional: the row name
    pooling = "cls"                   # optional, as --pooling
    layers = "dinov2"                 # optional, one choice of --layers (repeat the table for others)
    batch_size = 32                   # optional, this encoder only
    options = { init_seed = 1 }       # optional: other keyword options of the encoder's factory

    [[datasets]]                      # repeatable
    name = "imagefolder"
    path = "data/my-set"              # optional: `name:path`, resolved against this folder
    options = { classes = 3 }         # optional: keyword options of the dataset's factory

    [[evaluators]]                    # repeatable; default: every built-in evaluator but opt-in presets
    name = "clustering"
    options = { reduce = "pca" }
"""

from __future__ import annotations

import difflib
import os
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the `tomli` backport (a dependency there)
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.layers import single_choice
from harness.plugin_manager import Plugins
from harness.runner import DatasetSpec, EncoderSpec, RunConfig, options_for, spec_label

SUITE_KEYS = {"name": str, "description": str, "seeds": list, "results_dir": str, "cache_dir": str,
              "data_root": str, "device": str, "batch_size": int, "workers": int, "skip_bad_images": bool,
              "baselines": list}
ENCODER_KEYS = {"name": str, "label": str, "weights": str, "pooling": str, "layers": str, "batch_size": int,
                "options": dict}
DATASET_KEYS = {"name": str, "path": str, "options": dict}
EVALUATOR_KEYS = {"name": str, "options": dict}
TOP_KEYS = {"suite": dict, "encoders": list, "datasets": list, "evaluators": list}
#: Longest path or name accepted from a suite; longer ones are refused rather than passed to the OS.
MAX_TEXT = 1024


@dataclass
class Suite:
    """A validated suite: the run it describes, and where it came from."""

    path: Path
    name: str
    config: RunConfig


class SuiteError(HarnessError):
    """A suite file that cannot be run; the message names the file, the key and what to do."""


def _fail(path: Path, where: str, message: str) -> SuiteError:
    return SuiteError(f"suite {str(path)!r}: {where}: {message}" if where else f"suite {str(path)!r}: {message}")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}[kind]


def _check_table(path: Path, where: str, table: Any, allowed: dict[str, type], required: tuple[str, ...] = ()) -> None:
    if not isinstance(table, dict):
        raise _fail(path, where, f"must be a table, not {type(table).__name__}")
    for key, value in table.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise _fail(path, f"{where}.{key}" if where else key,
                        f"unknown key{hint} (allowed here: {', '.join(sorted(allowed))})")
        kind = allowed[key]
        # bool is an int in Python; `batch_size = true` must still be refused
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _fail(path, f"{where}.{key}" if where else key,
                        f"must be {_type_name(kind)}, not {type(value).__name__} {value!r}")
        if isinstance(value, str):
            _check_text(path, f"{where}.{key}" if where else key, value)
    for key in required:
        if key not in table:
            raise _fail(path, where, f"missing key {key!r}")


def _check_text(path: Path, where: str, value: str) -> None:
    if "\x00" in value:
        raise _fail(path, where, "contains a NUL character")
    if len(value) > MAX_TEXT:
        raise _fail(path, where, f"is {len(value)} characters long; at most {MAX_TEXT} are accepted")
    if not value.strip():
        raise _fail(path, where, "is empty")


def _positive(path: Path, where: str, value: int, low: int = 1) -> int:
    if value < low:
        raise _fail(path, where, f"must be at least {low}, not {value}")
    return value


def _read_path(base: Path, value: str) -> Path:
    """A path that is only read (weights, data): `~` expanded, relative ones against the suite's folder."""
    return (base / Path(value).expanduser()).resolve()


def _write_path(path: Path, where: str, value: str) -> Path:
    """A place the harness writes to: relative, and inside the suite's folder once resolved."""
    base = path.parent.resolve()
    if value.startswith("~") or Path(value).is_absolute():
        raise _fail(path, where, f"{value!r} is not a path relative to the suite's folder; a suite may only write "
                                 f"inside {str(base)!r} (pass --results-dir/--cache-dir/--data-root to write "
                                 f"elsewhere)")
    resolved = (base / value).resolve()
    if resolved != base and base not in resolved.parents:
        raise _fail(path, where, f"{value!r} leads outside the suite's folder {str(base)!r}; a suite may only write "
                                 f"inside it (pass --results-dir/--cache-dir/--data-root to write elsewhere)")
    return resolved


def _table_list(path: Path, data: dict[str, Any], key: str, allowed: dict[str, type]) -> list[dict[str, Any]]:
    tables = data.get(key, [])
    for index, table in enumerate(tables):
        _check_table(path, f"{key}[{index}]", table, allowed, required=("name",))
    return tables


def parse_suite_file(path: str | os.PathLike) -> dict[str, Any]:
    """The file as data, after the structural checks (keys and types); TOML only, nothing evaluated."""
    path = Path(path).expanduser()
    try:
        text = path.read_bytes()
    except OSError as error:
        raise SuiteError(f"cannot read suite file {str(path)!r}: {error.strerror or error}") from error
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SuiteError(f"suite {str(path)!r} is not UTF-8 text ({error}); a suite is a TOML file") from error
    except tomllib.TOMLDecodeError as error:  # its message ends "(at line L, column C)"
        raise SuiteError(f"suite {str(path)!r} is not valid TOML: {error}. A suite is data (TOML), never code; "
                         f"see examples/suites/ for the format") from error
    _check_table(path, "", data, TOP_KEYS)
    _check_table(path, "suite", data.get("suite", {}), SUITE_KEYS)
    _table_list(path, data, "encoders", ENCODER_KEYS)
    _table_list(path, data, "datasets", DATASET_KEYS)
    _table_list(path, data, "evaluators", EVALUATOR_KEYS)
    if not data.get("encoders"):
        raise _fail(path, "encoders", "the suite lists no encoder; add at least one [[encoders]] table with a name")
    if not data.get("datasets"):
        raise _fail(path, "datasets", "the suite lists no dataset; add at least one [[datasets]] table with a name")
    return data


def _check_options(path: Path, where: str, kind: str, name: str, factory: Any, options: dict[str, Any]) -> None:
    accepted, _ = options_for(factory, options)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        import inspect

        known = [p for p in inspect.signature(factory).parameters if p not in ("argument", "self")]
        raise _fail(path, where, f"{kind} {name!r} takes no option(s) {', '.join(map(repr, unknown))}"
                                 f" (it takes: {', '.join(known) or 'none'})")


def load_suite(path: str | os.PathLike, plugins: Plugins, default_evaluators: list[str]) -> Suite:
    """Parse and validate a suite file into a RunConfig; every name is resolved here, before any work."""
    path = Path(path).expanduser()
    data = parse_suite_file(path)
    base = path.parent.resolve()
    head = data.get("suite", {})
    config = RunConfig(resume=True)
    _apply_head(path, head, config)
    config.encoders = _encoder_specs(path, base, head, data["encoders"], plugins)
    config.datasets = [_dataset_spec(path, base, f"datasets[{index}]", table, plugins)
                       for index, table in enumerate(data["datasets"])]
    config.evaluators, config.evaluator_options = _evaluators(
        path, data.get("evaluators") or [{"name": n} for n in default_evaluators], plugins)
    return Suite(path, head.get("name", path.stem), config)


def _apply_head(path: Path, head: dict[str, Any], config: RunConfig) -> None:
    """The `[suite]` table: places, device, batch size, workers, seeds."""
    for key, attribute in (("results_dir", "results_dir"), ("cache_dir", "cache_dir")):
        if key in head:
            setattr(config, attribute, _write_path(path, f"suite.{key}", head[key]))
    if "data_root" in head:
        config.dataset_options = {"data_root": str(_write_path(path, "suite.data_root", head["data_root"]))}
    if "device" in head:
        config.device = head["device"]
    if "batch_size" in head:
        config.batch_size = _positive(path, "suite.batch_size", head["batch_size"])
    if "workers" in head:
        config.workers = _positive(path, "suite.workers", head["workers"], low=0)
    config.skip_bad_images = head.get("skip_bad_images", False)
    seeds = head.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise _fail(path, "suite.seeds", f"must be a non-empty list of integers >= 0, not {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(path, "suite.seeds", f"lists a seed twice: {seeds}")
    config.seeds = list(seeds)
    config.seed = seeds[0]


def _encoder_specs(path: Path, base: Path, head: dict[str, Any], tables: list[dict[str, Any]],
                   plugins: Plugins) -> list[EncoderSpec]:
    """The `[[encoders]]` tables, each its own row, with the `[suite] baselines` marked."""
    encoders = [_encoder_spec(path, base, f"encoders[{index}]", table, plugins) for index, table in enumerate(tables)]
    labels = [spec_label(spec, plugins) for spec in encoders]
    for label in labels:
        if labels.count(label) > 1:
            raise _fail(path, "encoders", f"two encoders make the same row {label!r}; give one a `label`")
    baselines = head.get("baselines")
    if baselines is not None:
        for name in baselines:
            if not isinstance(name, str) or name not in labels:
                close = difflib.get_close_matches(str(name), labels, n=3, cutoff=0.5)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise _fail(path, "suite.baselines", f"{name!r} is not one of the suite's encoders{hint} "
                                                     f"(its rows: {', '.join(labels)})")
        for spec, label in zip(encoders, labels):
            spec.baseline = label in baselines
    return encoders


def _dataset_spec(path: Path, base: Path, where: str, table: dict[str, Any], plugins: Plugins) -> DatasetSpec:
    name = table["name"]
    options = table.get("options", {})
    display = None
    if "path" in table:
        if ":" in name:
            raise _fail(path, where, f"give either a path in the name ({name!r}) or a `path` key, not both")
        display = plugins.datasets.canonical(f"{name}:{table['path']}")  # one spelling, one column
        name = f"{name}:{_read_path(base, table['path'])}"
    entry = _resolve(path, f"{where}.name", plugins.datasets, name)
    _check_options(path, f"{where}.options", "dataset", table["name"], entry.factory, options)
    return DatasetSpec(name, options, display_name=display)


def _evaluators(path: Path, tables: list[dict[str, Any]],
                plugins: Plugins) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The `[[evaluators]]` names and options, each option set checked by its evaluator."""
    names: list[str] = []
    options: dict[str, dict[str, Any]] = {}
    for index, table in enumerate(tables):
        where = f"evaluators[{index}]"
        if table["name"] in options:
            raise _fail(path, where, f"evaluator {table['name']!r} is listed twice")
        _resolve(path, f"{where}.name", plugins.evaluators, table["name"])
        try:
            plugins.evaluator(table["name"], **table.get("options", {}))  # its own checks of its options
        except HarnessError as error:
            raise _fail(path, f"{where}.options", str(error)) from error
        names.append(table["name"])
        options[table["name"]] = dict(table.get("options", {}))
    return names, options


def _resolve(path: Path, where: str, registry: Any, name: str) -> Any:
    try:
        return registry.resolve(name)[0]
    except HarnessError as error:
        raise _fail(path, where, str(error)) from error


def _encoder_spec(path: Path, base: Path, where: str, table: dict[str, Any], plugins: Plugins) -> EncoderSpec:
    name = table["name"]
    options = dict(table.get("options", {}))
    for key in ("pooling", "layers"):
        if key in table:
            if key in options:
                raise _fail(path, where, f"{key} is given twice (as `{key}` and in `options`)")
            options[key] = table[key]
    if "layers" in options:
        try:
            options["layers"] = single_choice(options["layers"], name).spelling  # one row per table
        except HarnessError as error:
            raise _fail(path, f"{where}.layers", str(error)) from error
    display = None
    entry = _resolve(path, f"{where}.name", plugins.encoders, name)
    if "weights" in table and not entry.prefix:
        raise _fail(path, f"{where}.weights", f"encoder {name!r} takes no weights file; `weights` is for prefix "
                                              f"encoders such as timm:<model> or open_clip:<model>")
    if "weights" in table:
        if "@" in name:
            raise _fail(path, where, f"give the weights either in the name ({name!r}) or as `weights`, not both")
        weights = _read_path(base, table["weights"])
        if not weights.is_file():
            raise _fail(path, f"{where}.weights", f"weights file {str(weights)!r} (from {table['weights']!r}) does "
                                                  f"not exist; fix the path (relative paths start at the suite's "
                                                  f"folder {str(base)!r})")
        display = f"{name}@{table['weights']}"
        name = f"{name}@{weights}"
        entry = _resolve(path, f"{where}.name", plugins.encoders, name)
    _check_options(path, f"{where}.options", "encoder", table["name"], entry.factory, options)
    batch_size = _positive(path, f"{where}.batch_size", table["batch_size"]) if "batch_size" in table else None
    return EncoderSpec(name, options, display_name=display, label=table.get("label"), batch_size=batch_size)
