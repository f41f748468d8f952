"""`clustering-study` (`clustering/lowe-study-v1`): the clustering evaluator with the clusterer settings of Lowe et
al.'s zs-ssl-clustering code, on real data (cifar10-mini's 500 test images as raw pixels).

Every expected partition is scikit-learn (or the hdbscan package) called here with the parameters written out, on
the very reduction the evaluators used; the default protocol is checked the same way, so that the preset cannot
have changed it.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.cluster
from sklearn.metrics import adjusted_mutual_info_score

from harness.cli import build_parser, run_config
from harness.errors import HarnessError
from harness.plugin_manager import Plugins
from harness.suite import load_suite
from harness.types import Embeddings, EvaluationResult, ExecutionSettings
from harness.plugins import umap_cache
from harness.plugins.clustering import ClusteringEvaluator, ClusteringStudyEvaluator

CPU = ExecutionSettings(device="cpu")
SEED = 0  # run seed 0 with n_seeds=1: clustering seed 0

pytestmark = [  # the imports of umap and numba warn about their own deprecations
    pytest.mark.filterwarnings("ignore::DeprecationWarning:numba.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:umap.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pynndescent.*"),
    pytest.mark.filterwarnings("ignore:.*Tensorflow not installed.*:ImportWarning"),
]


@pytest.fixture(scope="module")
def cifar_pixels() -> Embeddings:
    """cifar10-mini's test split as the `pixels` encoder sees it: 500 images, 10 classes, 3,072 numbers each."""
    import torch

    plugins = Plugins(entry_points=False)
    split = plugins.dataset("cifar10-mini").split("test")
    encoder = plugins.encoder("pixels")
    items = [split[i] for i in range(len(split))]
    with torch.inference_mode():
        features = encoder.encode(torch.stack([encoder.transform(image) for image, _ in items])).numpy()
    labels = np.array([label for _, label in items], dtype=np.int64)
    ids = np.array([split.item_id(i) for i in range(len(split))])
    return Embeddings(np.ascontiguousarray(features, dtype=np.float32), labels, ids, meta={})


class Runs:
    """Both evaluators on the same embeddings, the study preset first, and what the reduction cache did."""

    def __init__(self, embeddings: Embeddings) -> None:
        umap_cache.clear_memory()
        umap_cache.reset_stats()
        self.study: EvaluationResult = ClusteringStudyEvaluator(n_seeds=1).evaluate(None, embeddings, seed=SEED,
                                                                                     settings=CPU)
        self.computed_by_study = dict(umap_cache.stats)
        self.default: EvaluationResult = ClusteringEvaluator(n_seeds=1).evaluate(None, embeddings, seed=SEED,
                                                                                 settings=CPU)
        self.computed_by_both = dict(umap_cache.stats)
        # The reduction both clustered (a memory hit: the cache key holds no evaluator name).
        self.reduced, _, self.source = umap_cache.reduce(embeddings.features, method="umap", n_components=50,
                                                         seed=SEED, n_neighbors=30, min_dist=0.0)
        self.labels = embeddings.labels
        self.k = len(np.unique(embeddings.labels))


@pytest.fixture(scope="module")
def runs(cifar_pixels: Embeddings) -> Runs:
    return Runs(cifar_pixels)


def test_the_preset_gives_the_partitions_of_scikit_learn_called_with_the_study_parameters(runs: Runs) -> None:
    x, k, n = runs.reduced, runs.k, len(runs.reduced)
    # Lowe et al.'s cluster.py with the defaults of its analysis/param_setup.py, written out.
    expected = {
        "kmeans": sklearn.cluster.KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=1000,
                                         random_state=SEED).fit_predict(x),
        "ward": sklearn.cluster.AgglomerativeClustering(n_clusters=k, metric="euclidean",
                                                        linkage="ward").fit_predict(x),
        "hdbscan": sklearn.cluster.HDBSCAN(min_cluster_size=5, min_samples=5, max_cluster_size=round(0.2 * n),
                                           metric="euclidean", cluster_selection_method="eom").fit_predict(x),
        "spectral": sklearn.cluster.SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=10,
                                                       assign_labels="cluster_qr",
                                                       random_state=SEED).fit_predict(x),
        "affinity": sklearn.cluster.AffinityPropagation(damping=0.9, max_iter=1000, convergence_iter=15,
                                                        random_state=SEED).fit_predict(x),
    }
    metrics = runs.study.metrics["per_seed"][str(SEED)]
    for clusterer, labels in expected.items():
        np.testing.assert_array_equal(runs.study.predictions[f"{clusterer}.seed{SEED}"], labels, err_msg=clusterer)
        assert metrics[f"{clusterer}.ami"] == pytest.approx(adjusted_mutual_info_score(runs.labels, labels),
                                                            abs=1e-12), clusterer
    assert round(0.2 * n) == 100 and (expected["hdbscan"] == -1).any()  # the cap and noise are both in play here
    assert runs.study.main_score == pytest.approx(adjusted_mutual_info_score(runs.labels, expected["ward"]))


