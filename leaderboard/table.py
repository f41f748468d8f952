"""The leaderboard table: rows are encoders, columns are (dataset, evaluator) main scores, then mean and rank.

Built from result records alone. A missing cell is shown as missing, never as zero, and a row with a missing cell has no
mean and no rank (a mean over fewer columns is not comparable);
a cell measured over several seeds shows mean ± standard deviation; a cell with non-default evaluator options is
a column of its own. With `metric` (a metric other than the main score), a column whose records lack that metric
shows "—" with a note and is left out of the mean, so a plugin's own metric can sit beside the built-in columns.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from harness import metric_names as names
from harness.errors import HarnessError
from harness.records import TEST, dataset_column, split_of

FORMATS = ("plain", "github", "latex", "csv", "html")
TABULATE_FORMATS = {"plain": "simple", "github": "github", "latex": "latex_booktabs", "html": "html"}
MISSING = "—"


@dataclass
class Leaderboard:
    columns: list[str]
    rows: list[dict[str, Any]]  # {"encoder", "baseline", "cells": {column: [scores]}, "mean", "rank"}
    notes: list[str] = field(default_factory=list)
    #: The scores shown are of a metric where smaller is better (`harness.metric_names.LOWER_IS_BETTER`): rank 1
    #: has the smallest mean, and sorting by a column puts the smallest first.
    lower_is_better: bool = False

    def best_first(self, value: float) -> float:
        """A sort key that puts the best score first, whichever way the metric points."""
        return value if self.lower_is_better else -value


def column_name(record: dict[str, Any]) -> str:
    evaluator = record["evaluator"]
    name = f"{dataset_column(record)} {evaluator['name']}"  # `cifar10-mini [test-sketch] knn` for another split
    if evaluator.get("non_default_options"):
        shown = ",".join(f"{k}={v}" for k, v in sorted(evaluator["non_default_options"].items()))
        name += f" [{shown}]"
    return name


def _scores(record: dict[str, Any], metric: str | None) -> dict[str, float] | None:
    """The record's values by the seed that produced them. Evaluators that run several seeds inside one record
    (clustering) keep each seed's metrics under `metrics["per_seed"]`, so their cell shows mean ± spread over
    those seeds; two records whose seeds overlap (made before 0.2, when run seeds 0 and 1 clustered with seeds
    0-2 and 1-3; since 0.2 with 0-2 and 3-5) count each seed once, as `harness compare` does. None when the record has no metric `metric` at all."""
    metrics = record["metrics"]
    key = metric or record["main_metric"]
    per_seed = metrics.get(names.PER_SEED)
    if isinstance(per_seed, dict) and per_seed and all(key in values for values in per_seed.values()):
        values = {f"per-seed {seed}": values[key] for seed, values in per_seed.items()}
        return ({k: float(v) for k, v in values.items()} if all(isinstance(v, (int, float))
                                                              for v in values.values()) else {})
    if metric is None:
        return {} if record["main_score"] is None else {f"seed {record['seed']}": float(record["main_score"])}
    if metric not in metrics:
        return None
    value = metrics[metric]
    return ({f"seed {record['seed']}": float(value)} if isinstance(value, (int, float)) and not isinstance(value, bool)
            else {})


def build_leaderboard(records: Iterable[dict[str, Any]], metric: str | None = None,
                      results_dir: str | os.PathLike | None = None) -> Leaderboard:
    """The table of the ok records; failed ones are counted in one note, whose commands name `results_dir` when
    given (give it when it is not the default, so the commands can be pasted as they are)."""
    records = list(records)
    if not records:
        raise HarnessError("no result records found; run `harness run` first (or point --results-dir at them)")
    rows: dict[str, dict[str, Any]] = {}
    columns: list[str] = []
    failed = 0
    by_seed: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    lacking: dict[str, dict[str, Any]] = {}  # column -> a record of it without `metric`
    order: dict[str, tuple[str, bool, str, str]] = {}  # column -> where it sorts
    having: set[str] = set()  # columns with at least one record holding `metric`
    for record in records:
        if record["status"] != "ok":
            failed += 1
            continue
        column = column_name(record)
        if column not in columns:
            columns.append(column)
            # A dataset's test columns first, then those of each other evaluation split, evaluators in order.
            order[column] = (record["dataset"]["name"], split_of(record) != TEST, split_of(record), column)
        row = rows.setdefault(record["encoder"]["name"], {"encoder": record["encoder"]["name"],
                                                           "baseline": bool(record["encoder"].get("baseline")),
                                                           "cells": {}})
        scores = _scores(record, metric)
        if scores is None:
            lacking.setdefault(column, record)
            continue
        having.add(column)
        by_seed[(row["encoder"], column)].update(scores)
    if metric is not None and not having and lacking:
        raise _unknown_metric(metric, list(lacking.values()))
    for (encoder, column), values in by_seed.items():
        if values:
            rows[encoder]["cells"][column] = list(values.values())
    columns.sort(key=order.__getitem__)
    # Columns that do not have the metric at all are shown as "—" and left out of the mean: there is nothing any
    # encoder could score there.
    absent = sorted(set(lacking) - having)
    scored = [c for c in columns if c not in absent]
    notes = [f"{c} has no metric {metric!r}: shown as {MISSING}, not in the mean" for c in absent]
    incomplete = []
    for row in rows.values():
        # A mean over fewer columns is not comparable with the others' (an encoder left out of its hardest
        # dataset would rank first): a row missing a cell gets no mean and no rank, and a note says so.
        means = [statistics.fmean(row["cells"][c]) for c in scored if row["cells"].get(c)]
        row["mean"] = statistics.fmean(means) if means and len(means) == len(scored) else None
        if means and row["mean"] is None:
            missing = [c for c in scored if not row["cells"].get(c)]
            incomplete.append(f"{row['encoder']} has no score for {', '.join(missing)}: no mean and no rank")
    board = Leaderboard(columns, [], lower_is_better=names.lower_is_better(metric))
    ordered = sorted(rows.values(), key=lambda r: (r["mean"] is None, board.best_first(r["mean"] or 0.0),
                                                   r["encoder"]))
    from scipy.stats import rankdata  # here, not at import: `harness --help` must not pay for scipy

    ranked = [row for row in ordered if row["mean"] is not None]
    # competition ranking ("1, 2, 2, 4"): ties share the best place
    ranks = rankdata([board.best_first(row["mean"]) for row in ranked], method="min") if ranked else []
    for row in ordered:
        row["rank"] = None
    for row, rank in zip(ranked, ranks):
        row["rank"] = int(rank)
    failures = [failed_cells_note(failed, results_dir)] if failed else []
    direction = [f"{metric}: smaller is better, rank 1 has the smallest mean"] if board.lower_is_better else []
    board.rows, board.notes = ordered, failures + direction + notes + incomplete
    return board


def failed_cells_note(count: int, results_dir: str | os.PathLike | None = None) -> str:
    """One line for every failed cell: failed records pile up (one per mistake, until the cell is rerun), and a
    note per record buried the other notes. Their errors are for `harness results ls --failed`."""
    from harness.records import DEFAULT_RESULTS_DIR, with_results_dir

    directory = DEFAULT_RESULTS_DIR if results_dir is None else results_dir
    return (f"{count} failed cell(s) not shown; list them: {with_results_dir('harness results ls --failed', directory)}"
            f"; remove them: {with_results_dir('harness results prune --failed', directory)} (a dry run; --yes "
            f"removes)")


def _unknown_metric(metric: str, records: list[dict[str, Any]]) -> HarnessError:
    import difflib

    known = sorted({k for r in records for k in r["metrics"] if k != names.NULL_REASONS}
                   | {k for r in records for values in (r["metrics"].get(names.PER_SEED) or {}).values()
                      if isinstance(values, dict) for k in values})
    close = difflib.get_close_matches(metric, known, n=3, cutoff=0.5)
    return HarnessError(f"metric {metric!r} is in no column's records"
                        + (f"; did you mean: {', '.join(close)}?" if close else f"; they have {', '.join(known)}"))


def format_cell(scores: list[float] | None) -> str:
    if not scores:
        return MISSING
    if len(scores) == 1:
        return f"{scores[0]:.3f}"
    return f"{statistics.fmean(scores):.3f} ± {statistics.stdev(scores):.3f}"


def render(board: Leaderboard, fmt: str = "plain") -> str:
    if fmt not in FORMATS:
        raise HarnessError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    headers = ["rank", "encoder", *board.columns, "mean"]
    table = [[row["rank"] if row["rank"] is not None else MISSING,
              row["encoder"] + (" (baseline)" if row["baseline"] else ""),
              *(format_cell(row["cells"].get(c)) for c in board.columns),
              f"{row['mean']:.3f}" if row["mean"] is not None else MISSING] for row in board.rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*headers, "baseline"])
        for row, cells in zip(board.rows, table):
            writer.writerow([*cells[:1], row["encoder"], *cells[2:], row["baseline"]])
        return out.getvalue()
    from tabulate import tabulate

    return tabulate(table, headers=headers, tablefmt=TABULATE_FORMATS[fmt], disable_numparse=True)


def sort_columns(board: Leaderboard) -> list[str]:
    return ["rank", "encoder", *board.columns, "mean"]


def sort_board(board: Leaderboard, column: str = "rank") -> Leaderboard:
    """The board with its rows ordered by `column`: rank ascending, encoder A-Z, a score column best first.
    Missing values go last whatever the column; ties keep the rank order (the sort is stable)."""
    names = sort_columns(board)
    if column not in names:
        folded = {name.casefold(): name for name in names}
        if column.casefold() not in folded:
            import difflib

            # a part of a header ("knn") points at the columns holding it; otherwise near spellings
            close = [n for n in names if column.casefold() in n.casefold()] or \
                difflib.get_close_matches(column, names, n=3, cutoff=0.6)
            raise HarnessError(f"no column {column!r} to sort by; "
                               + (f"did you mean: {', '.join(repr(c) for c in close)}? " if close else "")
                               + f"the columns are: {', '.join(repr(c) for c in names)}")
        column = folded[column.casefold()]
    if column == "encoder":
        rows = sorted(board.rows, key=lambda r: r["encoder"])
    elif column == "rank":
        rows = sorted(board.rows, key=lambda r: (r["rank"] is None, r["rank"] or 0))
    else:
        def value(row: dict[str, Any]) -> float | None:
            if column == "mean":
                return row["mean"]
            scores = row["cells"].get(column)
            return statistics.fmean(scores) if scores else None

        rows = sorted(board.rows, key=lambda r: (value(r) is None, board.best_first(value(r) or 0.0)))
    return Leaderboard(board.columns, rows, notes=board.notes, lower_is_better=board.lower_is_better)
