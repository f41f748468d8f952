"""The names under which a `clustering/umap-v2` record keeps its numbers, defined once.

The leaderboard, `harness compare`, the label-free ranking and the static site read some of them (`PER_SEED`,
`MEAN`, `SEEDS`, `LABELLED`, `WARD_SILHOUETTE_UMAP`, the `UMAP2D` artifact); every clustering module uses these
constants rather than spelling the strings. "<c>.<m>" (`metric_key`) is clusterer c's metric m, e.g. "ward.ami".
"""

from __future__ import annotations

# The names the leaderboard reads back are the core's (`harness.metric_names`), re-exported here so that every
# clustering module finds all of its names in one place.
from harness.metric_names import IDS, LABEL, LABELLED, MEAN, NULL_REASONS, PER_SEED, UMAP2D  # noqa: F401
from harness.metric_names import WARD_SILHOUETTE_UMAP as _SHARED_WARD_SILHOUETTE_UMAP

# -- top-level keys of `EvaluationResult.metrics` ------------------------------------------------------------------
N_ITEMS = "n_items"
N_LABELLED_ITEMS = "n_labelled_items"
N_CLASSES = "n_classes"
SEEDS = "seeds"
CLUSTERERS = "clusterers"
STD = "std"
SKIPPED = "skipped"
REDUCTION = "reduction"
CONFIG = "config"
WARD_THRESHOLD = "ward_threshold"
SILHOUETTE_ITEMS = "silhouette_items"
SUBSAMPLED = "subsampled"
RUNTIME = "runtime"

# -- per-clusterer metrics ("<c>.<m>") -------------------------------------------------------------------------
AMI = "ami"
ARI = "ari"
NMI = "nmi"
SILHOUETTE_UMAP = "silhouette_umap"  # in the reduced space (UMAP by default)
SILHOUETTE_ORIG = "silhouette_orig"  # in the original feature space
N_CLUSTERS = "n_clusters"
NOISE_FRACTION = "noise_fraction"
AMI_CLUSTERED = "ami_clustered"  # HDBSCAN only: AMI over the points it clustered
DISTANCE_THRESHOLD = "distance_threshold"  # unlabelled ward only

LABEL_METRICS = (AMI, ARI, NMI)
METRICS = (AMI, ARI, NMI, SILHOUETTE_UMAP, SILHOUETTE_ORIG, N_CLUSTERS, NOISE_FRACTION)
EXTRA_METRICS = {"hdbscan": (AMI_CLUSTERED,)}



def metric_key(clusterer: str, metric: str) -> str:
    """"<clusterer>.<metric>", the key of one clusterer's metric in `per_seed`, `mean`, `std`, `null_reasons`."""
    return f"{clusterer}.{metric}"


def prediction_key(clusterer: str, seed: int) -> str:
    """"<clusterer>.seed<s>", the predictions column of one clusterer on clustering seed s."""
    return f"{clusterer}.seed{seed}"


#: The main score: ward's AMI over the clustering seeds, or on unlabelled data ward's UMAP silhouette.
WARD_AMI = metric_key("ward", AMI)
WARD_SILHOUETTE_UMAP = metric_key("ward", SILHOUETTE_UMAP)
WARD_DISTANCE_THRESHOLD = metric_key("ward", DISTANCE_THRESHOLD)
assert WARD_SILHOUETTE_UMAP == _SHARED_WARD_SILHOUETTE_UMAP, "the leaderboard reads this key under that name"
