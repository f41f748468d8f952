"""Names that evaluators write into records and the leaderboard reads back: defined once, here.

The core and the leaderboard import these constants instead of spelling the strings; an evaluator that writes one
of these keys means what is written here.
"""

from __future__ import annotations

# -- columns of the per-item outputs (`EvaluationResult.predictions`, saved as `seed-<n>.predictions.npz`) --------

#: Required: the item ids of the test split (`DatasetSplit.item_id`), so records of two encoders pair item by item.
IDS = "ids"
#: Optional, any evaluator: one float per item whose mean is the record's main score (per-item correctness,
#: per-query average precision, ...). `harness compare` bootstraps it, paired over the ids two records share.
SCORE = "score"
#: The top-1 classifier special case: true label and predicted label of each item, for the main metric.
LABEL = "label"
PREDICTION = "prediction"
#: ... and the five best classes of each item (N x 5), for the top-5 metric named like the main one.
TOP5 = "top5"
#: The probability a classifier gave its predicted class (the linear probe's softmax), for calibration (ECE).
CONFIDENCE = "confidence"

# -- keys of `record["metrics"]` ----------------------------------------------------------------------------------

#: Why a metric is None: {metric: reason}.
NULL_REASONS = "null_reasons"
#: Evaluators that run several seeds inside one record (clustering): {seed: {metric: value}}.
PER_SEED = "per_seed"
#: ... and the mean over those seeds: {metric: value}.
MEAN = "mean"
#: The clustering evaluator's label-free score: silhouette of the ward clusters in the UMAP space.
WARD_SILHOUETTE_UMAP = "ward.silhouette_umap"
#: Whether the dataset had labels (clustering records of unlabelled sets have no AMI).
LABELLED = "labelled"

#: The few-shot evaluator's summary per shot count: {"<shots>": {"<classifier>": {mean, sd, ci95_low, ci95_high},
#: "draws": [{"<classifier>_top1": accuracy, ...} per draw]}}; the site plots accuracy against shots from it.
PER_SHOTS = "per_shots"

#: Metrics where a smaller value is better (the linear probe's calibration errors; clustering's share of items left
#: as noise, under any clusterer's prefix): `harness leaderboard --metric` ranks and sorts them smallest first.
LOWER_IS_BETTER = ("ece", "nll", "brier", "noise_fraction")


def lower_is_better(metric: str | None) -> bool:
    """Whether a smaller `metric` is better; `kmeans.noise_fraction`-style prefixed names count by their last part."""
    return metric is not None and metric.rsplit(".", 1)[-1] in LOWER_IS_BETTER


# -- record["artifacts"] ------------------------------------------------------------------------------------------

#: A 2-D UMAP layout of the test items (N x 2), for the scatter plots of the site.
UMAP2D = "umap2d"

# -- values of record["encoder"]["info"] ----------------------------------------------------------------------------

#: Pretraining kinds that make an encoder a baseline (untrained networks, raw pixels): marked in the leaderboard,
#: and left out of the label-free ranking's correlation (their UMAP silhouette is high for the wrong reason).
BASELINE_PRETRAINING = ("random", "none")

# -- protocols ------------------------------------------------------------------------------------------------------

#: The clustering protocols whose records carry `mean[WARD_SILHOUETTE_UMAP]`, which the label-free ranking reads
#: (v2 differs from v1 only in the clustering seeds of run seeds >= 1; see docs/protocols.md).
LABEL_FREE_PROTOCOLS = ("clustering/umap-v1", "clustering/umap-v2")
#: The few-shot protocols, whose records carry `metrics[PER_SHOTS]`, which the site's accuracy-against-shots plot reads.
FEWSHOT_PROTOCOLS = ("fewshot/simpleshot-logreg-v1",)
