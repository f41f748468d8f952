"""A new encoder beside chosen baselines: scores, differences and 95 % confidence intervals, from records alone.

One row per (dataset, evaluator column, baseline). How the interval is computed depends on what the records hold,
not on the evaluator's name, so a plugin evaluator gets the same treatment when its records look the same:

- **Per-item scores** (`ids` and `score` in `seed-<n>.predictions.npz`: any evaluator that saves a per-item score
  whose mean is its main score, e.g. per-item correctness for kNN and the linear probe, per-query AP for a
  retrieval evaluator): a **paired bootstrap over test items**, for the main metric. Items are paired by id (the
  two records must hold the same test items, or it is an error naming both files). Each of `n_boot` resamples
  (default 2,000) draws test items with replacement and takes the *same* draw for both encoders; the statistic is
  the difference of the mean per-item scores, new − baseline. The interval is the 2.5 and 97.5 percentiles of
  those differences (`numpy.percentile`, linear interpolation). Resamples come from
  `numpy.random.default_rng(seed)` (default 0), so a comparison is reproducible. Pairing removes the variation
  that both encoders share (easy and hard items), which makes the interval much narrower than two separate
  intervals would suggest. If records of several seeds exist for both encoders, per-item scores are averaged
  over the seeds they share. The mean of `score` must equal the record's main score: if not, the error names the
  file, the column and both values.
- **Top-1 classifiers**, a special case (`label`, `prediction` and optionally `top5` beside `ids`): for the
  top-5 metric named like the main one (`top5_k20` beside `top1_k20`) the per-item score is "label among the
  `top5` classes"; for the main metric of an older record without `score`, it is `prediction == label`, used
  only when its mean is the recorded main score (a plugin's `label`/`prediction` columns may mean something
  else: then there is no interval, and the row says why).
- **Per-seed metrics** (clustering: `metrics["per_seed"]`, one value per seed inside one record): the difference of
  the seed means with a **Welch t interval** (unequal variances, Welch–Satterthwaite degrees of freedom).
  Seeds are not paired by number: the same seed gives the two encoders' UMAP and K-means runs no shared noise,
  so pairing would only cost degrees of freedom. The items are not resampled: the clustering score's noise that
  matters here is the run-to-run spread (about 0.03 AMI). With the default 3 seeds per encoder the interval is
  wide and rests on the assumption of roughly normal seed-to-seed variation; the row says how many seeds it used.
  With one seed on either side there is no interval.
- Neither: scores and difference only, no interval, and the row says why.

A difference whose interval contains 0 is marked **within noise**; otherwise `new better` or `new worse`.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.errors import HarnessError
from harness import metric_names as names
from harness.records import dataset_column, load_predictions
from harness.leaderboard.table import FORMATS, MISSING, TABULATE_FORMATS, column_name

DEFAULT_N_BOOT = 2000
CONFIDENCE = 0.95


@dataclass
class ComparisonRow:
    """One (dataset, evaluator column) of `new` beside one baseline."""

    dataset: str
    column: str  # the leaderboard column: "<dataset> <evaluator> [non-default options]"
    protocol: str
    metric: str
    new: str
    baseline: str
    new_score: float | None
    baseline_score: float | None
    difference: float | None = None
    low: float | None = None  # 95 % interval of the difference new − baseline
    high: float | None = None
    method: str = ""  # how the interval was computed, e.g. "paired bootstrap, 500 items"
    n: int = 0  # items (bootstrap) or seeds (new + baseline) behind the interval
    note: str = ""  # why a value is missing
    files: dict[str, list[str]] = field(default_factory=dict)  # "new"/"baseline" -> record paths used

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None:
            return "no interval"
        if self.low <= 0.0 <= self.high:
            return "within noise"
        return "new better" if self.low > 0 else "new worse"


# -- the statistics ----------------------------------------------------------------------------------------------

def paired_bootstrap(new_correct: np.ndarray, baseline_correct: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
                     seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(difference of means, low, high): percentile interval of mean(new − baseline) over item resamples.

    Resample b uses the indices `default_rng(seed).integers(0, n, size=(n_boot, n))[b]`, drawn in chunks of rows
    (which yields the same stream), so memory stays bounded on large test sets."""
    differences = np.asarray(new_correct, dtype=np.float64) - np.asarray(baseline_correct, dtype=np.float64)
    n = differences.shape[0]
    if n == 0:
        raise HarnessError("no test items to bootstrap over")
    if n_boot < 1:
        raise HarnessError(f"n_boot must be at least 1, not {n_boot}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 20_000_000 // n))
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(differences.mean()), float(low), float(high)


def welch_interval(new_values: Sequence[float], baseline_values: Sequence[float],
                   confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """(difference of means, low, high): Welch's t interval; (difference, None, None) with under 2 values a side."""
    from scipy.stats import t

    difference = statistics.fmean(new_values) - statistics.fmean(baseline_values)
    if len(new_values) < 2 or len(baseline_values) < 2:
        return difference, None, None
    va = statistics.variance(new_values) / len(new_values)
    vb = statistics.variance(baseline_values) / len(baseline_values)
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed gave the same score on both sides: no spread to speak of
        return difference, difference, difference
    dof = (va + vb) ** 2 / (va ** 2 / (len(new_values) - 1) + vb ** 2 / (len(baseline_values) - 1))
    half = float(t.ppf(0.5 + confidence / 2, dof)) * se
    return difference, difference - half, difference + half


# -- from records ------------------------------------------------------------------------------------------------

def _column_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return dataset_column(record), column_name(record), record["evaluator"]["protocol"]  # pairs within a split


class PredictionsReader:
    """Reads each record's predictions file at most once (one `compare` or `publish` call makes one reader).

    `reader(record)` is the file's columns, or None when the record has none; a file that is missing (records
    shared without their `.npz` files) or unreadable is None too, and `reader.problems[path]` says why."""

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, np.ndarray] | None] = {}
        self.problems: dict[str, str] = {}
        self.reads = 0  # files actually opened

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray] | None:
        if not record.get("predictions_file"):
            return None
        path = str(Path(record["_path"]).with_name(record["predictions_file"]))
        if path not in self._cache:
            self.reads += 1
            try:
                self._cache[path] = load_predictions(record)
            except (OSError, ValueError) as error:  # missing, truncated or not an .npz
                self._cache[path] = None
                self.problems[path] = (f"predictions file {path!r} is missing" if isinstance(error, FileNotFoundError)
                                       else f"predictions file {path!r} cannot be read ({type(error).__name__})")
        return self._cache[path]


