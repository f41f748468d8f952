"""Result records: one JSON file per cell, validated against the schema when written and when read.

    <results>/<encoder>/<dataset>/<evaluator>/<protocol>[-o<options hash>]/seed-<n>.json
                                                                          seed-<n>.predictions.npz

Path parts are made safe (no separators, no leading dots) so names like `imagefolder:../x` or
`timm:vit@/w.pth` can never write outside the results directory. Records are written last and atomically, so a
record on disk always has its predictions beside it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.files import AtomicWrites, remove_stale_temps, writes_into
from harness.store import canonical_json

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schema" / "result-record.schema.json"
VERSIONED_DISTRIBUTIONS = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scikit-learn",
                           "umap-learn", "hdbscan", "pluggy")


def cell_key(encoder: str, dataset: str, evaluator: str, protocol: str, options: dict[str, Any], seed: int) -> str:
    """Records with one cell key are the same measurement; anything else is another cell."""
    payload = [encoder, dataset, evaluator, protocol, options, seed]
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def safe_part(name: str, limit: int = 80) -> str:
    """A path component for an arbitrary name: readable where possible, unique via a hash where changed."""
    slug = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "x"
    if slug != name or len(slug) > limit:
        slug = f"{slug[:limit]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slug


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(options).encode()).hexdigest()[:8]


def record_path(results_dir: Path, record: dict[str, Any]) -> Path:
    evaluator = record["evaluator"]
    protocol_dir = safe_part(evaluator["protocol"].replace("/", "-"))
    if evaluator.get("non_default_options"):
        protocol_dir += f"-o{options_hash(evaluator['non_default_options'])}"
    return (results_dir / safe_part(record["encoder"]["name"]) / safe_part(record["dataset"]["name"])
            / safe_part(evaluator["name"]) / protocol_dir / f"seed-{int(record['seed'])}.json")


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
    for name, array in (artifacts or {}).items():
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
    """Every record under `results_dir` (hidden temporary files ignored); a bad file is an error naming it."""
    root = Path(results_dir)
    if not root.is_dir():
        raise HarnessError(f"results directory {str(root)!r} does not exist; run `harness run` first")
    paths = sorted(p for p in root.rglob("seed-*.json") if not p.name.startswith("."))
    return [load_record(p) for p in paths]


def load_predictions(record: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if not record.get("predictions_file"):
        return None
    path = Path(record["_path"]).with_name(record["predictions_file"])
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
