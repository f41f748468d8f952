"""Label-free ranking: encoders of one dataset ranked by the UMAP silhouette of their ward clusters, beside
their AMI ranking, with the Spearman correlation of the two (Lowe et al.'s proxy for clustering quality).

Untrained and raw-pixel encoders are listed but left out of the correlation: their UMAP silhouette is high for
the wrong reason (compact, meaningless clusters; the study found the same), so including them would make the
proxy look inverted or spuriously good. With fewer than five encoders left, no correlation is given at all:
a rank correlation of three or four points says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from harness import metric_names as names
from harness.errors import HarnessError
from harness.records import dataset_column

SILHOUETTE_KEY = names.WARD_SILHOUETTE_UMAP
MIN_ENCODERS_FOR_CORRELATION = 5


@dataclass
class LabelFreeRow:
    encoder: str
    silhouette: float | None
    ami: float | None
    excluded: bool  # untrained / pixels: shown, not correlated
    silhouette_rank: int | None = None
    ami_rank: int | None = None


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho (`scipy.stats.spearmanr`: the Pearson correlation of the average ranks); 0.0 where one side
    is constant (no rank order to correlate)."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:  # scipy warns and gives NaN
        return 0.0
    return float(spearmanr(x, y).statistic)


def label_free_rows(records: Iterable[dict[str, Any]], dataset: str) -> list[LabelFreeRow]:
    rows = []
    for record in records:
        if (dataset_column(record) != dataset or record["evaluator"]["protocol"] not in names.LABEL_FREE_PROTOCOLS
                or record["evaluator"].get("non_default_options") or record["status"] != "ok"):
            continue
        metrics = record["metrics"]
        silhouette = (metrics.get(names.MEAN) or {}).get(SILHOUETTE_KEY)
        ami = record["main_score"] if metrics.get(names.LABELLED, True) else None
        rows.append(LabelFreeRow(record["encoder"]["name"], silhouette, ami,
                                 record["encoder"]["info"].get("pretraining") in names.BASELINE_PRETRAINING))
    _rank(rows, "silhouette", "silhouette_rank")
    _rank(rows, "ami", "ami_rank")
    return sorted(rows, key=lambda r: (r.silhouette_rank is None, r.silhouette_rank or 0, -(r.silhouette or 0)))


def _rank(rows: list[LabelFreeRow], value: str, rank: str) -> None:
    """Competition ranks, best first (`scipy.stats.rankdata(method="min")`: equal values share the better rank),
    over the rows that have the value; the others keep no rank."""
    from scipy.stats import rankdata

    scored = [row for row in rows if getattr(row, value) is not None]
    for row, position in zip(scored, rankdata([-getattr(row, value) for row in scored], method="min")):
        setattr(row, rank, int(position))


def render_label_free(records: list[dict[str, Any]], fmt: str = "plain") -> str:
    from tabulate import tabulate

    from harness.leaderboard.table import TABULATE_FORMATS

    datasets = sorted({dataset_column(r) for r in records if r["evaluator"]["protocol"] in names.LABEL_FREE_PROTOCOLS})
    if not datasets:
        raise HarnessError("no clustering records: run `harness run --eval clustering` first")
    out = []
    for dataset in datasets:
        rows = label_free_rows(records, dataset)
        table = [[r.silhouette_rank or "—", r.encoder + (" (untrained/pixels: not correlated)" if r.excluded else ""),
                  "—" if r.silhouette is None else f"{r.silhouette:.3f}", r.ami_rank or "—",
                  "—" if r.ami is None else f"{r.ami:.3f}"] for r in rows]
        out.append(f"{dataset}: ranked by UMAP silhouette of ward clusters (label-free) beside AMI (needs labels)")
        out.append(tabulate(table, headers=["silhouette rank", "encoder", "UMAP silhouette", "AMI rank", "AMI"],
                            tablefmt=TABULATE_FORMATS.get(fmt, "simple"), disable_numparse=True))
        usable = [r for r in rows if not r.excluded and r.silhouette is not None and r.ami is not None]
        if any(r.excluded for r in rows):
            out.append("Untrained and raw-pixel encoders often have the highest UMAP silhouette for the wrong reason "
                       "(compact but meaningless clusters); they are shown but left out of the correlation.")
        if len(usable) < MIN_ENCODERS_FOR_CORRELATION:
            out.append(f"Caveat: only {len(usable)} pretrained encoder(s) with both scores; at least "
                       f"{MIN_ENCODERS_FOR_CORRELATION} are needed before a rank correlation means anything, so none "
                       f"is given. Do not read this ranking as evidence that the proxy works or fails.")
        else:
            rho = spearman([r.silhouette for r in usable], [r.ami for r in usable])
            out.append(f"Spearman correlation of silhouette and AMI ranks over {len(usable)} pretrained encoders: "
                       f"{rho:+.3f}")
        out.append("")
    return "\n".join(out)