def _per_seed_values(records: list[dict[str, Any]], metric: str) -> dict[str, float] | None:
    """Seed -> value from `metrics["per_seed"]` of every record of the cell, or None when the records have none."""
    values: dict[str, float] = {}
    for record in records:
        per_seed = record["metrics"].get(names.PER_SEED)
        if not isinstance(per_seed, dict) or not per_seed:
            return None
        for seed, metrics in per_seed.items():
            value = metrics.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[str(seed)] = float(value)
    return values


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _item_scores(record: dict[str, Any], metric: str, read: PredictionsReader
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | str:
    """(ids, labels or None, score per item) of the record for `metric`, or a note saying why there are none."""
    if not record.get("predictions_file"):
        return "the records keep no per-item outputs"
    predictions = read(record)
    if predictions is None:
        return read.problems.get(str(Path(record["_path"]).with_name(record["predictions_file"])),
                                 "no per-item outputs") + " (records shared without their .npz files?)"
    path = str(Path(record["_path"]).with_name(record["predictions_file"]))
    if names.IDS not in predictions:
        return f"{path!r} has no {names.IDS!r} column to pair items by"
    ids = predictions[names.IDS].astype(str)
    labels = predictions.get(names.LABEL)
    main = record["main_metric"]
    recorded = record["main_score"] if metric == main else record["metrics"].get(metric)
    recorded = float(recorded) if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) else None
    top1 = {names.LABEL, names.PREDICTION} <= set(predictions)
    if metric == main and names.SCORE in predictions:
        score = np.asarray(predictions[names.SCORE], dtype=np.float64)
        if score.shape != ids.shape or not np.isfinite(score).all():
            raise HarnessError(f"column {names.SCORE!r} of {path!r} must hold one finite number per item "
                               f"({len(ids)} ids); it has shape {score.shape}"
                               + ("" if np.isfinite(score).all() else " and non-finite values"))
        if recorded is not None and not _close(float(score.mean()), recorded):
            raise HarnessError(f"column {names.SCORE!r} of {path!r} has mean {score.mean():.6f}, but "
                               f"{record['_path']!r} records {main} = {recorded:.6f}; the per-item score must "
                               f"average to the main score (a file left from another run, or an evaluator that "
                               f"saves a different score: rerun the cell, or fix the evaluator)")
    elif metric == main and top1:
        score = (predictions[names.PREDICTION] == labels).astype(np.float64)
        if recorded is not None and not _close(float(score.mean()), recorded):
            return (f"no {names.SCORE!r} column, and {names.LABEL!r}/{names.PREDICTION!r} of {path!r} agree on "
                    f"{score.mean():.6f} of items, not the recorded {main} = {recorded:.6f}: they are not top-1 "
                    f"predictions of the main metric")
    elif (top1 and names.TOP5 in predictions and "top1" in main
          and metric == main.replace("top1", "top5", 1)):
        score = (predictions[names.TOP5] == labels[:, None]).any(axis=1).astype(np.float64)
        if recorded is not None and not _close(float(score.mean()), recorded):
            return (f"the {names.TOP5!r} column of {path!r} gives {metric} = {score.mean():.6f}, the record "
                    f"says {recorded:.6f}")
    elif metric != main:
        return f"per-item scores are kept for the main metric ({main}) only"
    else:
        return f"the evaluator saves no per-item {names.SCORE!r} column"
    if len(set(ids.tolist())) != len(ids):
        raise HarnessError(f"the predictions in {path!r} repeat item ids; they cannot be paired")
    return ids, labels, score


