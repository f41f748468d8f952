"""`clustering/umap-v2` with real UMAP, HDBSCAN and scikit-learn on small synthetic sets.

Every reference number is computed here, independently, with scikit-learn called directly on the predicted labels
that the evaluator saved; the UMAP runs are counted by wrapping `umap.UMAP.fit_transform`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from harness.errors import HarnessError
from harness.plugin_manager import Plugins
from harness.types import Embeddings, ExecutionSettings
from harness.plugins import clustering, umap_cache
from harness.plugins.clustering import ClusteringEvaluator, clustering_seeds

CPU = ExecutionSettings(device="cpu")

pytestmark = [
    # umap and numba warn about their own deprecations when imported; the evaluator records the warnings of the
    # clustering libraries themselves (see metrics["runtime"]["warnings"]), so none of them should get here.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:numba.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:umap.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pynndescent.*"),
    pytest.mark.filterwarnings("ignore:.*Tensorflow not installed.*:ImportWarning"),
]

ALL = ("kmeans", "ward", "hdbscan", "spectral", "affinity")


def blobs(n_clusters: int = 6, per_cluster: int = 60, dim: int = 64, spread: float = 6.0,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * spread
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    features = centres[labels] + rng.normal(size=(len(labels), dim))
    return features.astype(np.float32), labels.astype(np.int64)


def embeddings(features: np.ndarray, labels: np.ndarray, derived_dir: Path | None = None) -> Embeddings:
    ids = np.array([f"item/{i}" for i in range(len(labels))])
    meta = {"derived_dir": str(derived_dir)} if derived_dir is not None else {}
    return Embeddings(features, labels, ids, meta=meta)


class CountingUMAP:
    """Wraps `umap.UMAP.fit_transform` and records the n_components of every fit."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        umap = umap_cache.import_umap()
        original = umap.UMAP.fit_transform
        self.fits: list[int] = []

        def fit_transform(reducer: Any, *args: Any, **kwargs: Any) -> Any:
            self.fits.append(reducer.n_components)
            return original(reducer, *args, **kwargs)

        monkeypatch.setattr(umap.UMAP, "fit_transform", fit_transform)


def assert_json_clean(metrics: dict[str, Any]) -> None:
    """No NaN or inf anywhere (json refuses them), and every None metric has its reason."""
    json.dumps(metrics, allow_nan=False)
    reasons = metrics["null_reasons"]
    for table in ("mean", *(f"per_seed/{s}" for s in metrics["per_seed"])):
        values = metrics["mean"] if table == "mean" else metrics["per_seed"][table.split("/")[1]]
        for key, value in values.items():
            if value is None:
                assert reasons.get(key), f"{table} {key} is None without a reason"
    for key, value in metrics["std"].items():
        if value is None:
            assert reasons.get(key) or (len(metrics["seeds"]) == 1 and reasons.get("std")), key


