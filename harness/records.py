"""Result records: one JSON file per cell, validated against the schema when written and when read.

    <results>/<encoder>/<dataset>/<evaluator>/<protocol>[-o<options hash>]/seed-<n>.json
                                                                          seed-<n>.predictions.npz
                                                                          <split>/seed-<n>.json  (not test)

Path parts are made safe (no separators, no leading dots) so names like `imagefolder:../x` or
`timm:vit@/w.pth` can never write outside the results directory. Records are written last and atomically, so a
record on disk always has its predictions beside it.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.defaults import DEFAULT_RESULTS_DIR
from harness.errors import HarnessError
from harness.eval_splits import TEST
from harness.files import AtomicWrites, remove_stale_temps, writes_into
from harness.store import canonical_json

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schema" / "result-record.schema.json"
log = logging.getLogger(__name__)

VERSIONED_DISTRIBUTIONS = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scikit-learn",
                           "umap-learn", "hdbscan", "pluggy")


def cell_key(encoder: str, dataset: str, evaluator: str, protocol: str, options: dict[str, Any], seed: int,
             split: str = TEST) -> str:
    """Records with one cell key are the same measurement; anything else is another cell. The evaluation split is
    part of the key only when it is not `test`, so records made before evaluation splits existed keep theirs."""
    payload: list[Any] = [encoder, dataset, evaluator, protocol, options, seed]
    if split != TEST:
        payload.append(split)
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def safe_part(name: str, limit: int = 80) -> str:
    """A path component for an arbitrary name: readable where possible, unique via a hash where changed."""
    slug = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "x"
    if slug != name or len(slug) > limit:
        slug = f"{slug[:limit]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slug


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(options).encode()).hexdigest()[:8]


def split_of(record: dict[str, Any]) -> str:
    """The evaluation split a record measures (`test` for records without a `split` key)."""
    return record.get("split") or TEST


def dataset_column(record: dict[str, Any]) -> str:
    """The dataset part of a record's leaderboard column: its name, then `[split]` for a split other than test."""
    split = split_of(record)
    return record["dataset"]["name"] + ("" if split == TEST else f" [{split}]")


def record_path(results_dir: Path, record: dict[str, Any]) -> Path:
    evaluator = record["evaluator"]
    protocol_dir = safe_part(evaluator["protocol"].replace("/", "-"))
    if evaluator.get("non_default_options"):
        protocol_dir += f"-o{options_hash(evaluator['non_default_options'])}"
    folder = (results_dir / safe_part(record["encoder"]["name"]) / safe_part(record["dataset"]["name"])
              / safe_part(evaluator["name"]) / protocol_dir)
    if split_of(record) != TEST:  # a folder of its own: nothing else in a protocol folder is a folder
        folder /= safe_part(split_of(record))
    return folder / f"seed-{int(record['seed'])}.json"


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate(record: dict[str, Any], source: str = "record") -> None:
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:5])
        raise HarnessError(f"{source} does not match the result-record schema (version {SCHEMA_VERSION}): {details}")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    from harness import __version__

    versions = {"harness": __version__, "python": platform.python_version()}
    for dist in VERSIONED_DISTRIBUTIONS:
        try:
            versions[dist.replace("-", "_")] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def to_json_safe(value: Any) -> Any:
    """numpy scalars/arrays to Python; NaN or inf is refused (a metric that cannot be computed is None)."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise HarnessError(f"a metric is {value}; evaluators must report None with a reason instead")
    return value


def write_record(results_dir: str | os.PathLike, record: dict[str, Any],
                 predictions: dict[str, np.ndarray] | None = None,
                 artifacts: dict[str, np.ndarray] | None = None) -> Path:
    """Validate and write one record: predictions and artifacts first, the record last, all renamed into place
    only once every file is on disk (so a full disk or a kill leaves an existing record and its arrays as they
    were). A full or read-only results directory is a HarnessError naming it."""
    results_dir = Path(results_dir)
    record = to_json_safe(record)
    path = record_path(results_dir, record)
    stem = path.name[: -len(".json")]
    record["predictions_file"] = None
    record["artifacts"] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    if predictions:
        record["predictions_file"] = f"{stem}.predictions.npz"
        arrays[record["predictions_file"]] = predictions
    for name, array in (artifacts or {}).items():  # `<stem>.*.npz`, the naming `files_beside` relies on
        record["artifacts"][name] = f"{stem}.{safe_part(name)}.npz"
        arrays[record["artifacts"][name]] = {name: array}
    validate(record, source=f"record for {path}")
    with writes_into(results_dir, "results directory", "--results-dir"):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)  # what a killed process was writing here
        with AtomicWrites() as writes:
            for file_name, content in arrays.items():
                with writes.file(path.with_name(file_name)) as handle:
                    np.savez_compressed(handle, **{k: np.asarray(v) for k, v in content.items()})
            with writes.file(path, "w") as handle:
                handle.write(json.dumps(record, indent=2, allow_nan=False, default=str))
    return path


def load_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise HarnessError(f"result file {str(path)!r} is not valid JSON ({error}); remove it or rerun its cell") from error
    if not isinstance(record, dict):
        raise HarnessError(f"result file {str(path)!r} holds no record object")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise HarnessError(f"result file {str(path)!r} has schema_version {record.get('schema_version')!r}; this "
                           f"harness reads version {SCHEMA_VERSION}")
    validate(record, source=f"result file {str(path)!r}")
    record["_path"] = str(path)
    return record


def load_records(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record under `results_dir` (hidden temporary files ignored); a bad file is an error naming it.

    Result directories from several machines are merged by copying them together, so the records are also
    checked against each other (`merge_records`): one measurement held twice is kept once, anything that would
    make a table silently wrong is an error naming the files."""
    return merge_records([load_record(p) for p in record_paths(results_dir)])