def _paired_items(new: list[dict[str, Any]], baseline: list[dict[str, Any]], metric: str,
                  read: PredictionsReader) -> tuple[np.ndarray, np.ndarray] | str:
    """Per-item scores of both sides on the same items in the same order (averaged over shared seeds), or a note
    saying why there are none."""
    by_seed_new = {r["seed"]: r for r in new}
    by_seed_base = {r["seed"]: r for r in baseline}
    seeds = sorted(set(by_seed_new) & set(by_seed_base))
    if not seeds:
        return "no seed in common, so no items to pair"
    new_rows, base_rows = [], []
    for seed in seeds:
        a, b = _item_scores(by_seed_new[seed], metric, read), _item_scores(by_seed_base[seed], metric, read)
        if isinstance(a, str) or isinstance(b, str):
            return a if isinstance(a, str) else b
        ids_a, labels_a, correct_a = a
        ids_b, labels_b, correct_b = b
        if set(ids_a.tolist()) != set(ids_b.tolist()):
            only_a, only_b = len(set(ids_a.tolist()) - set(ids_b.tolist())), len(set(ids_b.tolist()) - set(ids_a.tolist()))
            raise HarnessError(f"{by_seed_new[seed]['_path']!r} and {by_seed_base[seed]['_path']!r} were measured on "
                               f"different test items ({only_a} only in the first, {only_b} only in the second); a "
                               f"paired comparison needs the same items (same dataset revision and skipped items)")
        position = {item: i for i, item in enumerate(ids_b.tolist())}
        order = np.array([position[item] for item in ids_a.tolist()], dtype=np.int64)
        if labels_a is not None and labels_b is not None and not np.array_equal(labels_a, labels_b[order]):
            raise HarnessError(f"{by_seed_new[seed]['_path']!r} and {by_seed_base[seed]['_path']!r} give the same "
                               f"test items different labels; they are not the same dataset")
        new_rows.append(correct_a)
        base_rows.append(correct_b[order])
    return np.mean(new_rows, axis=0), np.mean(base_rows, axis=0)


