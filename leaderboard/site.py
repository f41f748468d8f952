"""`harness publish`: result records -> a static site (`index.html` plus PNG plots in `assets/`).

The page must open from `file://` with no server and reach nothing on the network, so everything it needs is in
the page or beside it: the leaderboard's data is inlined as JSON (a browser blocks `fetch` of a local file) and
the plots are PNG files under `assets/`, referenced by relative paths. A Content-Security-Policy allows only the
page's own inline script (by hash), inline styles and local images, and no connection at all.

Every name that reaches the page (encoders, datasets, columns, class names, commands) is escaped where it is
written: `html.escape` in markup, `\\u003c`-style escapes in the inline JSON (so a name holding `</script>`
cannot end the data block). A name is shown as text, never interpreted.

The page is a list of `Section` fragments: the leaderboard, the charts, the UMAP scatters, the few-shot accuracy
against shots (one plot per dataset with few-shot records), the comparison with
baselines (`harness compare`'s view: by default every non-baseline encoder against every baseline) and the
provenance; more views are one more `Section` passed as `extra_sections`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.files import atomic_file
from harness import metric_names as names
from harness.records import dataset_column, safe_part
from harness.leaderboard.table import Leaderboard, build_leaderboard, column_name, format_cell

ASSETS = "assets"
#: Files in `assets/` that a publish writes; others there are left alone, stale ones of ours are removed.
_OUR_ASSET = re.compile(r"^(umap|bars|fewshot)-.*\.png$")


@dataclass
class Section:
    """One part of the page: `body` is trusted HTML in which every name is already escaped (use `esc`)."""

    id: str
    title: str
    body: str


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def json_for_script(value: Any) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>` or `&` survive literally (so no `</script>`, no
    `<!--`), nor the two line separators that old JavaScript parsers treat as newlines."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def publish(records: Iterable[dict[str, Any]], out_dir: str | os.PathLike, *, results_dir: str | os.PathLike | None = None,
            extra_sections: Sequence[Section] = (), title: str = "Encoder leaderboard",
            compare: Sequence[str] | None = None, against: Sequence[str] | None = None) -> Path:
    """Write `out_dir/index.html` and its plots under `out_dir/assets/`; return the path of the page.

    `compare`/`against` choose the encoders of the comparison section (default: every non-baseline encoder
    against every baseline encoder)."""
    records = list(records)
    # no records -> a HarnessError saying to run `harness run`; failed ones -> one note naming the commands
    board = build_leaderboard(records, results_dir=results_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {str(out)!r} is a file; give a directory for the site")
    assets = out / ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    cells = cell_records(records)
    provenance, cell_ids = provenance_entries(board, cells, results_dir)
    from harness.leaderboard.compare import PredictionsReader

    read = PredictionsReader()  # each predictions file is read once for the whole page
    sections = [
        Section("leaderboard", "Leaderboard", leaderboard_html(board, cell_ids, provenance)),
        Section("charts", "Scores per dataset", charts_html(board, cells, assets, written)),
        Section("umap", "UMAP of the test embeddings", umap_html(records, assets, written, read)),
        Section("fewshot", "Few-shot accuracy against shots", fewshot_html(records, assets, written)),
        Section("comparison", "Compared with the baselines", comparison_html(records, board, compare, against, read)),
        *extra_sections,
        Section("provenance", "Provenance of every cell", provenance_html(provenance)),
    ]
    for stale in assets.iterdir():
        if _OUR_ASSET.match(stale.name) and stale.name not in written:
            stale.unlink()
    data = {"columns": board.columns, "rows": [_row_data(row, board.columns) for row in board.rows],
            "provenance": provenance}
    page = out / "index.html"
    with atomic_file(page, "w") as handle:
        handle.write(render_page(title, sections, data, board.notes))
    return page


def comparison_html(records: Sequence[dict[str, Any]], board: Leaderboard, compare: Sequence[str] | None,
                    against: Sequence[str] | None, read: Any = None) -> str:
    """`harness compare` for each chosen encoder: differences with 95 % intervals, within-noise ones marked."""
    from harness.leaderboard.compare import DEFAULT_N_BOOT, compare_encoders, describe_methods, render_comparison

    new = list(compare or [row["encoder"] for row in board.rows if not row["baseline"]])
    baselines = list(against or [row["encoder"] for row in board.rows if row["baseline"]])
    if not new or not baselines:
        return ("<p>No comparison: the records hold no " + ("baseline" if not baselines else "non-baseline")
                + " encoder (choose them with <code>harness publish --compare NEW --against BASELINE</code>).</p>")
    parts = []
    for name in new:
        others = [b for b in baselines if b != name]
        if not others:
            continue
        # an unknown name is the user's error (HarnessError with close matches); no shared column is not
        try:
            rows = compare_encoders(records, name, others, read=read)
        except HarnessError as error:
            if compare or against:
                raise
            parts.append(f"<p>{esc(name)}: {esc(error)}</p>")
            continue
        parts.append(f'<h3>{esc(name)}</h3>\n<div class="table-scroll">{render_comparison(rows, "html")}</div>')
    parts.append(f'<p class="hint">{esc(describe_methods(DEFAULT_N_BOOT, 0))}</p>')
    return "\n".join(parts)


def cell_records(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The ok records behind each (encoder, column) cell, in seed order."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        if record["status"] == "ok":
            cells.setdefault((record["encoder"]["name"], column_name(record)), []).append(record)
    for group in cells.values():
        group.sort(key=lambda r: r["seed"])
    return cells


def _spread(scores: list[float]) -> float:
    return statistics.stdev(scores) if len(scores) > 1 else 0.0


def _row_data(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    cells = {}
    for column in columns:
        scores = row["cells"].get(column)
        cells[column] = None if not scores else {"mean": statistics.fmean(scores), "spread": _spread(scores),
                                                 "n": len(scores)}
    return {"encoder": row["encoder"], "baseline": row["baseline"], "rank": row["rank"], "mean": row["mean"],
            "cells": cells}


def _weights(info: dict[str, Any]) -> str:
    weights = info.get("weights") or {}
    if not weights:
        return "none (untrained or parameter-free)"
    return ", ".join(f"{k}={v}" for k, v in sorted(weights.items()))


def provenance_entries(board: Leaderboard, cells: dict[tuple[str, str], list[dict[str, Any]]],
                       results_dir: str | os.PathLike | None) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
    """One entry per filled cell, with what produced it; and the index of each cell's entry."""
    entries: list[dict[str, Any]] = []
    ids: dict[tuple[str, str], int] = {}
    root = Path(results_dir).resolve() if results_dir else None
    for row in board.rows:
        for column in board.columns:
            group = cells.get((row["encoder"], column))
            if not group:
                continue
            first = group[0]
            info = first["encoder"].get("info", {})
            files = []
            for record in group:
                path = Path(record.get("_path", ""))
                try:
                    files.append(str(path.resolve().relative_to(root)) if root else str(path))
                except ValueError:
                    files.append(str(path))
            ids[row["encoder"], column] = len(entries)
            entries.append({
                "encoder": row["encoder"], "column": column, "dataset": dataset_column(first),
                "score": format_cell(row["cells"].get(column)),
                "metric": first["main_metric"],
                "protocol": first["evaluator"]["protocol"],
                "options": first["evaluator"].get("non_default_options") or {},
                "architecture": info.get("architecture"), "pretraining": info.get("pretraining"),
                "weights": _weights(info),
                "seeds": [r["seed"] for r in group] if len(group) > 1 else first["metrics"].get("seeds", [first["seed"]]),
                "versions": first["versions"], "device": first["device"], "precision": first["precision"],
                "date": first["date"], "command": first["command"], "cache_keys": first["cache_keys"],
                "files": files,
            })
    return entries, ids


