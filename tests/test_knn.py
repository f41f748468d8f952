"""kNN `knn/dino-v1` against the protocol written out independently, query by query, in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from harness.types import Embeddings
from plugins.knn import KNN, nearest_neighbours


def reference_knn(train_x, train_y, test_x, test_y, k, temperature=0.07, num_classes=None):
    """DINO's weighted kNN, one query at a time: cosine similarity, exp(sim/T) votes, ties to the lower class."""
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    train_n = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    top1 = top5 = 0
    predictions = []
    for query, target in zip(test_x, test_y):
        sims = train_n @ (query / np.linalg.norm(query))
        nearest = np.argsort(-sims, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for j in nearest:
            scores[train_y[j]] += np.exp(sims[j] / temperature)
        ranked = sorted(range(num_classes), key=lambda c: (-scores[c], c))
        predictions.append(ranked[0])
        top1 += ranked[0] == target
        top5 += target in ranked[:5]
    return top1 / len(test_y), top5 / len(test_y), np.array(predictions)


def embeddings(x, y, prefix):
    return Embeddings(x.astype(np.float32), y.astype(np.int64), np.array([f"{prefix}/{i}" for i in range(len(y))]))


@pytest.mark.parametrize("seed", [0, 1])
def test_knn_equals_reference_on_random_embeddings(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 32))
    train_y = rng.integers(0, 12, 400)
    test_y = rng.integers(0, 12, 150)
    train_x = centres[train_y] + 1.5 * rng.normal(size=(400, 32))
    test_x = centres[test_y] + 1.5 * rng.normal(size=(150, 32))
    result = KNN().evaluate(embeddings(train_x, train_y, "train"), embeddings(test_x, test_y, "test"), seed=0,
                            device="cpu")
    for k in (10, 20, 100, 200):
        top1, top5, predictions = reference_knn(train_x, train_y, test_x, test_y, k)
        assert result.metrics[f"top1_k{k}"] == pytest.approx(top1, abs=1e-12)
        assert result.metrics[f"top5_k{k}"] == pytest.approx(top5, abs=1e-12)
        if k == 20:
            np.testing.assert_array_equal(result.predictions["prediction"], predictions)
    assert result.main_metric == "top1_k20"
    assert result.main_score == result.metrics["top1_k20"]
    assert 0.2 < result.main_score < 1.0  # informative data: neither chance (1/12) nor trivial


def test_knn_equals_reference_on_real_embeddings(cifar_embeddings):
    train, test = cifar_embeddings
    result = KNN().evaluate(train, test, seed=0, device="cpu")
    top1, top5, predictions = reference_knn(np.asarray(train.features, dtype=np.float64), train.labels,
                                            np.asarray(test.features, dtype=np.float64), test.labels, 20)
    assert result.main_score == pytest.approx(top1, abs=1e-12)
    assert result.metrics["top5_k20"] == pytest.approx(top5, abs=1e-12)
    # float32 similarities may break a near-tie differently from float64 on a rare item, never more
    assert (result.predictions["prediction"] != predictions).sum() <= 2
    np.testing.assert_array_equal(result.predictions["ids"], test.ids)


def test_blocked_top_k_equals_one_block():
    rng = np.random.default_rng(3)
    train, queries = rng.normal(size=(1000, 16)).astype(np.float32), rng.normal(size=(77, 16)).astype(np.float32)
    sims_one, idx_one = nearest_neighbours(train, queries, k=50)
    sims_blocked, idx_blocked = nearest_neighbours(train, queries, k=50, block_elements=2048)  # 2 x 1024 blocks
    np.testing.assert_allclose(sims_blocked.numpy(), sims_one.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(idx_blocked.numpy(), idx_one.numpy())


def test_k_larger_than_train_set_is_null_with_reason():
    rng = np.random.default_rng(0)
    train_y, test_y = np.arange(60) % 3, np.arange(30) % 3
    result = KNN().evaluate(embeddings(rng.normal(size=(60, 8)), train_y, "a"),
                            embeddings(rng.normal(size=(30, 8)), test_y, "b"), seed=0, device="cpu")
    assert result.metrics["top1_k100"] is None and "exceeds" in result.metrics["null_reasons"]["top1_k100"]
    assert result.metrics["top1_k20"] is not None
