"""Plots for the published site, as PNG bytes: a 2-D UMAP scatter per (encoder, dataset), a bar chart per dataset and
a few-shot accuracy-against-shots plot per dataset.

matplotlib is imported here, when a plot is drawn, never at `import harness.leaderboard`: printing a table must not pay
for it. Figures are drawn on an explicit Agg canvas (`matplotlib.figure.Figure`, no `pyplot`), so no global
backend is switched and nothing tries to open a window on a machine without a display.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DPI = 100
#: Legend entries longer than this wrap onto more lines: constrained layout narrows the axes to make room for the
#: legend, and an entry wider than the figure leaves no room at all (the legend is then cut off at the edge).
LEGEND_CHARS = 28


@dataclass
class Bar:
    """One bar of a dataset's chart: an encoder's score in one column, with its spread over seeds (or 0)."""

    encoder: str
    column: str
    value: float
    spread: float = 0.0


@dataclass
class ShotCurve:
    """One encoder's few-shot accuracy with one classifier: the mean at each shot count, with its 95 % interval
    (None where there is none, e.g. a single draw)."""

    encoder: str
    classifier: str
    shots: list[int]
    means: list[float]
    lows: list[float | None]
    highs: list[float | None]


#: Line style per few-shot classifier; one colour per encoder.
SHOT_LINE_STYLES = {"logistic": "-", "centroid": "--"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    out = io.BytesIO()
    # metadata={"Software": None}: no matplotlib version in the file, so one input gives the same bytes
    figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def umap_scatter_png(layout: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str], title: str) -> bytes:
    """The 2-D layout, one colour per class (grey for unlabelled items, label -1), with a legend of class names."""
    layout = np.asarray(layout, dtype=np.float64)
    figure = _figure(3.8, 3.2)
    axes = figure.add_subplot()
    if labels is None:
        labels = np.full(len(layout), -1)
    labels = np.asarray(labels)
    colours = _palette(max(len(class_names), int(labels.max(initial=-1)) + 1))
    unlabelled = labels < 0
    if unlabelled.any():
        axes.scatter(layout[unlabelled, 0], layout[unlabelled, 1], s=5, c="#9e9e9e", linewidths=0,
                     label="unlabelled" if not unlabelled.all() else None)
    for code in np.unique(labels[~unlabelled]):
        points = layout[labels == code]
        name = class_names[code] if code < len(class_names) else str(code)
        axes.scatter(points[:, 0], points[:, 1], s=5, color=colours[code], linewidths=0,
                     label=plain_text(textwrap.fill(name, LEGEND_CHARS)))
    axes.set_xticks([])
    axes.set_yticks([])
    if (~unlabelled).any():
        axes.legend(fontsize=6, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    set_title(axes, title, fontsize=9)  # last: where it lands depends on everything else
    return _png(figure)


def score_bars_png(bars: Sequence[Bar], title: str) -> bytes:
    """Grouped bars: one group per column (evaluator) of the dataset, one bar per encoder, spread as error bars."""
    columns = list(dict.fromkeys(bar.column for bar in bars))
    encoders = list(dict.fromkeys(bar.encoder for bar in bars))
    figure = _figure(max(4.6, 1.2 + 0.5 * len(columns) * len(encoders)), 3.4)
    axes = figure.add_subplot()
    colours = _palette(len(encoders))
    width = 0.8 / max(len(encoders), 1)
    by_key = {(bar.encoder, bar.column): bar for bar in bars}
    for e, encoder in enumerate(encoders):
        xs, values, spreads = [], [], []
        for c, column in enumerate(columns):
            if (encoder, column) in by_key:  # a missing cell draws no bar (never a zero-height one)
                bar = by_key[encoder, column]
                xs.append(c - 0.4 + width * (e + 0.5))
                values.append(bar.value)
                spreads.append(bar.spread)
        axes.bar(xs, values, width=width, yerr=spreads, capsize=2, color=colours[e],
                 label=plain_text(textwrap.fill(encoder, LEGEND_CHARS)))
    axes.set_xticks(range(len(columns)), [plain_text(c) for c in columns], fontsize=8)
    axes.set_ylabel("main score", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    set_title(axes, title, fontsize=9)  # last: where it lands depends on everything else
    return _png(figure)


def shots_figure(curves: Sequence[ShotCurve], title: str) -> Any:
    """Accuracy against shots per class (log axis), a colour per encoder, a line style per classifier, the 95 %
    intervals as error bars. The lines carry the values; the error bars are drawn apart, unlabelled."""
    encoders = list(dict.fromkeys(curve.encoder for curve in curves))
    colours = dict(zip(encoders, _palette(len(encoders))))
    figure = _figure(5.4, 3.6)
    axes = figure.add_subplot()
    for curve in curves:
        colour = colours[curve.encoder]
        axes.plot(curve.shots, curve.means, SHOT_LINE_STYLES.get(curve.classifier, ":"), marker="o", markersize=3,
                  color=colour, label=plain_text(textwrap.fill(f"{curve.encoder} ({curve.classifier})", LEGEND_CHARS)))
        with_interval = [i for i, low in enumerate(curve.lows) if low is not None and curve.highs[i] is not None]
        if with_interval:
            means = np.array([curve.means[i] for i in with_interval])
            spread = np.array([[curve.means[i] - curve.lows[i], curve.highs[i] - curve.means[i]]  # type: ignore[operator]
                               for i in with_interval]).T
            axes.errorbar([curve.shots[i] for i in with_interval], means, yerr=spread, fmt="none", ecolor=colour,
                          capsize=2, linewidth=0.8)
    shots = sorted({s for curve in curves for s in curve.shots})
    axes.set_xscale("log")
    axes.set_xticks(shots, [str(s) for s in shots], fontsize=7)
    axes.minorticks_off()
    axes.set_xlabel("shots per class", fontsize=8)
    axes.set_ylabel("test top-1 (mean over draws)", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    # long handles: the default is too short to tell a dashed line (centroid) from a solid one
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, handlelength=3.5)
    set_title(axes, title, fontsize=9)  # last: where it lands depends on everything else
    return figure


def shots_png(curves: Sequence[ShotCurve], title: str) -> bytes:
    return _png(shots_figure(curves, title))


def set_title(axes: Any, title: str, fontsize: float) -> None:
    """The title, wrapped onto as many lines as keep it inside the figure.

    Constrained layout makes room above the axes for a title but never narrows one, and the canvas cuts off what
    runs past its edges. A title is centred on the axes, not the figure (the legend sits to the right), and names
    can be long and unbroken (checkpoint paths) or wide (capitals, CJK), so the lines are measured where the
    title lands, not guessed from a character count."""
    figure = axes.figure
    chars = max(len(title), 1)
    while True:
        axes.set_title(plain_text(textwrap.fill(title, chars)), fontsize=fontsize)
        figure.draw_without_rendering()  # runs the layout: where the title lands depends on the legend's width
        box = axes.title.get_window_extent()
        centre = (box.x0 + box.x1) / 2
        room = 2 * min(centre, figure.bbox.width - centre)  # the widest line that fits, centred there
        if box.width <= room or chars <= 10:
            return
        chars = max(10, min(chars - 1, int(chars * room / box.width)))


def plain_text(text: str) -> str:
    """A name as matplotlib shows it literally: `$` would start mathtext and a leading `_` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20"
    cmap = colormaps[name]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]
