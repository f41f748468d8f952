"""Clustering `clustering/umap-v1`: how well frozen embeddings cluster, after Lowe et al. (2024).

"An Empirical Study into Clustering of Unseen Datasets with Self-Supervised Encoders": the test embeddings are
reduced with UMAP, clustered by conventional algorithms, and scored by AMI against the classes; the silhouette of
the clusters in UMAP space is a label-free proxy for that score.

Protocol, per seed s (seeds `seed, seed+1, ...`, option `n_seeds`, 3 by default; one seed's spread, about 0.03 AMI,
is as large as real differences between encoders):

- reduction: UMAP(n_neighbors=30, n_components=50, min_dist=0, metric="euclidean", random_state=s) of the test
  features, computed once per (features, seed) and shared by every clusterer (`harness.plugins.umap_cache`, in memory
  and in `test.meta["derived_dir"]` when the harness gives one). Options `reduce` ("umap", "pca", "none") and
  `n_components` change it, and make another cell. UMAP with a fixed random_state runs single-threaded.
- K = the number of distinct labels among the test items (as Lowe et al.: classes absent from the test split are
  not counted).
- clusterers, all on the reduced vectors:
  `kmeans`   sklearn KMeans(K, k-means++, n_init=10, random_state=s). Ten restarts rather than Lowe et al.'s one:
             they cost little beside the UMAP and take away most of K-means' own seed noise.
  `ward`     sklearn AgglomerativeClustering(K, linkage="ward"). It is quadratic too (scipy keeps N(N-1)/2 float64
             distances: 100 MB at 5,000 items, 10 GB at 50,000) but, as the main score, it always runs.
  `hdbscan`  hdbscan.HDBSCAN(min_cluster_size=5, min_samples default, cluster_selection_method="eom",
             metric="euclidean") on a float64 copy (its generic algorithm fails on float32). Noise points (-1) are
             scored as one more label, as in the paper; `noise_fraction` and `ami_clustered` (the AMI over the
             points it did cluster) are reported beside it.
  `spectral` sklearn SpectralClustering(K, affinity="nearest_neighbors", n_neighbors=10, assign_labels="kmeans",
             random_state=s). The k-NN affinity, not sklearn's default RBF with gamma=1, because it does not
             depend on the scale of the space (an RBF of unit width is empty on raw features, `reduce="none"`).
  `affinity` sklearn AffinityPropagation(damping=0.9, max_iter=1000, convergence_iter=15, random_state=s);
             it picks its own number of clusters. A run that does not converge gives no labels (None + reason).
  Spectral and affinity propagation run only where N <= `max_n_quadratic` (option, 5,000 by default):
  affinity propagation keeps three dense N x N float64 matrices (600 MB at 5,000, 60 GB at 50,000) and spectral
  clustering's eigensolver also grows faster than N. Above the limit they are skipped and say why.
- memory: before a quadratic method runs, its memory is estimated (`QUADRATIC_BYTES_PER_PAIR`) and compared with
  the memory budget (`memory_budget_mb`, an execution setting; default from the device, `harness.memory`).
  Spectral or affinity propagation over it is skipped with the memory it needs (the record keeps the others).
  Ward over it raises HarnessError before the UMAP: it is the main score. Option `subsample` (None by default:
  never silently) clusters a random `subsample` of the test items, drawn with the run's seed, the same for
  every clustering seed; the record says `subsampled`, and predictions cover those items only.
- unlabelled test data (every label -1): `hdbscan`, and `ward` cut at the distance threshold that maximises the
  silhouette in the reduced space (Lowe et al.'s rule). The candidate thresholds are the gaps between merge
  heights of the ward tree that leave 2 .. min(1000, N/5) clusters: about 40 log-spaced cluster counts, then
  every count between the best one's neighbours. The chosen threshold and cluster count are reported.
  Label metrics are None with a reason.
- metrics per clusterer: `ami` (arithmetic normalisation), `ari`, `nmi`, `silhouette_umap` (silhouette of the
  predicted clusters in the reduced space: UMAP by default, the PCA or the raw features under the other
  `reduce` options), `silhouette_orig` (in the original feature space), `n_clusters` (noise not counted) and
  `noise_fraction` (0 except for HDBSCAN). HDBSCAN adds `ami_clustered`; unlabelled ward adds
  `distance_threshold`. Silhouettes leave HDBSCAN's noise points out (noise is not a cluster; the noise fraction
  stands beside it). Above 10,000 items they are computed on one seeded random sample of 10,000 items (the same
  sample for every clusterer and seed), as scikit-learn's `silhouette_score(sample_size=...)` does. They are
  computed in torch, on the evaluation device, from one pass of pairwise distances shared by all clusterers, and
  agree with scikit-learn's `silhouette_score` (a test checks it).
- main score: the mean over seeds of `ward.ami`; on unlabelled data, of `ward.silhouette_umap`.

Metric keys (`EvaluationResult.metrics`), with "<c>.<m>" meaning clusterer c, metric m, e.g. "ward.ami":

    labelled          bool: any test label >= 0 (items labelled -1 are left out of label metrics)
    n_items, n_labelled_items, n_classes (K; None when unlabelled)
    seeds             [seed, seed+1, ...]
    clusterers        the clusterers of this run, in order
    per_seed          {"<seed>": {"<c>.<m>": value}}
    mean, std         {"<c>.<m>": value} over seeds; std is the sample standard deviation (ddof=1); a mean is
                      None when any seed's value is None. The label-free ranking reads
                      metrics["mean"]["ward.silhouette_umap"].
    null_reasons      {"<c>.<m>": why that metric is None (for any seed)}; "std" when there is only one seed
    skipped           {"<c>": why the clusterer did not run}
    ward_threshold    (unlabelled only) {"<seed>": {"threshold", "n_clusters", "candidates", "k_max"}}
    silhouette_items  how many items the silhouettes were computed on (N, or the 10,000 of the sample)
    subsampled        (option subsample only) {"n_items", "of", "seed"}
    reduction         the reduction's parameters as used (the first seed's; seeds are in `seeds`), with the
                      features' content hash
    config            every constant of the protocol, and library versions
    runtime           {"seconds": {stage: [per seed] or total}, "reduction_source": [computed|memory|disk],
                       "warnings": {"<c>" or "reduce": [distinct warning messages]}}: the only part that
                      differs between two runs with the same seed (a cached reduction warns nothing)

No value is NaN or infinite: a metric that cannot be computed (one predicted cluster has no silhouette, a label
metric without labels) is None with its reason. Predictions: "ids", "label", and "<c>.seed<s>" (int64 cluster
labels, -1 for noise) for every clusterer that ran. Artifacts: "umap2d", a 2-D UMAP (same parameters, first seed)
of the same features, for plots.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.memory import budget_bytes, format_bytes
from harness.types import Embeddings, EvaluationResult, Evaluator

PROTOCOL = "clustering/umap-v1"
UMAP_PARAMS = {"n_neighbors": 30, "min_dist": 0.0, "metric": "euclidean"}
KMEANS_N_INIT = 10
HDBSCAN_PARAMS = {"min_cluster_size": 5, "cluster_selection_method": "eom", "metric": "euclidean"}
SPECTRAL_PARAMS = {"affinity": "nearest_neighbors", "n_neighbors": 10, "assign_labels": "kmeans"}
AFFINITY_PARAMS = {"damping": 0.9, "max_iter": 1000, "convergence_iter": 15}
#: Default of the `max_n_quadratic` option: spectral and affinity propagation run only up to this many items.
MAX_N_QUADRATIC = 5000
#: Bytes per N^2 that the quadratic clusterers need, so that a set too large is refused before it exhausts memory:
#: ward, scipy's N(N-1)/2 float64 distances and the working copy its nn-chain makes (8 N^2); affinity
#: propagation, its dense N x N float64 similarity, availability, responsibility and temporary matrices (32 N^2);
#: spectral (k-NN affinity, shift-invert ARPACK), as measured here (8.5 and 10.3 N^2 at N = 2,000 and 4,000).
QUADRATIC_BYTES_PER_PAIR = {"ward": 8, "spectral": 10, "affinity": 32}
#: Silhouettes above this many items are computed on a seeded random sample of this size.
SILHOUETTE_MAX_N = 10_000
#: Unlabelled ward: candidate cuts leave 2 .. min(AUTO_MAX_CLUSTERS, N // AUTO_MIN_MEAN_SIZE) clusters.
AUTO_MAX_CLUSTERS = 1000
AUTO_MIN_MEAN_SIZE = 5
AUTO_GRID_POINTS = 40
#: Fewer test items than this and there is nothing to cluster.
MIN_ITEMS = 10

LABELLED_CLUSTERERS = ("kmeans", "ward", "hdbscan", "spectral", "affinity")
UNLABELLED_CLUSTERERS = ("ward", "hdbscan")
QUADRATIC_CLUSTERERS = ("spectral", "affinity")
LABEL_METRICS = ("ami", "ari", "nmi")
METRICS = ("ami", "ari", "nmi", "silhouette_umap", "silhouette_orig", "n_clusters", "noise_fraction")
EXTRA_METRICS = {"hdbscan": ("ami_clustered",)}

# Bounds on the torch work of the silhouettes: a block of pairwise distances, and the one-hot columns per pass.
_DISTANCE_BLOCK_ELEMENTS = 1 << 24
_ONEHOT_ELEMENTS = 1 << 25


# -- silhouettes --------------------------------------------------------------------------------------------------


def _dense_codes(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster labels -> codes 0..k-1, with every negative label (noise) kept as -1."""
    codes = np.full(labels.shape, -1, dtype=np.int64)
    valid = labels >= 0
    uniques, inverse = np.unique(labels[valid], return_inverse=True)
    codes[valid] = inverse
    return codes, len(uniques)


