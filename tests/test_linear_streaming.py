"""The linear probe on features streamed from a memory map in chunks: the same objective, the same solution."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.types import Embeddings, ExecutionSettings
from harness.plugins.linear_probe import LinearProbe, fit_logistic_regression, streaming_plan

CPU = ExecutionSettings(device="cpu")


def memmapped(path, array):
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def blobs(seed, n, d=20, k=4):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d)) + 3.0).astype(np.float32), y  # a common offset, as CNN features


def objective(x, y, coef, intercept, c):
    """scikit-learn's written objective, C * sum CE + ||W||^2 / 2, in float64 numpy."""
    logits = x.astype(np.float64) @ coef.T + intercept
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return c * -log_probs[np.arange(len(y)), y].sum() + 0.5 * (coef ** 2).sum()


@pytest.mark.parametrize("chunk_rows", [37, 600])
def test_streamed_fit_equals_in_memory_fit(tmp_path, chunk_rows):
    x, y = blobs(0, 600)
    features = memmapped(tmp_path / "x.npy", x)
    coef, intercept, solution = fit_logistic_regression(x, y, 0.05, dtype="float64")
    s_coef, s_intercept, s_solution = fit_logistic_regression(features, y, 0.05, dtype="float64",
                                                              chunk_rows=chunk_rows)
    assert s_solution.converged and solution.converged
    np.testing.assert_allclose(s_coef, coef, rtol=0, atol=1e-8)
    np.testing.assert_allclose(s_intercept, intercept, rtol=0, atol=1e-8)
    assert s_solution.objective == pytest.approx(solution.objective, rel=1e-12)
    # ... and the objective it reports is the one written in numpy here
    assert s_solution.objective == pytest.approx(objective(x, y, s_coef, s_intercept, 0.05), rel=1e-9)


def test_probe_streams_under_a_small_budget_with_the_same_result(tmp_path):
    x, y = blobs(1, 700)
    train_x, train_y, test_x, test_y = x[:560], y[:560], x[560:], y[560:]
    train = Embeddings(memmapped(tmp_path / "train.npy", train_x), train_y.astype(np.int64),
                       np.array([f"tr{i}" for i in range(560)]))
    test = Embeddings(memmapped(tmp_path / "test.npy", test_x), test_y.astype(np.int64),
                      np.array([f"te{i}" for i in range(140)]))
    options = {"dtype": "float64", "num_c": 12}
    budget_mb = 0.1
    plan = streaming_plan(560, 20, 4, "float64", int(budget_mb * 2**20))
    assert not plan["fits"] and 1 < plan["chunk_rows"] < 560 // 4  # several chunks per pass

    in_memory = LinearProbe(**options).evaluate(train, test, seed=0, settings=CPU)
    streamed = LinearProbe(**options).evaluate(train, test, seed=0,
                                               settings=ExecutionSettings(device="cpu", memory_budget_mb=budget_mb))
    forced = LinearProbe(streaming=True, **options).evaluate(train, test, seed=0, settings=CPU)
    assert in_memory.metrics["runtime"]["streamed"] is False
    assert streamed.metrics["runtime"]["streamed"] is True
    assert streamed.metrics["runtime"]["chunk_rows"] == plan["chunk_rows"]
    assert forced.metrics["runtime"]["streamed"] is True
    for result in (streamed, forced):
        assert result.metrics["chosen_C"] == in_memory.metrics["chosen_C"]
        assert result.metrics["top1"] == in_memory.metrics["top1"]
        np.testing.assert_array_equal(result.predictions["top5"], in_memory.predictions["top5"])
        assert result.metrics["objective"] == pytest.approx(in_memory.metrics["objective"], rel=1e-9)
        assert [p["val_top1"] for p in result.metrics["val_accuracy_per_C"]] == \
            [p["val_top1"] for p in in_memory.metrics["val_accuracy_per_C"]]
    assert in_memory.metrics["top1"] > 0.6  # informative data (chance is 0.25)
    assert "memory_budget_mb" not in LinearProbe(**options).options  # an execution setting, not part of the cell
    with pytest.raises(HarnessError, match="no option"):
        LinearProbe(memory_budget_mb=budget_mb, **options)
