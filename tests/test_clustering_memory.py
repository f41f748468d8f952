"""Clustering refuses an O(N^2) method too large for the memory budget, and subsamples only when asked."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.types import Embeddings, ExecutionSettings
from harness.plugins.clustering import ClusteringEvaluator, largest_fitting_n, quadratic_memory_bytes

CPU = ExecutionSettings(device="cpu")


def budget(megabytes: float) -> ExecutionSettings:
    return ExecutionSettings(device="cpu", memory_budget_mb=megabytes)

FAST = {"reduce": "none", "n_seeds": 1}  # no UMAP: these tests are about sizes, not about the reduction


def blobs(n: int = 300, k: int = 5, dim: int = 8, seed: int = 0) -> Embeddings:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    features = (8.0 * rng.normal(size=(k, dim))[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return Embeddings(features, labels.astype(np.int64), np.array([f"item{i}" for i in range(n)]))


def test_quadratic_clusterers_over_the_budget_are_skipped_with_the_memory_they_need():
    data = blobs(300)
    # ward needs 8 x 300^2 = 703 KiB and fits; spectral (879 KiB) and affinity propagation (2.7 MiB) do not.
    result = ClusteringEvaluator(**FAST).evaluate(None, data, seed=0, settings=budget(0.8))
    skipped = result.metrics["skipped"]
    assert set(skipped) == {"spectral", "affinity"}
    assert "affinity needs about 2.7 MiB for N=300" in skipped["affinity"]
    assert "spectral needs about 878.9 KiB for N=300" in skipped["spectral"]
    assert all("memory budget of 819.2 KiB" in r and "subsample=" in r for r in skipped.values())
    assert result.metrics["null_reasons"]["affinity.ami"] == skipped["affinity"]
    assert result.main_score is not None and result.main_score > 0.9  # ward, kmeans, hdbscan kept their results
    assert result.metrics["mean"]["kmeans.ami"] > 0.9
    roomy = ClusteringEvaluator(**FAST).evaluate(None, data, seed=0, settings=CPU)
    assert roomy.metrics["skipped"] == {} and roomy.metrics["mean"]["affinity.ami"] is not None
    assert "subsampled" not in roomy.metrics and roomy.metrics["n_items"] == 300  # never subsampled unasked


def test_ward_over_the_budget_refuses_the_record_and_names_the_subsample_option():
    data = blobs(300)
    with pytest.raises(HarnessError) as error:
        ClusteringEvaluator(**FAST).evaluate(None, data, seed=0, settings=budget(0.5))
    message = str(error.value)
    assert "ward" in message and "N=300" in message and "703.1 KiB" in message and "512.0 KiB" in message
    assert "subsample=256" in message and "--eval-option clustering.subsample=N" in message and "--memory-budget-mb" in message
    assert 8 * 256**2 <= 0.5 * 2**20 < 8 * 257**2  # 256 is the largest N that fits, as the message says

    evaluator = ClusteringEvaluator(subsample=256, **FAST)
    assert evaluator.non_default_options == {"subsample": 256, **FAST}  # another column, shown as such
    result = evaluator.evaluate(None, data, seed=0, settings=budget(0.5))
    assert result.metrics["subsampled"] == {"n_items": 256, "of": 300, "seed": 0}
    assert result.metrics["n_items"] == 256 and len(result.predictions["ids"]) == 256
    chosen = np.sort(np.random.default_rng(0).choice(300, 256, replace=False))  # seeded, as documented
    np.testing.assert_array_equal(result.predictions["ids"], data.ids[chosen])
    np.testing.assert_array_equal(result.predictions["label"], data.labels[chosen])
    assert result.main_score > 0.9
    again = ClusteringEvaluator(subsample=256, **FAST).evaluate(None, data, seed=0, settings=CPU)
    np.testing.assert_array_equal(again.predictions["ids"], result.predictions["ids"])
    with pytest.raises(HarnessError, match="subsample"):
        ClusteringEvaluator(subsample=3)


MEASURE = r"""
import sys, warnings
import numpy as np
from harness.memory import AnonymousMemoryPeak
method, n = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(0).normal(size=(n, 10))
import sklearn.cluster
from scipy.cluster.hierarchy import linkage
with AnonymousMemoryPeak() as peak, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if method == "ward":
        linkage(x, method="ward")
    else:
        sklearn.cluster.AffinityPropagation(damping=0.9, max_iter=30, random_state=0).fit(x)
print(peak.growth_bytes)
"""


@pytest.mark.slow  # measures peak memory in subprocesses
@pytest.mark.parametrize("method", ["ward", "affinity"])
def test_quadratic_memory_estimate_matches_what_the_method_takes(method, tmp_path):
    n = 1500
    out = subprocess.run([sys.executable, "-c", MEASURE, method, str(n)], capture_output=True, text=True,
                         timeout=300, check=True,
                         env={"OMP_NUM_THREADS": "1"}, cwd=tmp_path)  # the installed harness, not the checkout
    measured = int(out.stdout.strip().splitlines()[-1])
    estimate = quadratic_memory_bytes(method, n)
    print(f"\n{method} at N={n}: estimated {estimate / 2**20:.1f} MiB, measured RssAnon growth "
          f"{measured / 2**20:.1f} MiB")
    assert 0.75 * estimate <= measured <= 1.25 * estimate
    assert largest_fitting_n(method, estimate) == n // 1000 * 1000