def _torch_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return device
    return "cpu"  # MPS has no float64; UMAP and the clusterers run on the CPU anyway


def cluster_distance_sums(points: np.ndarray, labelings: Sequence[np.ndarray],
                          device: str = "cpu") -> list[np.ndarray]:
    """For each labeling, an (n, k) float64 array: the sum of Euclidean distances from each point to each cluster.

    Noise (-1) belongs to no cluster. One pass over blocks of the pairwise distances serves many labelings (their
    one-hot matrices side by side), so the original space, the expensive one, is read once for every clusterer
    and seed. Distances are computed in float64 as |x|^2 + |y|^2 - 2xy with a zero diagonal, as scikit-learn does.
    """
    import torch

    dev = _torch_device(device)
    n = points.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float64)).to(dev)
    sq = (x * x).sum(1)
    coded = [_dense_codes(np.asarray(labels)) for labels in labelings]
    results: list[np.ndarray] = [np.zeros((n, k)) for _, k in coded]
    columns_per_pass = max(1, _ONEHOT_ELEMENTS // max(n, 1))
    rows_per_block = max(1, _DISTANCE_BLOCK_ELEMENTS // max(n, 1))
    group: list[int] = []
    groups: list[list[int]] = []
    width = 0
    for i, (_, k) in enumerate(coded):
        if group and width + k > columns_per_pass:
            groups.append(group)
            group, width = [], 0
        group.append(i)
        width += k
    if group:
        groups.append(group)
    for members in groups:
        offsets = np.cumsum([0] + [coded[i][1] for i in members])
        onehot = torch.zeros(n, int(offsets[-1]), dtype=torch.float64, device=dev)
        for j, i in enumerate(members):
            codes = torch.from_numpy(coded[i][0]).to(dev)
            rows = torch.nonzero(codes >= 0).squeeze(1)
            onehot[rows, codes[rows] + int(offsets[j])] = 1.0
        if onehot.shape[1] == 0:
            continue
        for start in range(0, n, rows_per_block):
            stop = min(start + rows_per_block, n)
            d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
            dist = d2.clamp_min_(0.0).sqrt_()
            idx = torch.arange(start, stop, device=dev)
            dist[idx - start, idx] = 0.0
            sums = (dist @ onehot).cpu().numpy()
            for j, i in enumerate(members):
                results[i][start:stop] = sums[:, offsets[j]:offsets[j + 1]]
    return results


def silhouette_from_sums(sums: np.ndarray, labels: np.ndarray) -> tuple[float | None, str | None]:
    """Mean silhouette of the non-noise points, from their distance sums to each cluster (`cluster_distance_sums`).

    As scikit-learn: a point alone in its cluster scores 0, and the score needs 2 <= clusters <= points - 1.
    """
    codes, k = _dense_codes(np.asarray(labels))
    return _silhouette(sums, codes, k)


def _silhouette(sums: np.ndarray, codes: np.ndarray, k: int) -> tuple[float | None, str | None]:
    """`sums[i, j]`: distance sum from point i to cluster j; `codes`: each point's column (-1: left out)."""
    valid = codes >= 0
    n_valid = int(valid.sum())
    counts = np.bincount(codes[valid], minlength=k).astype(np.float64)
    k_present = int((counts > 0).sum())
    if k_present < 2:
        return None, f"silhouette needs at least 2 clusters; {k_present} predicted"
    if k_present > n_valid - 1:
        return None, f"silhouette needs fewer clusters than points; {k_present} clusters for {n_valid} points"
    own = codes[valid]
    s = sums[valid]
    rows = np.arange(n_valid)
    own_count = counts[own]
    a = s[rows, own] / np.maximum(own_count - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(counts > 0, s / counts, np.inf)
    means[rows, own] = np.inf
    b = means.min(axis=1)
    denominator = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where((own_count > 1) & (denominator > 0), (b - a) / denominator, 0.0)
    value = float(score.mean())
    if not math.isfinite(value):
        return None, "silhouette is not finite"
    return value, None


def silhouettes(points: np.ndarray, labelings: Sequence[np.ndarray],
                device: str = "cpu") -> list[tuple[float | None, str | None]]:
    """Silhouette (value or None, reason) of each labeling of `points`; noise (-1) is left out."""
    sums = cluster_distance_sums(points, labelings, device)
    return [silhouette_from_sums(s, labels) for s, labels in zip(sums, labelings)]


# -- ward with a silhouette-chosen threshold ------------------------------------------------------------------------


def _merge_rows(sums_t: np.ndarray, labels_from: np.ndarray, labels_to: np.ndarray, k_to: int) -> np.ndarray:
    """Rows of per-cluster sums for a finer cut (`labels_from`) -> rows for a coarser, nested cut (`labels_to`)."""
    member = np.empty(sums_t.shape[0], dtype=np.int64)
    member[labels_from] = np.arange(len(labels_from))  # one point of each fine cluster
    target = labels_to[member]
    order = np.argsort(target, kind="stable")
    starts = np.searchsorted(target[order], np.arange(k_to))
    return np.add.reduceat(sums_t[order], starts, axis=0)


def ward_by_silhouette(points: np.ndarray, sample: np.ndarray | None,
                       device: str = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
    """Ward clustering of `points` cut at the distance threshold with the best silhouette (on `sample` rows).

    One ward tree; the candidate thresholds lie in the gaps between its merge heights. The pairwise distances are
    read once, into the distance sums from every (sampled) point to each cluster of the finest candidate cut;
    the cuts are nested, so walking from fine to coarse, each cut's sums are sums of rows of the previous one's.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    n = points.shape[0]
    tree = linkage(np.asarray(points, dtype=np.float64), method="ward")
    heights = tree[:, 2]  # ascending: after merge i, n - 1 - i clusters are left
    k_max = max(2, min(AUTO_MAX_CLUSTERS, n // AUTO_MIN_MEAN_SIZE, n - 1))
    # Cutting between merge n-k-1 and merge n-k leaves exactly k clusters; a tie in heights has no such cut.
    feasible = np.array([k for k in range(2, k_max + 1) if heights[n - k - 1] < heights[n - k]], dtype=np.int64)
    info: dict[str, Any] = {"candidates": 0, "k_max": int(k_max)}
    if len(feasible) == 0:
        info["reason"] = "the ward tree has no cut with 2 or more clusters (all points coincide?)"
        return np.zeros(n, dtype=np.int64), info

    def threshold(k: int) -> float:
        return float((heights[n - k - 1] + heights[n - k]) / 2.0)

    def cut(k: int) -> np.ndarray:
        return fcluster(tree, threshold(k), criterion="distance").astype(np.int64) - 1

    rows = np.arange(n) if sample is None else sample
    finest_k = int(feasible[-1])
    finest = cut(finest_k)
    finest_k = int(finest.max()) + 1  # should a threshold fall on a height, the cut has what it has
    (sums,) = cluster_distance_sums(points[rows], [finest[rows]], device)
    finest_sums_t = np.zeros((finest_k, len(rows)))
    finest_sums_t[np.unique(finest[rows])] = sums.T  # clusters without sampled points keep zero rows
    del sums
    scores: dict[int, float] = {}

    def walk(ks: Sequence[int], labels: np.ndarray, sums_t: np.ndarray) -> None:
        """Score the cuts with `ks` clusters (descending), each from the previous, finer one."""
        for k in ks:
            new = cut(k)
            if int(new.max()) + 1 != k:  # two heights too close for a threshold between them
                scores[k] = -math.inf
                continue
            sums_t = _merge_rows(sums_t, labels, new, k)
            labels = new
            value, _ = _silhouette(sums_t.T, new[rows], k)
            scores[k] = -math.inf if value is None else value

    grid = np.unique(np.round(np.geomspace(2, k_max, AUTO_GRID_POINTS)).astype(np.int64))
    coarse = np.unique(feasible[np.minimum(np.searchsorted(feasible, grid), len(feasible) - 1)])
    walk([int(k) for k in coarse[::-1]], finest, finest_sums_t)
    best_index = int(np.argmax([scores[int(k)] for k in coarse]))
    low = int(coarse[best_index - 1]) if best_index > 0 else int(feasible[0])
    high = int(coarse[best_index + 1]) if best_index + 1 < len(coarse) else int(feasible[-1])
    between = [int(k) for k in feasible[(feasible > low) & (feasible < high)][::-1]]
    if between:
        high_cut = cut(high)
        if int(high_cut.max()) + 1 == high:
            walk(between, high_cut, _merge_rows(finest_sums_t, finest, high_cut, high))
        else:
            walk(between, finest, finest_sums_t)
    best_k = max(scores, key=lambda k: (scores[k], -k))  # ties go to fewer clusters
    info.update(threshold=threshold(best_k), n_clusters=int(best_k), candidates=len(scores))
    if scores[best_k] == -math.inf:
        info["reason"] = "no candidate cut has a defined silhouette"
    return cut(best_k), info


# -- label metrics ----------------------------------------------------------------------------------------------


def label_metrics(predicted: np.ndarray, true: np.ndarray,
                  hdbscan: bool = False) -> dict[str, tuple[float | int | None, str | None]]:
    """Metric -> (value, reason when None) for one predicted labeling; `true` is -1 where an item has no label.

    Predicted noise (-1) is one more label for AMI, ARI and NMI, as in Lowe et al.; `ami_clustered` (HDBSCAN
    only) is the AMI over the labelled points that were not noise. Label metrics use the labelled items only.
    """
    from sklearn import metrics as skm

    predicted = np.asarray(predicted)
    true = np.asarray(true)
    noise = predicted < 0
    out: dict[str, tuple[float | int | None, str | None]] = {
        "n_clusters": (int(len(np.unique(predicted[~noise]))), None),
        "noise_fraction": (float(noise.mean()), None),
    }
    names = (*LABEL_METRICS, "ami_clustered") if hdbscan else LABEL_METRICS
    has_label = true >= 0
    if not has_label.any():
        out.update({m: (None, "the test split has no labels") for m in names})
        return out
    y, p = true[has_label], predicted[has_label]
    out["ami"] = (float(skm.adjusted_mutual_info_score(y, p, average_method="arithmetic")), None)
    out["ari"] = (float(skm.adjusted_rand_score(y, p)), None)
    out["nmi"] = (float(skm.normalized_mutual_info_score(y, p, average_method="arithmetic")), None)
    if hdbscan:
        clustered = p >= 0
        if clustered.any():
            out["ami_clustered"] = (float(skm.adjusted_mutual_info_score(y[clustered], p[clustered],
                                                                         average_method="arithmetic")), None)
        else:
            out["ami_clustered"] = (None, "HDBSCAN labelled every point as noise")
    return out


# -- the evaluator --------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One clusterer on one seed: labels or why there are none, with its warnings and time."""

    labels: np.ndarray | None
    reason: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _capture(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, list[str], float]:
    """Run `fn`, recording its warnings (distinct messages) instead of letting them through, and its time."""
    start = time.perf_counter()
    error: BaseException | None = None
    result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a clusterer that fails is reported, the others still count
            error = exc
    messages: list[str] = []
    for w in caught:
        message = f"{w.category.__name__}: {w.message}"
        if message not in messages:
            messages.append(message)
    return result, error, messages, time.perf_counter() - start


def quadratic_memory_bytes(clusterer: str, n: int) -> int:
    """About how much memory `clusterer` needs on n items (0 for the clusterers that are not quadratic)."""
    return QUADRATIC_BYTES_PER_PAIR.get(clusterer, 0) * n * n


def largest_fitting_n(clusterer: str, budget: int) -> int:
    """The largest N (rounded down to a thousand where that leaves one) whose quadratic memory fits `budget`."""
    n = int(math.isqrt(budget // QUADRATIC_BYTES_PER_PAIR[clusterer]))
    return n // 1000 * 1000 if n >= 1000 else n


def _finite(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


class ClusteringEvaluator(Evaluator):
    """UMAP (once per seed) + K-means, ward, HDBSCAN, spectral, affinity propagation; AMI and silhouettes."""

    name = "clustering"
    protocol = PROTOCOL
    needs = ("test",)
    requires_labels = False

    def __init__(self, *, memory_budget_mb: float | None = None, **options: Any) -> None:
        """`memory_budget_mb` (default: the device's, `harness.memory`) bounds the O(N^2) clusterers: an execution
        setting, not an option (not part of the cell key). `subsample` is an option: it changes the numbers."""
        super().__init__(**options)
        self.memory_budget_mb = memory_budget_mb
        o = self.options
        if o["reduce"] not in ("umap", "pca", "none"):
            raise HarnessError(f"clustering option reduce={o['reduce']!r}: use 'umap', 'pca' or 'none'")
        for name, low in (("n_components", 2), ("n_seeds", 1), ("max_n_quadratic", 0)):
            if not isinstance(o[name], int) or isinstance(o[name], bool) or o[name] < low:
                raise HarnessError(f"clustering option {name}={o[name]!r}: an integer >= {low}")
        sub = o["subsample"]
        if sub is not None and (not isinstance(sub, int) or isinstance(sub, bool) or sub < MIN_ITEMS):
            raise HarnessError(f"clustering option subsample={sub!r}: None, or a number of items >= {MIN_ITEMS}")

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"reduce": "umap", "n_components": 50, "n_seeds": 3, "max_n_quadratic": MAX_N_QUADRATIC,
                "subsample": None}

    # -- one seed ------------------------------------------------------------------------------------------------

    def _cluster(self, name: str, reduced: np.ndarray, k: int | None, seed: int, labelled: bool,
                 sample: np.ndarray | None, device: str, budget: int) -> _Run:
        n = reduced.shape[0]
        if name in QUADRATIC_CLUSTERERS and n > self.options["max_n_quadratic"]:
            return _Run(None, f"skipped: N={n} > max_n_quadratic={self.options['max_n_quadratic']} "
                              f"(O(N^2) memory and time)")
        if name in QUADRATIC_CLUSTERERS and quadratic_memory_bytes(name, n) > budget:
            return _Run(None, f"skipped: {name} needs about {format_bytes(quadratic_memory_bytes(name, n))} for "
                              f"N={n} (O(N^2) memory), over the memory budget of {format_bytes(budget)}; "
                              f"the option subsample={largest_fitting_n(name, budget)} or a larger "
                              f"--memory-budget-mb would let it run")
        extra: dict[str, Any] = {}

        def run() -> np.ndarray:
            import sklearn.cluster

            if name == "kmeans":
                model = sklearn.cluster.KMeans(n_clusters=k, init="k-means++", n_init=KMEANS_N_INIT,
                                               random_state=seed)
                return model.fit_predict(reduced)
            if name == "ward" and labelled:
                return sklearn.cluster.AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(reduced)
            if name == "ward":
                labels, info = ward_by_silhouette(reduced, sample, device)
                extra.update(info)
                return labels
            if name == "hdbscan":
                import hdbscan

                model = hdbscan.HDBSCAN(**HDBSCAN_PARAMS)
                return model.fit_predict(np.asarray(reduced, dtype=np.float64))
            if name == "spectral":
                model = sklearn.cluster.SpectralClustering(
                    n_clusters=k, random_state=seed,
                    **{**SPECTRAL_PARAMS, "n_neighbors": min(SPECTRAL_PARAMS["n_neighbors"], n - 1)})
                return model.fit_predict(reduced)
            if name == "affinity":
                model = sklearn.cluster.AffinityPropagation(random_state=seed, **AFFINITY_PARAMS)
                labels = model.fit_predict(reduced)
                if len(model.cluster_centers_indices_) == 0 or (labels < 0).all():
                    raise RuntimeError(f"did not converge in {AFFINITY_PARAMS['max_iter']} iterations")
                return labels
            raise AssertionError(name)

        labels, error, messages, seconds = _capture(run)
        if error is not None:
            return _Run(None, f"failed: {type(error).__name__}: {error}", seconds, messages, extra)
        return _Run(np.asarray(labels, dtype=np.int64), None, seconds, messages, extra)

    # -- evaluate ------------------------------------------------------------------------------------------------

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int, device: str) -> EvaluationResult:
        from harness.plugins import umap_cache

        features = test.features
        n = int(features.shape[0])
        if n < MIN_ITEMS:
            raise HarnessError(f"clustering needs at least {MIN_ITEMS} test items; this split has {n}")
        true = np.asarray(test.labels, dtype=np.int64)
        ids = np.asarray(test.ids)
        # Only when asked (never silently): one seeded random subset, the same for every seed and clusterer.
        subsample = self.options["subsample"]
        subsampled: dict[str, Any] | None = None
        if subsample is not None and subsample < n:
            rows = np.sort(np.random.default_rng(int(seed)).choice(n, subsample, replace=False))
            features, true, ids = np.asarray(features[rows]), true[rows], ids[rows]
            subsampled = {"n_items": subsample, "of": n, "seed": int(seed)}
            n = subsample
        budget = budget_bytes(self.memory_budget_mb, device)
        ward_bytes = quadratic_memory_bytes("ward", n)
        if ward_bytes > budget:
            # Refused before the UMAP, which at this size alone costs minutes: ward is the main score, and a
            # record without it would be an empty leaderboard cell.
            raise HarnessError(
                f"clustering: agglomerative ward (the main score) needs about {format_bytes(ward_bytes)} for "
                f"N={n} test items (O(N^2): scipy keeps N(N-1)/2 float64 distances, twice), over the memory "
                f"budget of {format_bytes(budget)}. Cluster a seeded random subset with the clustering option "
                f"subsample={largest_fitting_n('ward', budget)} (--cluster-subsample), or raise --memory-budget-mb")
        has_label = true >= 0
        labelled = bool(has_label.any())
        k = int(len(np.unique(true[has_label]))) if labelled else None
        clusterers = LABELLED_CLUSTERERS if labelled else UNLABELLED_CLUSTERERS
        seeds = [int(seed) + i for i in range(self.options["n_seeds"])]
        cache_dir = test.meta.get("derived_dir")
        sample = None
        if n > SILHOUETTE_MAX_N:
            sample = np.sort(np.random.default_rng(seeds[0]).choice(n, SILHOUETTE_MAX_N, replace=False))
        sample_rows = np.arange(n) if sample is None else sample

        seconds: dict[str, Any] = {"digest": 0.0, "reduce": [], "silhouette_umap": [], "silhouette_orig": 0.0,
                                   **{c: [] for c in clusterers}}
        sources: list[str] = []
        warned: dict[str, list[str]] = {}
        null_reasons: dict[str, dict[int, str]] = {}
        skipped: dict[str, str] = {}
        per_seed: dict[int, dict[str, Any]] = {}
        runs: dict[tuple[int, str], _Run] = {}
        ward_threshold: dict[str, Any] = {}
        reduction_params: dict[str, Any] = {}

        def note_warnings(stage: str, messages: list[str]) -> None:
            for m in messages:
                warned.setdefault(stage, [])
                if m not in warned[stage]:
                    warned[stage].append(m)

        def set_metric(s: int, key: str, value: Any, reason: str | None = None) -> None:
            value = _finite(value)
            if value is None:
                null_reasons.setdefault(key, {})[s] = reason or "not finite"
            per_seed[s][key] = value

        start = time.perf_counter()
        digest = umap_cache.features_digest(features) if self.options["reduce"] != "none" else None
        seconds["digest"] = time.perf_counter() - start

        def reduce(s: int, n_components: int, method: str) -> tuple[np.ndarray, dict[str, Any], str]:
            result, error, messages, took = _capture(lambda: umap_cache.reduce(
                features, method=method, n_components=n_components, seed=s, cache_dir=cache_dir,
                digest=digest if method != "none" else None, **UMAP_PARAMS))
            note_warnings("reduce", messages)
            if error is not None:
                raise HarnessError(f"clustering: the {method} reduction of the test embeddings failed: "
                                   f"{type(error).__name__}: {error}") from error
            return (*result, took)  # type: ignore[return-value]

        for s in seeds:
            per_seed[s] = {}
            reduced, params, source, took = reduce(s, self.options["n_components"], self.options["reduce"])
            seconds["reduce"].append(took)
            sources.append(source)
            if not reduction_params:
                reduction_params = {key: v for key, v in params.items() if key != "seed"}
            labelings: list[tuple[str, np.ndarray]] = []
            for c in clusterers:
                run = self._cluster(c, reduced, k, s, labelled, sample, device, budget)
                runs[(s, c)] = run
                seconds[c].append(run.seconds)
                note_warnings(c, run.warnings)
                if run.reason is not None and run.reason.startswith("skipped"):
                    skipped[c] = run.reason
                if c == "ward" and not labelled:
                    ward_threshold[str(s)] = run.extra
                    set_metric(s, "ward.distance_threshold", run.extra.get("threshold"),
                               run.reason or run.extra.get("reason"))
                if run.labels is not None:
                    labelings.append((c, run.labels))
                    for m, (value, reason) in label_metrics(run.labels, true, hdbscan=c == "hdbscan").items():
                        set_metric(s, f"{c}.{m}", value, reason)
                else:
                    for m in (*METRICS, *EXTRA_METRICS.get(c, ())):
                        set_metric(s, f"{c}.{m}", None, run.reason)
            t0 = time.perf_counter()
            values = silhouettes(reduced[sample_rows], [labels[sample_rows] for _, labels in labelings], device)
            seconds["silhouette_umap"].append(time.perf_counter() - t0)
            for (c, _), (value, reason) in zip(labelings, values):
                set_metric(s, f"{c}.silhouette_umap", value, reason)

        # The original space once, for every clusterer and seed: it is the expensive one (D is large).
        t0 = time.perf_counter()
        keys = [(s, c) for s in seeds for c in clusterers if runs[(s, c)].labels is not None]
        if keys:
            values = silhouettes(np.asarray(features[sample_rows]),
                                 [runs[key].labels[sample_rows] for key in keys], device)  # type: ignore[index]
            for (s, c), (value, reason) in zip(keys, values):
                set_metric(s, f"{c}.silhouette_orig", value, reason)
        seconds["silhouette_orig"] = time.perf_counter() - t0

        layout, _, _, took = reduce(seeds[0], 2, "umap")
        seconds["umap2d"] = took

        metrics = self._assemble(labelled, n, int(has_label.sum()), k, seeds, clusterers, per_seed, null_reasons,
                                 skipped, reduction_params)
        if ward_threshold:
            metrics["ward_threshold"] = ward_threshold
        metrics["silhouette_items"] = int(len(sample_rows))
        if subsampled is not None:
            metrics["subsampled"] = subsampled
        metrics["runtime"] = {"seconds": seconds, "reduction_source": sources, "warnings": warned,
                              "memory_budget_bytes": budget}

        predictions: dict[str, np.ndarray] = {"ids": ids, "label": true}
        for (s, c), run in runs.items():
            if run.labels is not None:
                predictions[f"{c}.seed{s}"] = run.labels
        main_metric = "ward.ami" if labelled else "ward.silhouette_umap"
        return EvaluationResult(metrics=metrics, main_score=metrics["mean"].get(main_metric),
                                main_metric=main_metric, predictions=predictions,
                                artifacts={"umap2d": np.asarray(layout, dtype=np.float32)})

    def _assemble(self, labelled: bool, n: int, n_labelled: int, k: int | None, seeds: list[int],
                  clusterers: Sequence[str], per_seed: dict[int, dict[str, Any]],
                  null_reasons: dict[str, dict[int, str]], skipped: dict[str, str],
                  reduction_params: dict[str, Any]) -> dict[str, Any]:
        import sklearn

        metric_order = [*METRICS, *EXTRA_METRICS.get("hdbscan", ()), "distance_threshold"]

        def order(key: str) -> tuple[int, int, str]:
            c, _, m = key.partition(".")
            return (list(clusterers).index(c) if c in clusterers else len(clusterers),
                    metric_order.index(m) if m in metric_order else len(metric_order), key)

        keys = sorted({key for s in seeds for key in per_seed[s]}, key=order)
        per_seed = {s: {key: per_seed[s][key] for key in keys if key in per_seed[s]} for s in seeds}
        mean: dict[str, Any] = {}
        std: dict[str, Any] = {}
        for key in keys:
            values = [per_seed[s].get(key) for s in seeds]
            if any(v is None for v in values):
                mean[key] = std[key] = None
                continue
            mean[key] = _finite(float(np.mean(values)))
            std[key] = _finite(float(np.std(values, ddof=1))) if len(values) > 1 else None
        reasons: dict[str, str] = {}
        for key, by_seed in null_reasons.items():
            distinct = set(by_seed.values())
            if len(distinct) == 1 and len(by_seed) == len(seeds):
                reasons[key] = next(iter(distinct))
            else:
                reasons[key] = "; ".join(f"seed {s}: {r}" for s, r in sorted(by_seed.items()))
        if len(seeds) == 1:
            reasons["std"] = "one seed: no spread over seeds (option n_seeds)"
        return {
            "labelled": labelled,
            "n_items": n,
            "n_labelled_items": n_labelled,
            "n_classes": k,
            "seeds": seeds,
            "clusterers": list(clusterers),
            "per_seed": {str(s): per_seed[s] for s in seeds},
            "mean": mean,
            "std": std,
            "null_reasons": reasons,
            "skipped": skipped,
            "reduction": reduction_params,
            "config": {
                "umap": {**UMAP_PARAMS, "n_components": self.options["n_components"]},
                "kmeans": {"init": "k-means++", "n_init": KMEANS_N_INIT},
                "ward": {"linkage": "ward", "n_clusters": "K" if labelled else None,
                         "distance_threshold": None if labelled else "max silhouette_umap",
                         "auto_max_clusters": AUTO_MAX_CLUSTERS, "auto_min_mean_size": AUTO_MIN_MEAN_SIZE,
                         "auto_grid_points": AUTO_GRID_POINTS},
                "hdbscan": {**HDBSCAN_PARAMS, "min_samples": None, "dtype": "float64", "noise": "one label"},
                "spectral": SPECTRAL_PARAMS,
                "affinity": AFFINITY_PARAMS,
                "max_n_quadratic": self.options["max_n_quadratic"],
                "silhouette_max_n": SILHOUETTE_MAX_N,
                "versions": {"scikit-learn": sklearn.__version__, "hdbscan": _version("hdbscan"),
                             "umap-learn": _version("umap-learn")},
            },
        }


def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("clustering", ClusteringEvaluator,
             "UMAP + K-means/ward/HDBSCAN/spectral/affinity clustering (clustering/umap-v1): AMI, silhouettes")