def _score(records: list[dict[str, Any]], metric: str) -> float | None:
    values = []
    for record in records:
        value = record["main_score"] if metric == record["main_metric"] else record["metrics"].get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(float(value))
    return statistics.fmean(values) if values else None


class _MissingMetric(HarnessError):
    """A column whose records lack the metric asked for: skipped, unless no column has it."""


def _suggest(name: str, known: Iterable[str], what: str, error: type[HarnessError] = HarnessError) -> HarnessError:
    """`what` names the thing, e.g. "encoder 'x'"; the message lists close matches, or everything there is."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}?" if close else f"the records have: {', '.join(known)}"
    return error(f"{what} is not in the result records; {hint}")


def compare_encoders(records: Iterable[dict[str, Any]], new: str, against: Sequence[str], *,
                     datasets: Sequence[str] | None = None, metric: str | None = None,
                     n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                     read: PredictionsReader | None = None) -> list[ComparisonRow]:
    """Rows of `new` beside each baseline in `against`, for every column both have records in.

    `records` as `harness.records.load_records` returns them (their `_path` locates the predictions files).
    `metric` defaults to each evaluator's main metric. See the module docstring for how intervals are computed.
    `read` reads each predictions file once; pass one reader to several calls to share what it read."""
    read = read if read is not None else PredictionsReader()
    records = [r for r in records if r["status"] == "ok"]
    if not records:
        raise HarnessError("no successful result records to compare; run `harness run` first")
    encoders = {r["encoder"]["name"] for r in records}
    for name in [new, *against]:
        if name not in encoders:
            raise _suggest(name, encoders, f"encoder {name!r}")
    if not against:
        raise HarnessError("name at least one baseline: --against ENCODER")
    if new in against:
        raise HarnessError(f"{new!r} is both the new encoder and a baseline")
    if datasets:
        present = {r["dataset"]["name"] for r in records}
        for name in datasets:
            if name not in present:
                raise _suggest(name, present, f"dataset {name!r}")
        records = [r for r in records if r["dataset"]["name"] in datasets]
    cells: dict[tuple[tuple[str, str, str], str], list[dict[str, Any]]] = {}
    for record in records:
        cells.setdefault((_column_key(record), record["encoder"]["name"]), []).append(record)
    columns = sorted({key for key, _ in cells})
    rows = []
    missing: list[HarnessError] = []  # columns without the asked-for metric (kNN's top5_k20 is not linear's)
    for column in columns:
        mine = cells.get((column, new))
        if not mine:
            continue
        for baseline in against:
            theirs = cells.get((column, baseline))
            if not theirs:
                continue
            try:
                rows.append(_compare_cell(column, new, baseline, mine, theirs, metric, n_boot, seed, read))
            except _MissingMetric as error:
                missing.append(error)
    if not rows and missing:
        raise missing[0]
    if not rows:
        raise HarnessError(f"{new!r} and {', '.join(map(repr, against))} share no (dataset, evaluator) with "
                           f"successful records; nothing to compare")
    return rows


def _compare_cell(column: tuple[str, str, str], new: str, baseline: str, mine: list[dict[str, Any]],
                  theirs: list[dict[str, Any]], metric: str | None, n_boot: int, seed: int,
                  read: PredictionsReader) -> ComparisonRow:
    dataset, name, protocol = column
    key = metric or mine[0]["main_metric"]
    row = ComparisonRow(dataset, name, protocol, key, new, baseline, None, None,
                        files={"new": [r["_path"] for r in mine], "baseline": [r["_path"] for r in theirs]})
    per_seed_new, per_seed_base = _per_seed_values(mine, key), _per_seed_values(theirs, key)
    if per_seed_new is not None and per_seed_base is not None:
        if not per_seed_new or not per_seed_base:
            raise _suggest(key, {m for r in mine for s in r["metrics"][names.PER_SEED].values() for m in s},
                           f"per-seed metric {key!r} of {name}", _MissingMetric)
        a, b = list(per_seed_new.values()), list(per_seed_base.values())
        row.new_score, row.baseline_score = statistics.fmean(a), statistics.fmean(b)
        row.difference, row.low, row.high = welch_interval(a, b)
        row.n = len(a) + len(b)
        row.method = f"Welch t over seeds ({len(a)} + {len(b)})"
        if row.low is None:
            row.note = "one seed on a side: no spread over seeds, no interval (run more seeds)"
        return row
    if key not in mine[0]["metrics"] and key != mine[0]["main_metric"]:
        raise _suggest(key, [k for k in mine[0]["metrics"] if k != names.NULL_REASONS], f"metric {key!r} of {name}",
                       _MissingMetric)
    paired = _paired_items(mine, theirs, key, read)
    row.new_score, row.baseline_score = _score(mine, key), _score(theirs, key)
    if isinstance(paired, str):
        if row.new_score is not None and row.baseline_score is not None:
            row.difference = row.new_score - row.baseline_score
        row.note = f"no interval: {paired}"
        return row
    new_correct, base_correct = paired
    row.new_score, row.baseline_score = float(new_correct.mean()), float(base_correct.mean())
    row.difference, row.low, row.high = paired_bootstrap(new_correct, base_correct, n_boot=n_boot, seed=seed)
    row.n = int(new_correct.shape[0])
    row.method = f"paired bootstrap, {row.n} items"
    return row


# -- rendering ---------------------------------------------------------------------------------------------------

HEADERS = ["dataset", "evaluator", "metric", "new", "score", "baseline", "score", "difference", "95% CI",
           "verdict", "interval from"]


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _cells(row: ComparisonRow) -> list[str]:
    interval = MISSING if row.low is None else f"[{row.low:+.3f}, {row.high:+.3f}]"
    return [row.dataset, row.column[len(row.dataset) + 1:] if row.column.startswith(row.dataset + " ") else row.column,
            row.metric, row.new, _number(row.new_score), row.baseline, _number(row.baseline_score),
            _number(row.difference, signed=True), interval, row.verdict, row.note or row.method]


def render_comparison(rows: Sequence[ComparisonRow], fmt: str = "plain") -> str:
    """The rows as a table: plain, github, latex or html (through tabulate, which escapes HTML), or csv (with
    unrounded numbers, for further use)."""
    if fmt not in FORMATS:
        raise HarnessError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["dataset", "column", "protocol", "metric", "new", "new_score", "baseline", "baseline_score",
                         "difference", "ci_low", "ci_high", "verdict", "method", "n", "note"])
        for r in rows:
            writer.writerow([r.dataset, r.column, r.protocol, r.metric, r.new, r.new_score, r.baseline,
                             r.baseline_score, r.difference, r.low, r.high, r.verdict, r.method, r.n, r.note])
        return out.getvalue()
    from tabulate import tabulate

    return tabulate([_cells(r) for r in rows], headers=HEADERS, tablefmt=TABULATE_FORMATS[fmt], disable_numparse=True)


def describe_methods(n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> str:
    """One paragraph for under the table: what the intervals mean."""
    return (f"95% intervals of new − baseline. Per-item scores: paired bootstrap over test items ({n_boot} "
            f"resamples, seed {seed}, percentile interval). Per-seed scores (clustering): Welch t interval over "
            f"seeds (few seeds: wide). 'within noise' = the interval contains 0.")
