"""`clustering/lowe-study-v1`: the clustering evaluator with the clusterer settings of Lowe et al.'s own code
(zs-ssl-clustering: `zs_ssl_clustering/cluster.py` and the defaults of `analysis/param_setup.py`), so that its
partitions are the study code's on the same reduced embeddings.

Everything else (the UMAP reduction, which is shared with `clustering` through `harness.plugins.umap_cache`, the
seeds, the metrics, the options) is the default protocol's. The three clusterers that differ, and why the default
keeps its own choices: docs/protocols.md#clusteringlowe-study-v1.
"""

from __future__ import annotations

from dataclasses import replace

from .evaluator import ClusteringEvaluator
from .protocol import DEFAULT_CLUSTERERS, HDBSCAN_PARAMS, SPECTRAL_PARAMS, ClustererParams

PROTOCOL = "clustering/lowe-study-v1"

STUDY_CLUSTERERS: ClustererParams = replace(
    DEFAULT_CLUSTERERS,
    # cluster.py: one k-means++ start, up to --max-iter (1,000 by default) iterations.
    kmeans={"init": "k-means++", "n_init": 1, "max_iter": 1000},
    # cluster.py: sklearn.cluster.HDBSCAN(min_cluster_size=--min-samples (5), max_cluster_size=round(--max-samples
    # (0.2 in param_setup.py) * N)), min_samples left at its default, min_cluster_size. scikit-learn counts the
    # point itself in min_samples, so this is about the hdbscan package's min_samples=4 (and the default
    # protocol's package default, 5, about scikit-learn's 6; close, not label for label).
    hdbscan_library="sklearn",
    hdbscan={**HDBSCAN_PARAMS, "min_samples": HDBSCAN_PARAMS["min_cluster_size"]},
    hdbscan_max_cluster_fraction=0.2,
    # cluster.py's --spectral-assigner default (and param_setup.py's): cluster_qr, which has no random restarts.
    spectral={**SPECTRAL_PARAMS, "assign_labels": "cluster_qr"},
)


class ClusteringStudyEvaluator(ClusteringEvaluator):
    """The clustering evaluator with Lowe et al.'s clusterer settings: K-means with one start and 1,000
    iterations, scikit-learn's HDBSCAN with clusters of at most 20 % of the items, spectral with cluster_qr."""

    name = "clustering-study"
    protocol = PROTOCOL
    clusterer_params = STUDY_CLUSTERERS
    # A second clustering column of the same reductions: asked for by name (`--eval clustering-study`, a suite),
    # not part of a plain `harness run`.
    in_default_run = False