@pytest.fixture(scope="module")
def separated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Six well-separated Gaussian clusters (60 points each, 64-D), evaluated with two seeds."""
    features, labels = blobs()
    derived = tmp_path_factory.mktemp("derived")
    umap_cache.clear_memory()
    with pytest.MonkeyPatch.context() as mp:
        counter = CountingUMAP(mp)
        result = ClusteringEvaluator(n_seeds=2).evaluate(None, embeddings(features, labels, derived), seed=0,
                                                         settings=CPU)
    return {"features": features, "labels": labels, "derived": derived, "result": result, "fits": counter.fits}


# -- the labelled protocol ----------------------------------------------------------------------------------------


def test_well_separated_clusters_are_recovered_by_every_clusterer(separated: dict[str, Any]) -> None:
    metrics = separated["result"].metrics
    assert metrics["clusterers"] == list(ALL)
    assert metrics["seeds"] == [0, 1]
    assert metrics["n_classes"] == 6 and metrics["labelled"] is True and metrics["skipped"] == {}
    for seed in ("0", "1"):
        for c in ALL:
            assert metrics["per_seed"][seed][f"{c}.ami"] > 0.95, (seed, c)
            assert metrics["per_seed"][seed][f"{c}.silhouette_umap"] > 0.5, (seed, c)
    for c in ALL:
        assert metrics["mean"][f"{c}.ami"] > 0.95
        assert metrics["std"][f"{c}.ami"] is not None and metrics["std"][f"{c}.ami"] >= 0
    result = separated["result"]
    assert result.main_metric == "ward.ami"
    assert result.main_score == pytest.approx(np.mean([metrics["per_seed"][s]["ward.ami"] for s in ("0", "1")]))
    assert_json_clean(metrics)


def test_umap_is_computed_once_per_seed_and_shared_by_every_clusterer(separated: dict[str, Any]) -> None:
    # Two seeds: one 50-D UMAP each for all five clusterers, and one 2-D layout for plots.
    assert sorted(separated["fits"]) == [2, 50, 50]
    files = sorted(p.name for p in (separated["derived"] / "reductions").glob("*.npy"))
    assert len(files) == 3 and sum(name.startswith("umap-50d-seed") for name in files) == 2
    assert not [p for p in (separated["derived"] / "reductions").iterdir() if p.name.startswith(".")]  # no temps
    assert separated["result"].metrics["runtime"]["reduction_source"] == ["computed", "computed"]
    seed0, seed1 = (np.load(next((separated["derived"] / "reductions").glob(f"umap-50d-seed{s}-*.npy")))
                    for s in (0, 1))
    assert seed0.shape == (360, 50) and not np.array_equal(seed0, seed1)


def test_label_metrics_equal_sklearn_on_the_saved_predictions(separated: dict[str, Any]) -> None:
    result = separated["result"]
    predictions = result.predictions
    labels = separated["labels"]
    assert list(predictions["ids"]) == [f"item/{i}" for i in range(360)]
    np.testing.assert_array_equal(predictions["label"], labels)
    for seed in (0, 1):
        values = result.metrics["per_seed"][str(seed)]
        for c in ALL:
            predicted = predictions[f"{c}.seed{seed}"]
            assert predicted.shape == (360,)
            assert values[f"{c}.ami"] == pytest.approx(
                skm.adjusted_mutual_info_score(labels, predicted, average_method="arithmetic"), abs=1e-12)
            assert values[f"{c}.ari"] == pytest.approx(skm.adjusted_rand_score(labels, predicted), abs=1e-12)
            assert values[f"{c}.nmi"] == pytest.approx(skm.normalized_mutual_info_score(labels, predicted),
                                                       abs=1e-12)
            assert values[f"{c}.n_clusters"] == len(set(predicted[predicted >= 0]))


def test_silhouettes_equal_sklearn_in_umap_and_original_space(separated: dict[str, Any]) -> None:
    result = separated["result"]
    for seed in (0, 1):
        reduced = np.load(next((separated["derived"] / "reductions").glob(f"umap-50d-seed{seed}-*.npy")))
        values = result.metrics["per_seed"][str(seed)]
        for c in ("kmeans", "ward"):
            predicted = result.predictions[f"{c}.seed{seed}"]
            assert values[f"{c}.silhouette_umap"] == pytest.approx(skm.silhouette_score(reduced, predicted),
                                                                   abs=1e-5)
            assert values[f"{c}.silhouette_orig"] == pytest.approx(
                skm.silhouette_score(separated["features"], predicted), abs=1e-5)


def test_predictions_and_2d_layout(separated: dict[str, Any]) -> None:
    result = separated["result"]
    assert set(result.predictions) == {"ids", "label", *(f"{c}.seed{s}" for c in ALL for s in (0, 1))}
    layout = result.artifacts["umap2d"]
    assert layout.shape == (360, 2) and layout.dtype == np.float32 and np.isfinite(layout).all()
    # The layout keeps the clusters apart: its own silhouette under the true labels is high.
    assert skm.silhouette_score(layout, separated["labels"]) > 0.5


def test_shuffled_labels_give_ami_near_zero(separated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.random.default_rng(1).permutation(separated["labels"])
    counter = CountingUMAP(monkeypatch)
    result = ClusteringEvaluator(n_seeds=1).evaluate(
        None, embeddings(separated["features"], labels, separated["derived"]), seed=0, settings=CPU)
    assert counter.fits == []  # the same vectors: the cached reductions serve
    for c in ALL:
        assert abs(result.metrics["mean"][f"{c}.ami"]) < 0.05, c
        assert abs(result.metrics["mean"][f"{c}.ari"]) < 0.05, c
    # Label-free numbers do not depend on the labels.
    for c in ALL:
        assert result.metrics["mean"][f"{c}.silhouette_umap"] == pytest.approx(
            separated["result"].metrics["per_seed"]["0"][f"{c}.silhouette_umap"])


def test_disk_cache_serves_a_new_process_and_a_damaged_file_is_recomputed(
        separated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    test = embeddings(separated["features"], separated["labels"], separated["derived"])
    umap_cache.clear_memory()  # as if in a new process
    counter = CountingUMAP(monkeypatch)
    result = ClusteringEvaluator(n_seeds=1).evaluate(None, test, seed=0, settings=CPU)
    assert counter.fits == []
    assert result.metrics["runtime"]["reduction_source"] == ["disk"]
    assert result.metrics["per_seed"]["0"] == separated["result"].metrics["per_seed"]["0"]

    damaged = next((separated["derived"] / "reductions").glob("umap-50d-seed1-*.npy"))
    damaged.write_bytes(b"not a numpy file")
    umap_cache.clear_memory()
    result = ClusteringEvaluator(n_seeds=1).evaluate(None, test, seed=1, settings=CPU)
    assert sorted(counter.fits) == [2, 50]  # the damaged seed-1 UMAP, and seed 1's 2-D layout (new)
    assert result.metrics["runtime"]["reduction_source"] == ["computed"]
    assert result.metrics["per_seed"]["1"] == separated["result"].metrics["per_seed"]["1"]
    assert np.load(damaged).shape == (360, 50)


def test_quadratic_clusterers_are_skipped_above_the_limit(separated: dict[str, Any]) -> None:
    result = ClusteringEvaluator(n_seeds=1, max_n_quadratic=100).evaluate(
        None, embeddings(separated["features"], separated["labels"], separated["derived"]), seed=0, settings=CPU)
    metrics = result.metrics
    assert set(metrics["skipped"]) == {"spectral", "affinity"}
    for c in ("spectral", "affinity"):
        assert "N=360 > max_n_quadratic=100" in metrics["skipped"][c]
        for m in ("ami", "silhouette_umap", "n_clusters"):
            assert metrics["mean"][f"{c}.{m}"] is None
            assert "max_n_quadratic" in metrics["null_reasons"][f"{c}.{m}"]
        assert f"{c}.seed0" not in result.predictions
    assert metrics["mean"]["ward.ami"] > 0.95
    assert_json_clean(metrics)


def test_unlabelled_data_uses_the_silhouette_rule(separated: dict[str, Any]) -> None:
    test = embeddings(separated["features"], np.full(360, -1, dtype=np.int64), separated["derived"])
    result = ClusteringEvaluator(n_seeds=1).evaluate(None, test, seed=0, settings=CPU)
    metrics = result.metrics
    assert metrics["labelled"] is False and metrics["n_classes"] is None
    assert metrics["clusterers"] == ["ward", "hdbscan"]
    assert result.main_metric == "ward.silhouette_umap"
    assert result.main_score == metrics["mean"]["ward.silhouette_umap"] > 0.9
    for c, m in (("ward", "ami"), ("ward", "ari"), ("hdbscan", "nmi"), ("hdbscan", "ami_clustered")):
        assert metrics["mean"][f"{c}.{m}"] is None
        assert metrics["null_reasons"][f"{c}.{m}"] == "the test split has no labels"
    assert metrics["mean"]["ward.n_clusters"] == 6
    assert_json_clean(metrics)

    # Independently: the threshold reproduces the partition in scikit-learn, and no other cut of the ward tree
    # into 2..20 clusters has a higher silhouette (scikit-learn's) in the same UMAP space.
    from sklearn.cluster import AgglomerativeClustering

    reduced, _, _ = umap_cache.reduce(separated["features"], n_components=50, seed=0,
                                      cache_dir=separated["derived"])
    threshold = metrics["per_seed"]["0"]["ward.distance_threshold"]
    sk_labels = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold,
                                        linkage="ward").fit_predict(reduced)
    ours = result.predictions["ward.seed0"]
    assert skm.adjusted_rand_score(sk_labels, ours) == 1.0
    best = metrics["per_seed"]["0"]["ward.silhouette_umap"]
    assert best == pytest.approx(skm.silhouette_score(reduced, ours), abs=1e-6)
    for k in range(2, 21):
        cut = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(reduced)
        assert skm.silhouette_score(reduced, cut) <= best + 1e-6, k  # float32 input: sklearn sums in float32


def test_same_seed_gives_identical_numbers() -> None:
    features, labels = blobs(n_clusters=4, per_cluster=40, dim=16, seed=3)
    results = []
    for _ in range(2):
        umap_cache.clear_memory()  # recompute the UMAPs: their seeding is under test too
        result = ClusteringEvaluator(n_seeds=1).evaluate(None, embeddings(features, labels), seed=7, settings=CPU)
        assert result.metrics["runtime"]["reduction_source"] == ["computed"]
        results.append(result)
    first, second = ({k: v for k, v in r.metrics.items() if k != "runtime"} for r in results)
    assert first == second
    assert results[0].main_score == results[1].main_score
    for key in results[0].predictions:
        np.testing.assert_array_equal(results[0].predictions[key], results[1].predictions[key])
    np.testing.assert_array_equal(results[0].artifacts["umap2d"], results[1].artifacts["umap2d"])


# -- noise, one cluster, other reductions -----------------------------------------------------------------------


def test_hdbscan_noise_is_one_label_with_noise_fraction_and_clustered_ami() -> None:
    # Five tight clusters plus scattered points far from everything: HDBSCAN calls the scattered ones noise.
    rng = np.random.default_rng(5)
    features, labels = blobs(n_clusters=5, per_cluster=40, dim=8, spread=20.0, seed=5)
    outliers = rng.uniform(-60, 60, size=(30, 8)).astype(np.float32)
    features = np.concatenate([features, outliers])
    labels = np.concatenate([labels, rng.integers(0, 5, size=30)])
    result = ClusteringEvaluator(n_seeds=1, reduce="none").evaluate(None, embeddings(features, labels), seed=0,
                                                                    settings=CPU)
    values = result.metrics["per_seed"]["0"]
    predicted = result.predictions["hdbscan.seed0"]
    noise = predicted == -1
    assert noise.sum() >= 10
    assert values["hdbscan.noise_fraction"] == pytest.approx(noise.mean())
    assert values["hdbscan.n_clusters"] == len(set(predicted[~noise]))
    # Noise scored as one label of its own, as in Lowe et al.
    assert values["hdbscan.ami"] == pytest.approx(skm.adjusted_mutual_info_score(labels, predicted), abs=1e-12)
    assert values["hdbscan.ami_clustered"] == pytest.approx(
        skm.adjusted_mutual_info_score(labels[~noise], predicted[~noise]), abs=1e-12)
    assert values["hdbscan.ami_clustered"] > values["hdbscan.ami"]
    # Silhouettes leave the noise out; with reduce="none" the reduced space is the original one.
    assert values["hdbscan.silhouette_orig"] == pytest.approx(
        skm.silhouette_score(features[~noise], predicted[~noise]), abs=1e-5)
    assert values["hdbscan.silhouette_umap"] == pytest.approx(values["hdbscan.silhouette_orig"], abs=1e-9)
    assert result.metrics["reduction"]["method"] == "none"
    assert_json_clean(result.metrics)


def test_label_metrics_noise_rule_directly() -> None:
    true = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1])
    predicted = np.array([5, 5, -1, 7, 7, -1, -1, -1, -1, 5])
    out = clustering.label_metrics(predicted, true, hdbscan=True)
    y, p = true[:9], predicted[:9]  # the unlabelled item is left out of label metrics
    assert out["ami"][0] == pytest.approx(skm.adjusted_mutual_info_score(y, p))
    assert out["ami_clustered"][0] == pytest.approx(skm.adjusted_mutual_info_score(y[p >= 0], p[p >= 0]))
    assert out["noise_fraction"][0] == pytest.approx(0.5)
    assert out["n_clusters"][0] == 2
    all_noise = clustering.label_metrics(np.full(10, -1), true, hdbscan=True)
    assert all_noise["ami_clustered"] == (None, "HDBSCAN labelled every point as noise")
    assert all_noise["n_clusters"][0] == 0


def test_one_class_is_refused_and_one_cluster_gives_none_with_a_reason_never_nan() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(100, 16)).astype(np.float32)
    labels = np.zeros(100, dtype=np.int64)  # one class: every clustering agrees with it, AMI 1.0 by construction
    evaluator = ClusteringEvaluator(n_seeds=2, reduce="pca", n_components=5)
    with pytest.raises(HarnessError, match=r"1 class\(es\).*at least two classes"):
        evaluator.evaluate(None, embeddings(features, labels), seed=0, settings=CPU)
    # A clusterer that predicts one cluster (HDBSCAN can) gets a silhouette of None with a reason, never NaN.
    from harness.plugins.clustering.silhouette import silhouettes

    [(value, reason)] = silhouettes(features, [np.zeros(100, dtype=np.int64)])
    assert value is None and "at least 2 clusters" in reason


# -- pieces ---------------------------------------------------------------------------------------------------------


def test_silhouettes_match_sklearn_with_noise_singletons_and_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(150, 7)) * 3
    labelings = [rng.integers(0, 4, size=150), rng.integers(-1, 12, size=150), np.arange(150) % 60]
    labelings[1][:3] = [40, 41, 42]  # three singletons, which score 0
    labelings.append(np.zeros(150, dtype=np.int64))  # one cluster: undefined
    monkeypatch.setattr(clustering.silhouette, "_DISTANCE_BLOCK_ELEMENTS", 150 * 7)  # 7 rows a block
    monkeypatch.setattr(clustering.silhouette, "_ONEHOT_ELEMENTS", 150 * 20)  # at most 20 one-hot columns a pass
    values = clustering.silhouettes(points, labelings)
    for labels, (value, reason) in zip(labelings[:3], values[:3]):
        keep = labels >= 0
        assert reason is None
        assert value == pytest.approx(skm.silhouette_score(points[keep], labels[keep]), abs=1e-10)
    assert values[3][0] is None and "at least 2 clusters" in values[3][1]


def test_ward_threshold_search_finds_the_best_cut_on_a_sample() -> None:
    # Overlapping blobs, so that the best cut is not obvious; every cut of 2..48 clusters is checked with
    # scikit-learn (48 = N / 5, the largest candidate).
    points, _ = blobs(n_clusters=8, per_cluster=30, dim=5, spread=2.5, seed=4)
    sample = np.sort(np.random.default_rng(0).choice(240, 150, replace=False))
    labels, info = clustering.ward_by_silhouette(points, sample)
    from sklearn.cluster import AgglomerativeClustering

    reference = {k: skm.silhouette_score(points[sample], AgglomerativeClustering(
        n_clusters=k, linkage="ward").fit_predict(points)[sample]) for k in range(2, 49)}
    best_k = max(reference, key=lambda k: (reference[k], -k))
    assert info["k_max"] == 48 and info["n_clusters"] == best_k == len(set(labels))
    assert skm.silhouette_score(points[sample], labels[sample]) == pytest.approx(reference[best_k], abs=1e-6)
    assert 20 <= info["candidates"] < 47  # a grid and its refinement, not every cut


def test_silhouettes_are_sampled_above_the_limit(separated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clustering.evaluator, "SILHOUETTE_MAX_N", 100)
    result = ClusteringEvaluator(n_seeds=1, max_n_quadratic=0).evaluate(
        None, embeddings(separated["features"], separated["labels"], separated["derived"]), seed=0, settings=CPU)
    sample = np.sort(np.random.default_rng(0).choice(360, 100, replace=False))
    predicted = result.predictions["kmeans.seed0"]
    assert result.metrics["per_seed"]["0"]["kmeans.silhouette_orig"] == pytest.approx(
        skm.silhouette_score(separated["features"][sample], predicted[sample]), abs=1e-5)


def test_registered_as_a_plugin_with_validated_options() -> None:
    plugins = Plugins(builtins=("harness.plugins.clustering",), entry_points=False)
    assert plugins.problems == []
    evaluator = plugins.evaluator("clustering")
    assert isinstance(evaluator, ClusteringEvaluator)
    assert (evaluator.protocol, tuple(evaluator.needs), evaluator.requires_labels) == (
        "clustering/umap-v2", ("test",), False)
    assert evaluator.options == {"reduce": "umap", "n_components": 50, "n_seeds": 3, "max_n_quadratic": 5000,
                                 "subsample": None}
    with pytest.raises(HarnessError, match="reduce="):
        plugins.evaluator("clustering", reduce="tsne")
    with pytest.raises(HarnessError, match="no option"):
        plugins.evaluator("clustering", n_neighbours=15)
    with pytest.raises(HarnessError, match="n_seeds"):
        ClusteringEvaluator(n_seeds=0)


def test_too_few_items_is_a_harness_error() -> None:
    features, labels = blobs(n_clusters=2, per_cluster=3, dim=4)
    with pytest.raises(HarnessError, match="at least 10 test items"):
        ClusteringEvaluator().evaluate(None, embeddings(features, labels), seed=0, settings=CPU)


# -- run seeds and clustering seeds ----------------------------------------------------------------------------------


def test_each_run_seed_owns_its_own_clustering_seeds() -> None:
    assert clustering_seeds(0, 3) == [0, 1, 2]  # the default run seed: the protocol's seeds, as before
    assert clustering_seeds(1, 3) == [3, 4, 5] and clustering_seeds(2, 3) == [6, 7, 8]
    assert clustering_seeds(4, 1) == [4]  # one clustering seed: the run seed itself

    features, labels = blobs(n_clusters=3, per_cluster=20, dim=8)
    data = embeddings(features, labels)
    evaluator = ClusteringEvaluator(n_seeds=2, reduce="pca", n_components=4)
    first = evaluator.evaluate(None, data, seed=0, settings=CPU)
    second = evaluator.evaluate(None, data, seed=1, settings=CPU)
    assert first.metrics["seeds"] == [0, 1] and second.metrics["seeds"] == [2, 3]
    assert set(first.metrics["per_seed"]) == {"0", "1"} and set(second.metrics["per_seed"]) == {"2", "3"}
    assert "kmeans.seed0" in first.predictions and "kmeans.seed2" in second.predictions

    # The seed reaches the clusterers: K-means of the (seed-independent) PCA with random_state = clustering seed.
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    reduced = PCA(n_components=4, svd_solver="full").fit_transform(features).astype(np.float32)
    for result, seed in ((first, 0), (first, 1), (second, 2), (second, 3)):
        expected = KMeans(n_clusters=3, init="k-means++", n_init=10, random_state=seed).fit_predict(reduced)
        assert skm.adjusted_mutual_info_score(expected, result.predictions[f"kmeans.seed{seed}"]) == \
            pytest.approx(1.0), seed
