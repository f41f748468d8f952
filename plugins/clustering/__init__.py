"""Clustering `clustering/umap-v2`: how well frozen embeddings cluster, after Lowe et al. (2024).

"An Empirical Study into Clustering of Unseen Datasets with Self-Supervised Encoders": the test embeddings are
reduced with UMAP (50 components, once per clustering seed, shared by every clusterer), clustered by K-means,
agglomerative ward, HDBSCAN, spectral clustering and affinity propagation, and scored by AMI against the classes;
the silhouette of the clusters in UMAP space is a label-free proxy. Main score: ward's AMI, mean over the
clustering seeds (0, 1, 2 for run seed 0; run seed s uses 3s, 3s+1, 3s+2). The modules: `evaluator` (the
Evaluator), `clusterers`, `silhouette` (the silhouette maths), `ward_threshold` (unlabelled ward's threshold
search), `label_metrics`, `summary` (mean and spread over seeds), `protocol` (constants, seeds) and `metrics` (the
record's metric names). Every parameter, metric key and difference from Lowe et al.'s zs-ssl-clustering:
docs/protocols.md#clusteringumap-v2. `study` is the preset `clustering-study` (`clustering/lowe-study-v1`): the same
evaluator and reductions with the clusterer settings of Lowe et al.'s own code.
"""

from __future__ import annotations

from typing import Callable

from harness import hookimpl

from .clusterers import (QUADRATIC_BYTES_PER_PAIR, ClusterJob, ClustererRun, largest_fitting_n,
                         quadratic_memory_bytes, run_clusterer)
from .evaluator import ClusteringEvaluator
from .label_scores import label_metrics
from .metrics import EXTRA_METRICS, LABEL_METRICS, METRICS
from .protocol import (AFFINITY_PARAMS, DEFAULT_CLUSTERERS, HDBSCAN_PARAMS, KMEANS_N_INIT, LABELLED_CLUSTERERS,
                       MAX_N_QUADRATIC, MIN_ITEMS, PROTOCOL, QUADRATIC_CLUSTERERS, SILHOUETTE_MAX_N, SPECTRAL_PARAMS,
                       UMAP_PARAMS, UNLABELLED_CLUSTERERS, ClustererParams, clustering_seeds)
from .silhouette import cluster_distance_sums, silhouette_from_sums, silhouettes
from .study import STUDY_CLUSTERERS, ClusteringStudyEvaluator
from .ward_threshold import AUTO_GRID_POINTS, AUTO_MAX_CLUSTERS, AUTO_MIN_MEAN_SIZE, ward_by_silhouette

__all__ = [
    "AFFINITY_PARAMS", "AUTO_GRID_POINTS", "AUTO_MAX_CLUSTERS", "AUTO_MIN_MEAN_SIZE", "DEFAULT_CLUSTERERS",
    "EXTRA_METRICS", "HDBSCAN_PARAMS", "KMEANS_N_INIT", "LABELLED_CLUSTERERS", "LABEL_METRICS", "MAX_N_QUADRATIC", "METRICS",
    "MIN_ITEMS", "PROTOCOL", "QUADRATIC_BYTES_PER_PAIR", "QUADRATIC_CLUSTERERS", "SILHOUETTE_MAX_N",
    "SPECTRAL_PARAMS", "STUDY_CLUSTERERS", "UMAP_PARAMS", "UNLABELLED_CLUSTERERS", "ClusterJob", "ClustererParams",
    "ClustererRun", "ClusteringEvaluator", "ClusteringStudyEvaluator",
    "cluster_distance_sums", "clustering_seeds", "label_metrics", "largest_fitting_n", "quadratic_memory_bytes",
    "register_evaluators", "run_clusterer", "silhouette_from_sums", "silhouettes", "ward_by_silhouette",
]


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("clustering", ClusteringEvaluator,
             "UMAP + K-means/ward/HDBSCAN/spectral/affinity clustering (clustering/umap-v2): AMI, silhouettes")
    register("clustering-study", ClusteringStudyEvaluator,
             "clustering with Lowe et al.'s own clusterer settings (clustering/lowe-study-v1); opt-in: not in a "
             "plain `harness run`")
