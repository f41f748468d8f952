"""kNN `knn/dino-v1` against the protocol written out independently, query by query, in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.types import Embeddings, ExecutionSettings
from harness.plugins.knn import KNN, nearest_neighbours

CPU = ExecutionSettings(device="cpu")


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
                            settings=CPU)
    for k in (10, 20, 100, 200):
        top1, top5, predictions = reference_knn(train_x, train_y, test_x, test_y, k)
        assert result.metrics[f"top1_k{k}"] == pytest.approx(top1, abs=1e-12)
        assert result.metrics[f"top5_k{k}"] == pytest.approx(top5, abs=1e-12)
        if k == 20:
            np.testing.assert_array_equal(result.predictions["prediction"], predictions)
            # the per-item score: correctness at the main k, whose mean is the main score
            np.testing.assert_array_equal(result.predictions["score"], (predictions == test_y).astype(np.float64))
            assert result.predictions["score"].mean() == pytest.approx(top1, abs=1e-12)
    assert result.main_metric == "top1_k20"
    assert result.main_score == result.metrics["top1_k20"]
    assert 0.2 < result.main_score < 1.0  # informative data: neither chance (1/12) nor trivial


@pytest.mark.slow  # the real offline default (`cifar_embeddings`)
def test_knn_equals_reference_on_real_embeddings(cifar_embeddings):
    train, test = cifar_embeddings
    result = KNN().evaluate(train, test, seed=0, settings=CPU)
    top1, top5, predictions = reference_knn(np.asarray(train.features, dtype=np.float64), train.labels,
                                            np.asarray(test.features, dtype=np.float64), test.labels, 20)
    assert result.main_score == pytest.approx(top1, abs=1e-12)
    assert result.metrics["top5_k20"] == pytest.approx(top5, abs=1e-12)
    # float32 similarities may break a near-tie differently from float64 on a rare item, never more
    assert (result.predictions["prediction"] != predictions).sum() <= 2
    np.testing.assert_array_equal(result.predictions["ids"], test.ids)


def reference_neighbours(train, queries, k):
    """The k nearest train rows of each query in float64 numpy: cosine, ties to the lower train index."""
    train_n = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    query_n = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    sims = query_n @ train_n.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("train_block,query_block", [(64, 7), (1000, 77), (333, 1), (1, 77)])
def test_streamed_top_k_equals_numpy_reference(train_block, query_block):
    """Blocks smaller than N (many merges, a last block shorter than k, one row a block) give the reference."""
    rng = np.random.default_rng(3)
    train, queries = rng.normal(size=(1000, 16)).astype(np.float32), rng.normal(size=(77, 16)).astype(np.float32)
    ref_sims, ref_idx = reference_neighbours(train.astype(np.float64), queries.astype(np.float64), 50)
    sims, idx = nearest_neighbours(train, queries, k=50, train_block=train_block, query_block=query_block)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(sims.numpy(), ref_sims, rtol=0, atol=1e-5)


def test_ties_go_to_the_lower_train_index_whatever_the_blocks():
    """Duplicate train items (exactly equal similarities) straddling the k-th place and the block boundaries."""
    dim = 6
    basis = np.eye(dim, dtype=np.float32)
    # Train: each basis vector 9 times, interleaved, so every block holds some copies of each; plus a few others.
    train = np.concatenate([np.tile(basis, (9, 1)), 3 * basis[:2]])
    queries = np.concatenate([basis, basis[:3] + basis[3:]]).astype(np.float32)
    # On basis vectors the similarities are exact (one non-zero product), so ties are real ties in any order.
    ref_sims, ref_idx = reference_neighbours(train.astype(np.float64), queries.astype(np.float64), 13)
    for train_block, query_block in [(len(train), len(queries)), (4, 2), (7, 9), (13, 1)]:
        sims, idx = nearest_neighbours(train, queries, k=13, train_block=train_block, query_block=query_block)
        np.testing.assert_array_equal(idx.numpy(), ref_idx)
        np.testing.assert_allclose(sims.numpy(), ref_sims, rtol=0, atol=1e-6)
    # Every query has more train rows at its 13th similarity than places left for them: the tie is decided by k.
    all_sims, _ = reference_neighbours(train.astype(np.float64), queries.astype(np.float64), len(train))
    assert (all_sims[:, 13] == all_sims[:, 12]).all()


def test_blocks_follow_the_budget():
    from harness.plugins.knn import blocks_for, plan_blocks

    n, q, d, k = 200_000, 10_000, 768, 200
    for budget_mb in (64, 256, 1024):
        blocks = plan_blocks(n, q, d, k, budget_mb << 20)
        assert blocks.working_bytes(q, d, k) <= budget_mb << 20
        assert blocks.train_block < n  # streamed: the bank does not fit
    assert plan_blocks(n, q, d, k, 64 << 20).train_block < plan_blocks(n, q, d, k, 256 << 20).train_block
    small = blocks_for(100, 10, 8, 20, memory_budget_bytes=1 << 30)
    assert small == plan_blocks(100, 10, 8, 20, 1 << 30) and small.train_block == 100 and small.queries_resident
    with pytest.raises(HarnessError, match="memory budget.*--memory-budget-mb"):
        plan_blocks(n, 1_000_000, d, k, 64 << 20)  # the 1e6 x 200 result alone is 2.4 GB
    with pytest.raises(HarnessError, match="train_block"):
        blocks_for(n, q, d, k, train_block=0)


def test_knn_budget_is_not_an_option_and_does_not_change_the_numbers():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(5, 24))
    train_y, test_y = rng.integers(0, 5, 700), rng.integers(0, 5, 90)
    train = embeddings(centres[train_y] + rng.normal(size=(700, 24)), train_y, "train")
    test = embeddings(centres[test_y] + rng.normal(size=(90, 24)), test_y, "test")
    roomy = KNN().evaluate(train, test, seed=0, settings=CPU)
    tight = KNN().evaluate(train, test, seed=0, settings=ExecutionSettings(device="cpu", memory_budget_mb=0.3))
    assert tight.metrics["runtime"]["train_block"] < 700 == roomy.metrics["runtime"]["train_block"]
    assert tight.metrics["runtime"]["working_bytes"] <= 0.3 * 2**20
    assert {k: v for k, v in tight.metrics.items() if k != "runtime"} == \
        {k: v for k, v in roomy.metrics.items() if k != "runtime"}
    np.testing.assert_array_equal(tight.predictions["top5"], roomy.predictions["top5"])
    assert "memory_budget_mb" not in KNN().options  # an execution setting: same cell, same column
    with pytest.raises(HarnessError, match="no option"):
        KNN(memory_budget_mb=0.3)


def test_k_larger_than_train_set_is_null_with_reason():
    rng = np.random.default_rng(0)
    train_y, test_y = np.arange(60) % 3, np.arange(30) % 3
    result = KNN().evaluate(embeddings(rng.normal(size=(60, 8)), train_y, "a"),
                            embeddings(rng.normal(size=(30, 8)), test_y, "b"), seed=0, settings=CPU)
    assert result.metrics["top1_k100"] is None and "exceeds" in result.metrics["null_reasons"]["top1_k100"]
    assert result.metrics["top1_k20"] is not None


@pytest.mark.parametrize("k", [37, 150, 300])
def test_cpu_heap_selection_equals_torch_selection_on_exact_ties(k):
    """The CPU's compiled heap scan and torch's topk-and-merge give the same neighbours, order and similarities.

    Train rows are scaled basis vectors (and two zero rows), so a query's similarities are its own normalised
    coordinates (one non-zero product, exact) and zero: a few distinct values shared by dozens of train rows,
    with the k-th place inside a tie. Blocks of 64 rows, so k = 150 spans three blocks and k = 300 is every row.
    """
    dim, n_train = 8, 300
    rng = np.random.default_rng(11)
    train = np.eye(dim, dtype=np.float32)[rng.integers(0, dim, n_train)] * rng.integers(1, 6, (n_train, 1))
    train[[5, 200]] = 0  # norm clamped: similarity 0 to everything
    queries = rng.integers(-3, 4, (40, dim)).astype(np.float32)  # equal coordinates: ties between basis vectors
    queries[0] = 0
    ref_sims, ref_idx = reference_neighbours(train.astype(np.float64), queries.astype(np.float64), k)
    by_heap = nearest_neighbours(train, queries, k=k, train_block=64, query_block=9, selection="heap")
    by_torch = nearest_neighbours(train, queries, k=k, train_block=64, query_block=9, selection="torch")
    assert by_heap[0].dtype == by_torch[0].dtype and by_heap[1].dtype == by_torch[1].dtype
    np.testing.assert_array_equal(by_heap[1].numpy(), by_torch[1].numpy())
    np.testing.assert_array_equal(by_heap[0].numpy(), by_torch[0].numpy())
    np.testing.assert_array_equal(by_heap[1].numpy(), ref_idx)
    np.testing.assert_allclose(by_heap[0].numpy(), ref_sims, rtol=0, atol=1e-6)
    # The data does what it is for: the similarity after the k-th equals the k-th in most queries.
    if k < n_train:
        all_sims, _ = reference_neighbours(train.astype(np.float64), queries.astype(np.float64), n_train)
        assert (all_sims[:, k] == all_sims[:, k - 1]).mean() > 0.8


def test_selection_must_be_known_and_heap_is_cpu_only():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(HarnessError, match="selection='fast'"):
        nearest_neighbours(x, x, k=2, selection="fast")
    with pytest.raises(HarnessError, match="CPU only"):
        nearest_neighbours(x, x, k=2, device="cuda", selection="heap")
