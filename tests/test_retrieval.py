"""Retrieval `retrieval/map-at-r-v1` against the protocol written out in numpy (full similarity matrix, argsort)
and against scikit-learn's `average_precision_score`, query by query."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from harness.errors import HarnessError
from harness.plugins.retrieval import Retrieval
from harness.types import Embeddings, ExecutionSettings

CPU = ExecutionSettings(device="cpu")


def embeddings(x, y, prefix, class_names=None):
    meta = {"class_names": class_names} if class_names else {}
    return Embeddings(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64),
                      np.array([f"{prefix}/{i}" for i in range(len(y))]), meta)


def clustered(seed, n_train=300, n_test=80, classes=6, dim=16, spread=1.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    train_y, test_y = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    return (centres[train_y] + spread * rng.normal(size=(n_train, dim)), train_y,
            centres[test_y] + spread * rng.normal(size=(n_test, dim)), test_y)


def reference(train_x, train_y, test_x, test_y, recall_ks=(1, 5, 10)):
    """mAP@R and recall@K one query at a time, from the whole float64 similarity matrix: the definitions as written.

    Returns (AP@R of each query, None where excluded; {K: found per query}), ties ranked by gallery index.
    """
    train_n = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    test_n = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sims = test_n @ train_n.T
    aps, found = [], {K: [] for K in recall_ks}
    for q, label in enumerate(test_y):
        r = int((train_y == label).sum())
        if label < 0 or r == 0:
            aps.append(None)
            continue
        ranked = np.argsort(-sims[q], kind="stable")
        relevant = train_y[ranked] == label
        total = 0.0
        for i in range(1, r + 1):  # AP@R = (1/R) sum_{i<=R} P(i) rel(i)
            if relevant[i - 1]:
                total += relevant[:i].sum() / i
        aps.append(total / r)
        for K in recall_ks:
            found[K].append(bool(relevant[:K].any()))
    return aps, found, sims


@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_equals_the_numpy_reference(seed):
    train_x, train_y, test_x, test_y = clustered(seed)
    result = Retrieval().evaluate(embeddings(train_x, train_y, "train"), embeddings(test_x, test_y, "test"),
                                  seed=0, settings=CPU)
    aps, found, _ = reference(train_x, train_y, test_x, test_y)
    np.testing.assert_allclose(result.predictions["score"], np.array(aps, dtype=float), rtol=0, atol=1e-12)
    assert result.main_metric == "map_at_r"
    assert result.main_score == pytest.approx(np.mean(aps), abs=1e-12)
    assert result.predictions["score"].mean() == pytest.approx(result.main_score, abs=1e-12)
    for K in (1, 5, 10):
        assert result.metrics[f"recall_at_{K}"] == pytest.approx(np.mean(found[K]), abs=1e-12)
    np.testing.assert_array_equal(result.predictions["ids"], [f"test/{i}" for i in range(len(test_y))])
    assert result.metrics["n_queries"] == len(test_y) and result.metrics["n_excluded_queries"] == 0
    assert result.metrics["neighbours"] == np.bincount(train_y).max()
    assert 0.2 < result.main_score < 0.9  # informative data: neither chance (about 1/6) nor trivial
    assert result.metrics["recall_at_1"] <= result.metrics["recall_at_5"] <= result.metrics["recall_at_10"]


def test_ap_at_r_is_sklearn_average_precision_on_the_top_r_scaled_by_the_hits():
    """On data without tied similarities, AP@R = sklearn AP over the top-R scores x (relevant in top R) / R."""
    train_x, train_y, test_x, test_y = clustered(2, n_train=200, n_test=60)
    result = Retrieval().evaluate(embeddings(train_x, train_y, "train"), embeddings(test_x, test_y, "test"),
                                  seed=0, settings=CPU)
    _, _, sims = reference(train_x, train_y, test_x, test_y)
    checked = 0
    for q, label in enumerate(test_y):
        r = int((train_y == label).sum())
        top = np.argsort(-sims[q])[:r]
        assert len(np.unique(sims[q])) == len(train_y)  # no ties: the order is the same whatever the tie rule
        relevant = train_y[top] == label
        if not relevant.any():  # sklearn's AP is undefined without a positive; AP@R is 0 there
            assert result.predictions["score"][q] == 0
            continue
        expected = average_precision_score(relevant, sims[q, top]) * relevant.sum() / r
        assert result.predictions["score"][q] == pytest.approx(expected, abs=1e-9)
        checked += 1
    assert checked >= 50


def test_queries_without_a_gallery_class_are_excluded_and_counted():
    train_x, train_y, test_x, test_y = clustered(3, classes=5)
    train_y = np.where(train_y == 4, 3, train_y)  # class 4 only in test: no gallery item
    test_y = test_y.copy()
    test_y[:3] = -1  # unlabelled queries: excluded too
    names = ["a", "b", "c", "d", "e"]
    result = Retrieval().evaluate(embeddings(train_x, train_y, "train", names),
                                  embeddings(test_x, test_y, "test", names), seed=0, settings=CPU)
    aps, found, _ = reference(train_x, train_y, test_x, test_y)
    kept = np.array([ap is not None for ap in aps])
    n_class_e = int((test_y == 4).sum())
    assert n_class_e > 0
    m = result.metrics
    assert m["n_excluded_queries"] == 3 + n_class_e == (~kept).sum()
    assert m["excluded_classes"] == {"e": n_class_e} and m["n_unlabelled_queries"] == 3
    assert m["n_queries"] == kept.sum() == len(result.predictions["ids"])
    # the per-item scores cover the included queries only, so their mean is the main score
    np.testing.assert_array_equal(result.predictions["ids"], np.array([f"test/{i}" for i in range(len(test_y))])[kept])
    np.testing.assert_allclose(result.predictions["score"], [ap for ap in aps if ap is not None], atol=1e-12)
    assert result.predictions["score"].mean() == pytest.approx(result.main_score, abs=1e-12)
    assert m["recall_at_5"] == pytest.approx(np.mean(found[5]), abs=1e-12)


def test_a_small_memory_budget_gives_the_same_numbers_in_several_blocks():
    train_x, train_y, test_x, test_y = clustered(4, n_train=700, n_test=90, dim=24)
    train, test = embeddings(train_x, train_y, "train"), embeddings(test_x, test_y, "test")
    roomy = Retrieval().evaluate(train, test, seed=0, settings=CPU)
    tight = Retrieval().evaluate(train, test, seed=0, settings=ExecutionSettings(device="cpu", memory_budget_mb=0.2))
    assert roomy.metrics["runtime"]["train_block"] == 700
    assert tight.metrics["runtime"]["train_block"] < 700 / 2  # at least three train blocks
    assert tight.metrics["runtime"]["query_block"] < 90
    assert tight.metrics["runtime"]["working_bytes"] <= 0.2 * 2**20
    assert {k: v for k, v in tight.metrics.items() if k != "runtime"} == \
        {k: v for k, v in roomy.metrics.items() if k != "runtime"}
    np.testing.assert_array_equal(tight.predictions["score"], roomy.predictions["score"])


def test_equal_similarities_rank_by_gallery_index():
    """Two gallery items with the same vector: the lower index ranks first, whatever its class."""
    e = np.eye(3, dtype=np.float32)
    train_x = np.stack([e[0], e[0], e[1], e[2]])
    train_y = np.array([1, 0, 1, 2])  # class 0 has one item (R = 1), tied with a class-1 item of lower index
    test_x, test_y = np.stack([e[0], e[0]]), np.array([0, 1])
    result = Retrieval(recall_ks=[1, 2]).evaluate(embeddings(train_x, train_y, "g"), embeddings(test_x, test_y, "q"),
                                                  seed=0, settings=CPU)
    # query 0 (class 0, R = 1): rank 1 is gallery item 0 (class 1): AP@R = 0, found at rank 2
    # query 1 (class 1, R = 2): ranks 1, 2 are items 0 (class 1) and 1 (class 0): AP@R = (1/2)(1/1) = 0.5
    np.testing.assert_allclose(result.predictions["score"], [0.0, 0.5])
    assert result.metrics["recall_at_1"] == 0.5 and result.metrics["recall_at_2"] == 1.0


def test_bad_options_and_impossible_data_are_one_clear_error():
    train_x, train_y, test_x, test_y = clustered(5, n_train=40, n_test=10, classes=3)
    train, test = embeddings(train_x, train_y, "train"), embeddings(test_x, test_y, "test")
    for bad in ([0, 5], [], "1,5", [1.5]):
        with pytest.raises(HarnessError, match="recall_ks.*positive integers"):
            Retrieval(recall_ks=bad)
    with pytest.raises(HarnessError, match="no option"):
        Retrieval(k=5)
    with pytest.raises(HarnessError, match="none of the 10 test items"):
        Retrieval().evaluate(train, embeddings(test_x, test_y + 3, "test"), seed=0, settings=CPU)
    result = Retrieval(recall_ks=[1, 100]).evaluate(train, test, seed=0, settings=CPU)
    assert result.metrics["recall_at_100"] is None and "exceeds the 40" in result.metrics["null_reasons"]["recall_at_100"]


def test_retrieval_is_a_builtin_evaluator_of_the_default_run():
    from harness.plugin_manager import Plugins

    plugins = Plugins(entry_points=False)
    evaluator = plugins.evaluator("retrieval")
    assert isinstance(evaluator, Retrieval) and evaluator.protocol == "retrieval/map-at-r-v1"


def test_records_compare_with_a_paired_bootstrap_over_the_saved_ap_at_r(tmp_path):
    """Through the runner: the saved per-query AP@R averages to the main score, and `compare` pairs it by id."""
    import torch
    from torchvision import transforms

    import harness
    from harness.leaderboard.compare import compare_encoders
    from harness.records import load_predictions, load_records

    to_tensor = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
    flat = torch.nn.Flatten()
    blurred = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten())  # a worse encoder: 2x2 pixels
    kwargs = dict(datasets=["synthetic"], evaluators=["retrieval"], results_dir=str(tmp_path / "r"),
                  cache_dir=str(tmp_path / "c"), device="cpu", progress=False)
    harness.evaluate_model(flat, to_tensor, name="flat", transform_id="8px", **kwargs)
    harness.evaluate_model(blurred, to_tensor, name="blurred", transform_id="8px", **kwargs)
    records = load_records(tmp_path / "r")
    for record in records:
        predictions = load_predictions(record)
        assert record["evaluator"]["protocol"] == "retrieval/map-at-r-v1"
        assert predictions["score"].mean() == pytest.approx(record["main_score"], abs=1e-12)
        assert len(predictions["ids"]) == record["metrics"]["n_queries"]
    [row] = compare_encoders(records, "flat", ["blurred"])
    assert row.metric == "map_at_r" and row.method.startswith("paired bootstrap")
    assert row.low is not None and row.low <= row.difference <= row.high
