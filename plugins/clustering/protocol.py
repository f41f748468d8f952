"""The constants of `clustering/umap-v2` and the one rule that turns a run seed into clustering seeds.

What each constant means, and where the protocol differs from Lowe et al.'s code: docs/protocols.md#clusteringumap-v2.
A change to any of them changes the numbers, and so needs a new protocol id.
"""

from __future__ import annotations

PROTOCOL = "clustering/umap-v2"
UMAP_PARAMS = {"n_neighbors": 30, "min_dist": 0.0, "metric": "euclidean"}
KMEANS_N_INIT = 10
HDBSCAN_PARAMS = {"min_cluster_size": 5, "cluster_selection_method": "eom", "metric": "euclidean"}
SPECTRAL_PARAMS = {"affinity": "nearest_neighbors", "n_neighbors": 10, "assign_labels": "kmeans"}
AFFINITY_PARAMS = {"damping": 0.9, "max_iter": 1000, "convergence_iter": 15}
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
