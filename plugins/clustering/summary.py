"""What the clustering seeds of one record produced, and the record's metrics made from it: per-seed values,
mean and spread over the seeds, why a value is None, and the protocol's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import metrics as names
from .clusterers import ClustererRun
from .label_scores import finite
from .protocol import SILHOUETTE_MAX_N, UMAP_PARAMS, ClustererParams
from .ward_threshold import AUTO_GRID_POINTS, AUTO_MAX_CLUSTERS, AUTO_MIN_MEAN_SIZE

if TYPE_CHECKING:
    from .evaluator import Items


@dataclass
class SeedResults:
    """Collected seed by seed: metric values, reasons for None, skipped clusterers, runs, timings, warnings."""

    clusterers: Sequence[str]
    per_seed: dict[int, dict[str, Any]] = field(default_factory=dict)
    null_reasons: dict[str, dict[int, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    runs: dict[tuple[int, str], ClustererRun] = field(default_factory=dict)
    ward_threshold: dict[str, Any] = field(default_factory=dict)
    reduction_params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    warned: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seconds = {"digest": 0.0, "reduce": [], names.SILHOUETTE_UMAP: [], names.SILHOUETTE_ORIG: 0.0,
                        **{c: [] for c in self.clusterers}}

    def note_warnings(self, stage: str, messages: list[str]) -> None:
        for m in messages:
            self.warned.setdefault(stage, [])
            if m not in self.warned[stage]:
                self.warned[stage].append(m)

    def set_metric(self, seed: int, key: str, value: Any, reason: str | None = None) -> None:
        value = finite(value)
        if value is None:
            self.null_reasons.setdefault(key, {})[seed] = reason or "not finite"
        self.per_seed.setdefault(seed, {})[key] = value


def _ordered_keys(results: SeedResults, seeds: list[int]) -> list[str]:
    """Every "<c>.<m>" of any seed, by clusterer (in run order), then metric (in `METRICS` order)."""
    clusterers = list(results.clusterers)
    metric_order = [*names.METRICS, *names.EXTRA_METRICS.get("hdbscan", ()), names.DISTANCE_THRESHOLD]

    def order(key: str) -> tuple[int, int, str]:
        c, _, m = key.partition(".")
        return (clusterers.index(c) if c in clusterers else len(clusterers),
                metric_order.index(m) if m in metric_order else len(metric_order), key)

    return sorted({key for s in seeds for key in results.per_seed[s]}, key=order)


def _over_seeds(per_seed: dict[int, dict[str, Any]], keys: list[str], seeds: list[int]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mean, sample standard deviation) of each key over the seeds; None when any seed's value is None."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in keys:
        values = [per_seed[s].get(key) for s in seeds]
        if any(v is None for v in values):
            mean[key] = std[key] = None
            continue
        mean[key] = finite(float(np.mean(values)))
        std[key] = finite(float(np.std(values, ddof=1))) if len(values) > 1 else None
    return mean, std


def _reasons(null_reasons: dict[str, dict[int, str]], seeds: list[int]) -> dict[str, str]:
    """One reason per key: the same for every seed, or each seed's."""
    reasons: dict[str, str] = {}
    for key, by_seed in null_reasons.items():
        distinct = set(by_seed.values())
        if len(distinct) == 1 and len(by_seed) == len(seeds):
            reasons[key] = next(iter(distinct))
        else:
            reasons[key] = "; ".join(f"seed {s}: {r}" for s, r in sorted(by_seed.items()))
    if len(seeds) == 1:
        reasons["std"] = "one seed: no spread over seeds (option n_seeds)"
    return reasons


def protocol_config(options: dict[str, Any], labelled: bool, params: ClustererParams) -> dict[str, Any]:
    """Every constant of the protocol as used, and the versions of the libraries that compute it."""
    import sklearn

    clusterers = params.config()
    return {
        "umap": {**UMAP_PARAMS, "n_components": options["n_components"]},
        "kmeans": clusterers["kmeans"],
        "ward": {"linkage": "ward", "n_clusters": "K" if labelled else None,
                 "distance_threshold": None if labelled else "max silhouette_umap",
                 "auto_max_clusters": AUTO_MAX_CLUSTERS, "auto_min_mean_size": AUTO_MIN_MEAN_SIZE,
                 "auto_grid_points": AUTO_GRID_POINTS},
        "hdbscan": clusterers["hdbscan"],
        "spectral": clusterers["spectral"],
        "affinity": clusterers["affinity"],
        "max_n_quadratic": options["max_n_quadratic"],
        "silhouette_max_n": SILHOUETTE_MAX_N,
        "versions": {"scikit-learn": sklearn.__version__, "hdbscan": _version("hdbscan"),
                     "umap-learn": _version("umap-learn")},
    }


def assemble(items: "Items", results: SeedResults, options: dict[str, Any],
             params: ClustererParams) -> dict[str, Any]:
    """The record's metrics, in the order the record shows them (the runtime is added by the evaluator)."""
    seeds = items.seeds
    keys = _ordered_keys(results, seeds)
    per_seed = {s: {key: results.per_seed[s][key] for key in keys if key in results.per_seed[s]} for s in seeds}
    mean, std = _over_seeds(per_seed, keys, seeds)
    return {
        names.LABELLED: items.labelled,
        names.N_ITEMS: items.n,
        names.N_LABELLED_ITEMS: items.n_labelled,
        names.N_CLASSES: items.k,
        names.SEEDS: seeds,
        names.CLUSTERERS: list(results.clusterers),
        names.PER_SEED: {str(s): per_seed[s] for s in seeds},
        names.MEAN: mean,
        names.STD: std,
        names.NULL_REASONS: _reasons(results.null_reasons, seeds),
        names.SKIPPED: results.skipped,
        names.REDUCTION: results.reduction_params,
        names.CONFIG: protocol_config(options, items.labelled, params),
    }


def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