def test_the_default_protocol_is_unchanged(runs: Runs) -> None:
    import hdbscan

    x, k = runs.reduced, runs.k
    expected = {
        "kmeans": sklearn.cluster.KMeans(n_clusters=k, init="k-means++", n_init=10,
                                         random_state=SEED).fit_predict(x),
        "ward": sklearn.cluster.AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x),
        "hdbscan": hdbscan.HDBSCAN(min_cluster_size=5, cluster_selection_method="eom",
                                   metric="euclidean").fit_predict(x.astype(np.float64)),
        "spectral": sklearn.cluster.SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=10,
                                                       assign_labels="kmeans", random_state=SEED).fit_predict(x),
        "affinity": sklearn.cluster.AffinityPropagation(damping=0.9, max_iter=1000, convergence_iter=15,
                                                        random_state=SEED).fit_predict(x),
    }
    for clusterer, labels in expected.items():
        np.testing.assert_array_equal(runs.default.predictions[f"{clusterer}.seed{SEED}"], labels, err_msg=clusterer)
    assert ClusteringEvaluator.protocol == "clustering/umap-v2"
    config = runs.default.metrics["config"]
    assert config["kmeans"] == {"init": "k-means++", "n_init": 10}
    assert config["hdbscan"] == {"min_cluster_size": 5, "cluster_selection_method": "eom", "metric": "euclidean",
                                 "min_samples": None, "dtype": "float64", "noise": "one label"}
    assert config["spectral"] == {"affinity": "nearest_neighbors", "n_neighbors": 10, "assign_labels": "kmeans"}


def test_the_three_clusterers_that_differ_do_differ_here_and_the_other_two_agree(runs: Runs) -> None:
    """So that the two tests above could tell the preset from the default on this data."""
    for clusterer in ("kmeans", "hdbscan", "spectral"):
        key = f"{clusterer}.seed{SEED}"
        assert not np.array_equal(runs.study.predictions[key], runs.default.predictions[key]), clusterer
    for clusterer in ("ward", "affinity"):
        key = f"{clusterer}.seed{SEED}"
        np.testing.assert_array_equal(runs.study.predictions[key], runs.default.predictions[key])


def test_the_preset_shares_the_default_clusterings_reductions(runs: Runs) -> None:
    # The study preset computed the 50-d reduction and the 2-d layout; the default computed neither.
    assert runs.computed_by_study["computed"] == 2
    assert runs.computed_by_both["computed"] == 2
    assert runs.default.metrics["runtime"]["reduction_source"] == ["memory"]
    assert runs.source == "memory"
    np.testing.assert_array_equal(runs.study.artifacts["umap2d"], runs.default.artifacts["umap2d"])
    assert runs.study.metrics["reduction"] == runs.default.metrics["reduction"]


def test_the_preset_is_its_own_protocol_and_records_its_settings(runs: Runs) -> None:
    plugins = Plugins(entry_points=False)
    preset = plugins.evaluator("clustering-study")
    assert isinstance(preset, ClusteringEvaluator)
    assert (preset.name, preset.protocol) == ("clustering-study", "clustering/lowe-study-v1")
    assert preset.options == ClusteringEvaluator.default_options() and preset.non_default_options == {}
    config = runs.study.metrics["config"]
    assert config["kmeans"] == {"init": "k-means++", "n_init": 1, "max_iter": 1000}
    assert config["hdbscan"] == {"library": "sklearn.cluster.HDBSCAN", "min_cluster_size": 5,
                                 "cluster_selection_method": "eom", "metric": "euclidean", "min_samples": 5,
                                 "max_cluster_size": "round(0.2 * N)", "noise": "one label"}
    assert config["spectral"]["assign_labels"] == "cluster_qr"
    assert {key: config[key] for key in ("umap", "ward", "affinity")} == \
           {key: runs.default.metrics["config"][key] for key in ("umap", "ward", "affinity")}
    with pytest.raises(HarnessError, match="clustering-study option reduce='tsne'"):
        ClusteringStudyEvaluator(reduce="tsne")


def test_a_plain_run_and_a_suite_without_evaluators_leave_the_preset_out(tmp_path) -> None:
    plugins = Plugins(entry_points=False)
    plain = run_config(build_parser().parse_args(["run"]), plugins)
    assert "clustering" in plain.evaluators and "clustering-study" not in plain.evaluators
    assert sorted(plain.evaluators) == sorted(e.name for e in plugins.evaluators if e.name != "clustering-study")
    asked = run_config(build_parser().parse_args(["run", "--eval", "clustering,clustering-study",
                                                  "--eval-option", "clustering-study.n_seeds=2"]), plugins)
    assert asked.evaluators == ["clustering", "clustering-study"]
    assert asked.evaluator_options == {"clustering-study": {"n_seeds": 2}}
    suite = tmp_path / "suite.toml"
    suite.write_text('[[encoders]]\nname = "pixels"\n\n[[datasets]]\nname = "cifar10-mini"\n')
    assert load_suite(suite, plugins, plain.evaluators).config.evaluators == plain.evaluators
    suite.write_text(suite.read_text() + '\n[[evaluators]]\nname = "clustering-study"\n')
    assert load_suite(suite, plugins, plain.evaluators).config.evaluators == ["clustering-study"]