def with_results_dir(command: str, results_dir: str | os.PathLike) -> str:
    """A command to paste: it names --results-dir when `results_dir` is not the default."""
    results_dir = str(results_dir)
    return command if results_dir == DEFAULT_RESULTS_DIR else f"{command} --results-dir {shlex.quote(results_dir)}"


def record_paths(results_dir: str | os.PathLike) -> list[Path]:
    """The record files under `results_dir`, at any depth, sorted (hidden temporary files ignored)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise HarnessError(f"results directory {str(root)!r} does not exist; run `harness run` first")
    return sorted(p for p in root.rglob("seed-*.json") if not p.name.startswith("."))


def files_beside(path: Path) -> list[Path]:
    """The files `write_record` puts beside the record at `path` (`<stem>.predictions.npz`, `<stem>.<artifact>.npz`).

    Found by that naming rather than read from the record, so a file an earlier record of the same cell left there
    is found too: in one folder, `<stem>.` belongs to one cell alone."""
    stem = path.name[: -len(".json")]
    return sorted(p for p in path.parent.glob(f"{glob.escape(stem)}.*.npz") if p.is_file())


def _measurement(record: dict[str, Any]) -> tuple[str, str, str, str, int]:
    """Where a record lands in a table: (encoder, dataset column, evaluator, options, seed); the protocol is not
    part of it, which is exactly why two protocols must never meet there."""
    evaluator = record["evaluator"]
    return (record["encoder"]["name"], dataset_column(record), evaluator["name"],
            canonical_json(evaluator.get("non_default_options") or {}), int(record["seed"]))


def merge_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check records loaded together (e.g. copied from several machines) against each other.

    - Two records of one cell (encoder, dataset, evaluator, protocol, options, seed) with the same status, metrics
      and main score are the same measurement: the first (by path) is kept, the other is logged as a duplicate.
    - Two records of one cell that disagree would be averaged into one table cell: an error naming both files.
    - Records of one column (dataset, evaluator, options) under different protocols (e.g. `knn/dino-v1` and a
      later `knn/dino-v2`) would share a column: an error naming one file of each protocol.
    """
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    protocols: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for record in records:
        encoder, dataset, evaluator, options, seed = _measurement(record)
        protocol = record["evaluator"]["protocol"]
        column = protocols.setdefault((dataset, evaluator, options), {})
        column.setdefault(protocol, record)
        if len(column) > 1:
            first, second = (column[p] for p in sorted(column)[:2])
            raise HarnessError(
                f"result files {first['_path']!r} and {second['_path']!r} measure {evaluator} on {dataset} under "
                f"different protocols ({first['evaluator']['protocol']} and {second['evaluator']['protocol']}); "
                f"one table cannot mix them. Keep one protocol per results directory (move the other records "
                f"elsewhere, or rerun them with this harness)")
        cell = (encoder, dataset, evaluator, protocol, options, seed)
        if cell not in kept:
            kept[cell] = record
            continue
        other = kept[cell]
        same = all(other.get(k) == record.get(k) for k in ("status", "metrics", "main_score"))
        if not same:
            # A failed record beside an ok one of its cell (copied from another machine) is the usual case, and
            # rerunning would not help: the run writes a third file.
            way_out = ("`harness results prune --failed` removes the failed one"
                       if {other["status"], record["status"]} == {"ok", "failed"}
                       else "Remove the one you do not trust, or rerun the cell")
            raise HarnessError(
                f"result files {other['_path']!r} and {record['_path']!r} hold the same cell ({encoder} on {dataset}, "
                f"{protocol}, seed {seed}) with different results (main score {other['main_score']!r} vs "
                f"{record['main_score']!r}, status {other['status']} vs {record['status']}); a table would mix "
                f"them. {way_out}")
        log.warning("note: %s duplicates %s (same cell, same results); counted once", record["_path"], other["_path"])
    return list(kept.values())


def load_predictions(record: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if not record.get("predictions_file"):
        return None
    path = Path(record["_path"]).with_name(record["predictions_file"])
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