def leaderboard_html(board: Leaderboard, cell_ids: dict[tuple[str, str], int],
                     provenance: list[dict[str, Any]]) -> str:
    headers = [("rank", "rank", "number"), ("encoder", "encoder", "text"),
               *((f"col:{i}", column, "number") for i, column in enumerate(board.columns)),
               ("mean", "mean", "number")]
    head = "".join(f'<th scope="col" data-key="{esc(key)}" data-type="{kind}" tabindex="0" '
                   f'title="sort by {esc(label)}">{esc(label)}</th>' for key, label, kind in headers)
    body = []
    for index, row in enumerate(board.rows):
        cells = [f'<td class="num">{esc(row["rank"] if row["rank"] is not None else "—")}</td>',
                 f'<th scope="row" class="encoder">{esc(row["encoder"])}'
                 + ('<span class="tag">baseline</span>' if row["baseline"] else "") + "</th>"]
        for column in board.columns:
            scores = row["cells"].get(column)
            if not scores:
                cells.append('<td class="num missing" title="no record for this cell">—</td>')
                continue
            entry = cell_ids[row["encoder"], column]
            tip = _tooltip(provenance[entry])
            cells.append(f'<td class="num"><a href="#cell-{entry}" title="{esc(tip)}">'
                         f"{esc(format_cell(scores))}</a></td>")
        mean = "—" if row["mean"] is None else f"{row['mean']:.3f}"
        cells.append(f'<td class="num">{esc(mean)}</td>')
        body.append(f'<tr data-row="{index}">{"".join(cells)}</tr>')
    return (f'<p class="hint">Click a column header to sort (again to reverse); missing cells sort last. '
            f"Each score links to its provenance.</p>\n"
            f'<div class="table-scroll"><table id="leaderboard-table"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody></table></div>")


def _tooltip(entry: dict[str, Any]) -> str:
    versions = entry["versions"]
    return (f"{entry['protocol']} ({entry['metric']}); weights: {entry['weights']}; "
            f"harness {versions.get('harness')}, torch {versions.get('torch')}; {entry['device']} "
            f"{entry['precision']}; {entry['date']}")


def charts_html(board: Leaderboard, cells: dict[tuple[str, str], list[dict[str, Any]]], assets: Path,
                written: set[str]) -> str:
    from harness.leaderboard.plots import Bar, score_bars_png

    datasets: dict[str, list[Bar]] = {}
    for row in board.rows:
        for column in board.columns:
            scores = row["cells"].get(column)
            group = cells.get((row["encoder"], column))
            if not scores or not group:
                continue
            dataset = dataset_column(group[0])
            label = column[len(dataset) + 1:] if column.startswith(dataset + " ") else column
            datasets.setdefault(dataset, []).append(Bar(row["encoder"], label, statistics.fmean(scores),
                                                        _spread(scores)))
    figures = []
    for dataset, bars in sorted(datasets.items()):
        name = _asset_name("bars", dataset)
        _write_asset(assets / name, score_bars_png(bars, f"{dataset}: main score per evaluator"), written)
        figures.append(_figure_html(name, f"Main score of each encoder on {dataset}, per evaluator",
                                    f"{dataset}: main scores (error bars: spread over seeds)"))
    return '<div class="figures">' + "".join(figures) + "</div>"


def one_record_each(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(dataset column, encoder): record} for the plots that show one record per cell: of the ok records, the
    default options' one, then the lowest seed. The dataset column names a split other than test
    (`dataset_column`), so each evaluation split gets its own plots."""
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record["status"] != "ok":
            continue
        key = (dataset_column(record), record["encoder"]["name"])
        rank = (bool(record["evaluator"].get("non_default_options")), record["seed"])
        if key not in chosen or rank < (bool(chosen[key]["evaluator"].get("non_default_options")),
                                        chosen[key]["seed"]):
            chosen[key] = record
    return chosen


def umap_html(records: Sequence[dict[str, Any]], assets: Path, written: set[str], read: Any = None) -> str:
    from harness.leaderboard.compare import PredictionsReader
    from harness.leaderboard.plots import umap_scatter_png

    read = read if read is not None else PredictionsReader()

    chosen = one_record_each([r for r in records if names.UMAP2D in (r.get("artifacts") or {})])
    if not chosen:
        return ("<p>No record has a 2-D UMAP layout: run the clustering evaluator "
                "(<code>harness run --eval clustering</code>) to get these plots.</p>")
    parts, missing = [], []
    for dataset in sorted({d for d, _ in chosen}):
        figures = []
        for (d, encoder), record in sorted(chosen.items()):
            if d != dataset:
                continue
            if not Path(record["_path"]).with_name(record["artifacts"][names.UMAP2D]).is_file():
                missing.append(f"{encoder} on {dataset}")  # records shared without their .npz files
                continue
            layout = _load_artifact(record, names.UMAP2D)
            predictions = read(record) or {}
            labels = predictions.get(names.LABEL)
            if labels is not None and len(labels) != len(layout):
                raise HarnessError(f"{record['_path']}: {len(labels)} labels for a {len(layout)}-point UMAP layout; "
                                   "rerun the cell")
            name = _asset_name("umap", encoder, dataset)
            png = umap_scatter_png(layout, labels, record["dataset"].get("class_names", []), f"{encoder} on {dataset}")
            _write_asset(assets / name, png, written)
            figures.append(_figure_html(name, f"UMAP of {encoder} on {dataset}, coloured by class",
                                        f"{encoder} ({len(layout)} test items)"))
        if figures:
            parts.append(f"<h3>{esc(dataset)}</h3>\n" + '<div class="figures">' + "".join(figures) + "</div>")
    if missing:
        parts.append(f"<p>No UMAP plot for {esc(', '.join(missing))}: the layout files (.npz) beside those records "
                     "are missing (records shared without them).</p>")
    return "\n".join(parts)


def fewshot_curves(records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """{dataset: [ShotCurve per (encoder, classifier)]} from the few-shot records (`names.FEWSHOT_PROTOCOLS`).

    One record per (encoder, dataset), as for the UMAP plots: the default options' record, then the lowest seed.
    Its classifiers are the entries of `per_shots` that hold a mean; the curve is their means, with their 95 %
    intervals, at the shot counts of the record."""
    from harness.leaderboard.plots import ShotCurve

    chosen = one_record_each([r for r in records if r["evaluator"]["protocol"] in names.FEWSHOT_PROTOCOLS
                              and names.PER_SHOTS in r["metrics"]])
    curves: dict[str, list[Any]] = {}
    for (dataset, encoder), record in sorted(chosen.items()):
        per_shots = record["metrics"][names.PER_SHOTS]
        shots = sorted(per_shots, key=int)
        classifiers = [k for k, v in per_shots[shots[0]].items() if isinstance(v, dict) and "mean" in v]
        for classifier in classifiers:
            summaries = [per_shots[s][classifier] for s in shots]
            curves.setdefault(dataset, []).append(ShotCurve(
                encoder, classifier, [int(s) for s in shots], [float(x["mean"]) for x in summaries],
                [x.get("ci95_low") for x in summaries], [x.get("ci95_high") for x in summaries]))
    return curves


def fewshot_html(records: Sequence[dict[str, Any]], assets: Path, written: set[str]) -> str:
    from harness.leaderboard.plots import shots_png

    curves = fewshot_curves(records)
    if not curves:
        return ("<p>No few-shot record: run the few-shot evaluator (<code>harness run --eval fewshot</code>) to get "
                "these plots.</p>")
    figures = []
    for dataset, dataset_curves in sorted(curves.items()):
        name = _asset_name("fewshot", dataset)
        _write_asset(assets / name, shots_png(dataset_curves, f"{dataset}: few-shot accuracy against shots"),
                     written)
        caption = (f"{dataset}: mean test top-1 over draws; solid: logistic regression, dashed: nearest centroid "
                   "(CL2N); error bars: 95 % Student-t interval over draws (one record per encoder: the default "
                   "options', lowest seed)")
        figures.append(_figure_html(name, f"Few-shot test accuracy against shots per class on {dataset}, per encoder",
                                    caption))
    return '<div class="figures">' + "".join(figures) + "</div>"


def _load_artifact(record: dict[str, Any], name: str) -> np.ndarray:
    path = Path(record["_path"]).with_name(record["artifacts"][name])
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data[name])
    except (OSError, KeyError, ValueError) as error:
        raise HarnessError(f"{record['_path']} names the artifact {str(path)!r}, which cannot be read ({error}); "
                           "rerun the cell") from error


def _asset_name(kind: str, *names: str) -> str:
    """A file name per (kind, names): readable, and unique through a hash of the exact names."""
    digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:10]
    return f"{kind}-{'-'.join(safe_part(n, 32) for n in names)}-{digest}.png"


def _write_asset(path: Path, data: bytes, written: set[str]) -> None:
    with atomic_file(path) as handle:
        handle.write(data)
    written.add(path.name)


def _figure_html(name: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{ASSETS}/{esc(name)}" alt="{esc(alt)}" loading="eager">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def provenance_html(entries: list[dict[str, Any]]) -> str:
    items = []
    for index, entry in enumerate(entries):
        versions = ", ".join(f"{k} {v}" for k, v in entry["versions"].items())
        options = ", ".join(f"{k}={v}" for k, v in sorted(entry["options"].items())) or "protocol defaults"
        fields = [("score", entry["score"]), ("main metric", entry["metric"]), ("protocol", entry["protocol"]),
                  ("options", options), ("seeds", ", ".join(map(str, entry["seeds"]))),
                  ("architecture", entry["architecture"]), ("pretraining", entry["pretraining"]),
                  ("weights", entry["weights"]), ("versions", versions),
                  ("device", f"{entry['device']} ({entry['precision']})"), ("date", entry["date"]),
                  ("command", entry["command"]),
                  ("embedding cache keys", ", ".join(f"{k} {v}" for k, v in sorted(entry["cache_keys"].items()))),
                  ("record files", ", ".join(entry["files"]))]
        rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in fields)
        items.append(f'<details id="cell-{index}"><summary>{esc(entry["encoder"])} · {esc(entry["column"])}: '
                     f'{esc(entry["score"])}</summary><dl>{rows}</dl></details>')
    return "\n".join(items)


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1200px; padding: 0 1rem; color: #222;
       overflow-wrap: break-word; }  /* a long unbroken name in a heading or caption breaks, not the page */
nav a { margin-right: 1rem; }
/* a table wider than the page (many columns, long names) scrolls sideways in its own box, never the page */
.table-scroll { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .7rem; text-align: left; }
thead th { cursor: pointer; background: #f3f3f3; user-select: none; white-space: nowrap; }
thead th[aria-sort=ascending]::after { content: " \\25B2"; }
thead th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.missing { color: #999; }
th.encoder { font-weight: 600; }
.tag { margin-left: .4rem; font-size: 11px; font-weight: normal; background: #eee; border-radius: 3px; padding: 0 .3rem; }
.hint, figcaption, .meta { color: #666; font-size: 12px; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
/* narrow windows: a figure shrinks with its image (border included) instead of widening the page */
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; box-sizing: border-box; border: 1px solid #eee; }
details { margin: .2rem 0; }
details:target, details[open] { background: #fafafa; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: .3rem 1rem; }
dt { color: #666; } dd { margin: 0; word-break: break-all; }
""".strip()

# Sorting reads the inline JSON, not the cell text: scores compare as numbers, a missing cell (null) goes last
# whichever the direction, and ties keep the current order (Array.prototype.sort is stable).
SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  var table = document.getElementById("leaderboard-table");
  var tbody = table.tBodies[0];
  function value(row, key) {
    if (key === "rank") return row.rank;
    if (key === "mean") return row.mean;
    if (key === "encoder") return row.encoder;
    var cell = row.cells[data.columns[Number(key.slice(4))]];
    return cell ? cell.mean : null;
  }
  function sortBy(th) {
    var key = th.getAttribute("data-key");
    var current = th.getAttribute("aria-sort");
    // scores start best first; rank and names start ascending
    var first = (key === "rank" || key === "encoder") ? "ascending" : "descending";
    var order = current ? (current === "ascending" ? "descending" : "ascending") : first;
    var sign = order === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = value(data.rows[Number(a.getAttribute("data-row"))], key);
      var y = value(data.rows[Number(b.getAttribute("data-row"))], key);
      if (x === null || y === null) return (x === null) - (y === null);
      if (typeof x === "string") return sign * x.localeCompare(y);
      return sign * (x - y);
    });
    rows.forEach(function (row) { tbody.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", order);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); } });
  });
  function openTarget() {
    var target = location.hash && document.getElementById(location.hash.slice(1));
    if (target && target.tagName === "DETAILS") target.open = true;
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
""".strip()


def render_page(title: str, sections: Sequence[Section], data: Any, notes: Sequence[str] = ()) -> str:
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    # No network: nothing but this page's own script, inline styles and local images may load or connect.
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "img-src 'self' file: data:; base-uri 'none'; form-action 'none'")
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{esc(s.id)}">\n<h2>{esc(s.title)}</h2>\n{s.body}\n</section>' for s in sections)
    note_html = ("<ul class=\"notes\">" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>") if notes else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
{STYLE}
</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="meta">Built from result records by <code>harness publish</code> on {esc(generated)}.
Rows: encoders; columns: the main score of each (dataset, evaluator); clustering cells are mean ± spread over seeds.</p>
<nav>{nav}</nav>
{note_html}
{body}
<script type="application/json" id="leaderboard-data">{json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
