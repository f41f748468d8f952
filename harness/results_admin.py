"""Housekeeping of the results directory: list its records, and remove the failed ones.

A failed cell leaves a record with status `failed`. A later successful run of that cell replaces it, but a cell
nobody reruns (a misspelled option, an encoder given up on) keeps its failed record, so they pile up. Only failed
records are ever removed, with the files beside them: an ok record is a measurement, and stays.

Records are read one by one here, not through `load_records`: its merge check refuses a failed and an ok record of
one cell copied in from two machines, and that pair is exactly what pruning the failed records must clear.
Pruning assumes no `harness run` is writing into the directory at the same time (records have no lock): a run
that finishes a failed cell just as prune removes it could lose that new record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.records import files_beside, load_record, record_paths

_TRACEBACK = "Traceback (most recent call last):"


@dataclass
class StoredRecord:
    """One record file, with the files beside it (its predictions and artifacts)."""

    path: Path
    record: dict[str, Any]
    beside: list[Path]
    superseded_by: Path | None = None  # a failed record's: an ok record of the same cell elsewhere in the directory

    @property
    def failed(self) -> bool:
        return self.record["status"] == "failed"


def list_records(results_dir: str | os.PathLike, *, failed_only: bool = False) -> list[StoredRecord]:
    """Every record under `results_dir` (only the failed ones with `failed_only`), in path order. A file that is
    not a valid record is an error naming it, as everywhere else."""
    stored = [StoredRecord(path, load_record(path), files_beside(path)) for path in record_paths(results_dir)]
    ok_cells: dict[str, Path] = {}
    for item in stored:
        if not item.failed:
            ok_cells.setdefault(item.record["cell"], item.path)
    for item in stored:
        if item.failed:
            item.superseded_by = ok_cells.get(item.record["cell"])
    return [item for item in stored if item.failed or not failed_only]


def error_summary(error: str | None) -> str:
    """A failed record's error in one line. A HarnessError is one line already; any other error keeps its
    traceback, whose first line says nothing, so the summary is its last line (the exception), after whatever came
    before the traceback ("extraction failed: ")."""
    lines = [line.strip() for line in (error or "").strip().splitlines() if line.strip()]
    if not lines:
        return "no error recorded"
    before, traceback, _ = lines[0].partition(_TRACEBACK)
    return before + lines[-1] if traceback else lines[0]


def prune_failed(results_dir: str | os.PathLike, *, dry_run: bool = True) -> list[StoredRecord]:
    """Remove every failed record under `results_dir` and the files beside it; return what was removed (with
    `dry_run`, what would be, removing nothing). Folders left empty go too, up to `results_dir` itself."""
    root = Path(results_dir)
    failed = list_records(root, failed_only=True)
    if dry_run:
        return failed
    removed = []
    for item in failed:
        # The record first: a reader then never finds a record whose predictions are gone.
        for path in (item.path, *item.beside):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                raise HarnessError(f"cannot remove {str(path)!r} ({error.strerror or error}); "
                                   f"{len(removed)} failed record(s) were removed before it") from error
        removed.append(item)
        _remove_empty_folders(item.path.parent, root)
    return removed


def _remove_empty_folders(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()  # only ever succeeds on an empty folder
        except OSError:
            return
        folder = folder.parent
