"""The constants of `clustering/umap-v2`, the clusterers' parameters as one object (so that a preset such as
`clustering/lowe-study-v1` can swap them), and the one rule that turns a run seed into clustering seeds.

What each constant means, and where the protocol differs from Lowe et al.'s code: docs/protocols.md#clusteringumap-v2.
A change to any of them changes the numbers, and so needs a new protocol id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

PROTOCOL = "clustering/umap-v2"
UMAP_PARAMS = {"n_neighbors": 30, "min_dist": 0.0, "metric": "euclidean"}
KMEANS_N_INIT = 10
HDBSCAN_PARAMS = {"min_cluster_size": 5, "cluster_selection_method": "eom", "metric": "euclidean"}
SPECTRAL_PARAMS = {"affinity": "nearest_neighbors", "n_neighbors": 10, "assign_labels": "kmeans"}
AFFINITY_PARAMS = {"damping": 0.9, "max_iter": 1000, "convergence_iter": 15}
HDBSCAN_LIBRARIES = ("hdbscan", "sklearn")


@dataclass(frozen=True)
class ClustererParams:
    """The parameters of the clusterers of one protocol, besides K and the clustering seed (passed per run)."""

    kmeans: Mapping[str, Any]  # sklearn.cluster.KMeans keywords
    #: "hdbscan": the hdbscan package's HDBSCAN (its min_samples does not count the point itself);
    #: "sklearn": sklearn.cluster.HDBSCAN (its min_samples does: its k is close to, not the same as, the package's
    #: k - 1; docs/protocols.md has the measured agreement).
    hdbscan_library: str
    hdbscan: Mapping[str, Any]
    #: HDBSCAN's max_cluster_size as a fraction of the N items clustered, round(fraction * N) (None: unbounded).
    hdbscan_max_cluster_fraction: float | None
    spectral: Mapping[str, Any]  # sklearn.cluster.SpectralClustering keywords (n_neighbors clamped to N - 1)
    affinity: Mapping[str, Any]  # sklearn.cluster.AffinityPropagation keywords

    def __post_init__(self) -> None:
        if self.hdbscan_library not in HDBSCAN_LIBRARIES:
            raise ValueError(f"hdbscan_library={self.hdbscan_library!r}: one of {HDBSCAN_LIBRARIES}")

    def hdbscan_max_cluster_size(self, n: int) -> int | None:
        # Python's round(), as Lowe et al.'s cluster.py computes it from its --max-samples fraction.
        fraction = self.hdbscan_max_cluster_fraction
        return None if fraction is None else round(fraction * n)

    def config(self) -> dict[str, Any]:
        """The clusterers' part of the record's `config`."""
        if self.hdbscan_library == "hdbscan":
            # min_samples None: the package's default (min_cluster_size); its generic algorithm needs float64.
            hdbscan = {**self.hdbscan, "min_samples": None, "dtype": "float64"}
        else:
            hdbscan = {"library": "sklearn.cluster.HDBSCAN", **self.hdbscan,
                       "max_cluster_size": f"round({self.hdbscan_max_cluster_fraction} * N)"}
        return {"kmeans": dict(self.kmeans), "hdbscan": {**hdbscan, "noise": "one label"},
                "spectral": dict(self.spectral), "affinity": dict(self.affinity)}


#: The clusterers of `clustering/umap-v2`.
DEFAULT_CLUSTERERS = ClustererParams(
    kmeans={"init": "k-means++", "n_init": KMEANS_N_INIT}, hdbscan_library="hdbscan", hdbscan=HDBSCAN_PARAMS,
    hdbscan_max_cluster_fraction=None, spectral=SPECTRAL_PARAMS, affinity=AFFINITY_PARAMS)

#: Default of the `max_n_quadratic` option: spectral and affinity propagation run only up to this many items.
MAX_N_QUADRATIC = 5000
#: Default of the `n_seeds` option: clustering seeds per record.
N_SEEDS = 3
#: Silhouettes above this many items are computed on a seeded random sample of this size.
SILHOUETTE_MAX_N = 10_000
#: Fewer test items than this and there is nothing to cluster.
MIN_ITEMS = 10

LABELLED_CLUSTERERS = ("kmeans", "ward", "hdbscan", "spectral", "affinity")
UNLABELLED_CLUSTERERS = ("ward", "hdbscan")
QUADRATIC_CLUSTERERS = ("spectral", "affinity")


def clustering_seeds(run_seed: int, n_seeds: int) -> list[int]:
    """The clustering seeds (UMAP's and the clusterers' random_state) of the record made with `run_seed`.

    Run seed s owns the block n_seeds*s .. n_seeds*s + n_seeds - 1: run seed 0 gives the protocol's 0, 1, 2, and
    two run seeds of one suite never repeat a clustering seed (run seeds [0, 1] give 0-2 and 3-5).
    """
    return [int(n_seeds) * int(run_seed) + i for i in range(int(n_seeds))]
