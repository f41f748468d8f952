"""The linear probe `linear/logreg-v1`: parity with scikit-learn, the C search, reproducibility, end to end.

Everything here is real: real scikit-learn as the reference (its objective evaluated by a formula written out
below, not by the code under test), scikit-learn's bundled handwritten digits as real data, read-only memory maps
as the store hands them out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from harness.errors import HarnessError
from harness.types import Embeddings, ExecutionSettings
from harness.plugins.linear_probe import (LinearProbe, c_grid, coarse_indices, fit_logistic_regression, select_c_index,
                                  warm_start_index)

CPU = ExecutionSettings(device="cpu")

PARITY_CS = (1e-3, 1e-2, 1e-1, 1.0)


def embeddings(x: np.ndarray, y: np.ndarray, name: str, class_names: list[str] | None = None) -> Embeddings:
    meta = {"class_names": class_names} if class_names else {}
    return Embeddings(np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64),
                      np.array([f"{name}/{i:05d}" for i in range(len(y))]), meta)


def sklearn_objective(x: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, c: float) -> float:
    """scikit-learn's LogisticRegression objective, written out: C * sum_i CE_i + ||W||^2 / 2, intercept free."""
    z = x.astype(np.float64) @ coef.T.astype(np.float64) + intercept.astype(np.float64)
    cross_entropy = logsumexp(z, axis=1) - z[np.arange(len(y)), y]
    return float(c * cross_entropy.sum() + 0.5 * np.sum(coef.astype(np.float64) ** 2))


def synthetic(n: int, *, seed: int, k: int = 10, d: int = 1280, spread: float = 0.1, offset: float = 0.3,
              centres_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around N(0, spread^2) centres, with a common offset as real (post-ReLU) features have."""
    centres = np.random.default_rng(centres_seed).normal(0.0, spread, (k, d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d)) + offset).astype(np.float32), y


def digits_split(seed: int = 0, random_features: int = 0) -> tuple[Embeddings, Embeddings]:
    """scikit-learn's 8x8 handwritten digits (real data, shipped with it): 1,200 train, 597 test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(seed)
    if random_features:  # a fixed random ReLU layer, to look more like an encoder's output
        projection = rng.normal(size=(64, random_features)) / 8.0
        x = np.maximum(x @ projection + 0.5 * rng.normal(size=random_features), 0.0)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    return embeddings(x[:1200], y[:1200], "train"), embeddings(x[1200:], y[1200:], "test")


# -- parity with scikit-learn -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parity_data():
    x, y = synthetic(900, seed=1)
    x_test, y_test = synthetic(1000, seed=2)
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def sklearn_fits(parity_data):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x, y, _, _ = parity_data
    fits = {}
    # One BLAS/OpenMP thread: the reference is as exact either way, and on a busy 2-core machine it is far faster.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in PARITY_CS:
            fits[c] = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x.astype(np.float64), y)
    return fits


@pytest.mark.parametrize("c", PARITY_CS)
def test_objective_and_accuracy_match_scikit_learn(c, parity_data, sklearn_fits):
    x, y, x_test, y_test = parity_data
    reference = sklearn_fits[c]
    reference_objective = sklearn_objective(x, y, reference.coef_, reference.intercept_, c)
    reference_accuracy = float((reference.predict(x_test) == y_test).mean())

    # float64 and a tight tolerance: the minimum itself must be scikit-learn's.
    coef, intercept, solution = fit_logistic_regression(x, y, c, dtype="float64", tol=1e-7)
    ours = sklearn_objective(x, y, coef, intercept, c)
    assert abs(ours - reference_objective) <= 1e-4 * reference_objective
    assert solution.converged
    # what the solver reports is the same objective (so records are comparable with scikit-learn's)
    assert solution.objective == pytest.approx(ours, rel=1e-6)
    assert solution.objective_scaled == pytest.approx(ours / (c * len(y)), rel=1e-6)
    accuracy = float(((x_test @ coef.T + intercept).argmax(1) == y_test).mean())
    assert abs(accuracy - reference_accuracy) <= 0.005

    # The protocol's own settings (float32, gradient tolerance 1e-4, as scikit-learn's default tol) classify alike.
    coef32, intercept32, solution32 = fit_logistic_regression(x, y, c, dtype="float32", tol=1e-4)
    assert solution32.converged and solution32.iterations <= 1000
    accuracy32 = float(((x_test @ coef32.T + intercept32).argmax(1) == y_test).mean())
    assert abs(accuracy32 - reference_accuracy) <= 0.005
    assert sklearn_objective(x, y, coef32, intercept32, c) >= reference_objective * (1 - 1e-6)


def test_a_fit_that_starts_converged_is_returned_unchanged_without_evaluating():
    """The shortcut in `fit` repeats L-BFGS's first convergence test exactly; so with and without it, same result."""
    from harness.plugins.linear_probe import CentredFeatures, SoftmaxRegression

    x, y = synthetic(400, seed=3, k=5, d=32, spread=0.5)
    problem = SoftmaxRegression(CentredFeatures.from_array(x, device="cpu", dtype="float32"), y)
    start = problem.fit(10.0, None, max_iter=1000, tol=1e-4)
    for c in (10.0, 1e2, 1e5, 0.1):
        quick = problem.fit(c, start, max_iter=1000, tol=1e-4)
        start_without_cache = dataclasses.replace(start, data_term=None)
        full = problem.fit(c, start_without_cache, max_iter=1000, tol=1e-4)
        assert quick.iterations == full.iterations
        assert torch.equal(quick.theta, full.theta)
        assert quick.objective == full.objective and quick.converged and full.converged
        if quick.iterations == 0:
            assert quick.theta is start.theta and quick.function_evaluations == 0
    assert problem.fit(10.0, start, max_iter=1000, tol=1e-4).iterations == 0  # it converged there already
    assert problem.fit(0.1, start, max_iter=1000, tol=1e-4).iterations > 0


def test_grid_is_the_protocols():
    grid = c_grid()
    assert len(grid) == 45
    assert grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    assert np.allclose(np.diff(np.log10(grid)), 0.25)


# -- the C search -------------------------------------------------------------------------------------------------


def test_ties_go_to_the_smaller_c():
    curve = [1, 3, 7, 9, 9, 9, 8, 9, 9, 5, 9]  # the best value (9) first appears at index 3
    for strategy in ("full", "coarse-to-fine"):
        chosen, seen = select_c_index(lambda i: curve[i], len(curve), strategy=strategy, stride=4, refine_margin=1)
        assert chosen == 3, strategy
        assert all(seen[i] == curve[i] for i in seen)


def test_ties_go_to_the_smaller_c_end_to_end():
    """Well-separated classes: validation top-1 reaches 100 % at some C and stays there; that first C wins."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0.0, 3.0, (4, 16))
    y = np.repeat(np.arange(4), 60)
    x = centres[y] + rng.normal(size=(len(y), 16))
    train, test = embeddings(x, y, "train"), embeddings(x[::2], y[::2], "test")
    metrics = LinearProbe(search="full").evaluate(train, test, seed=0, settings=CPU).metrics
    curve = metrics["val_accuracy_per_C"]
    best = max(point["val_top1"] for point in curve)
    assert best == 1.0
    assert sum(point["val_top1"] == best for point in curve) > 10  # many ties
    assert metrics["chosen_C"] == min(point["C"] for point in curve if point["val_top1"] == best)


def test_coarse_to_fine_refines_around_a_peak_between_coarse_points():
    curve = [0, 0, 0, 0, 10, 11, 13, 12, 9] + [5] * 16  # the peak (index 6) is not a coarse point
    chosen, seen = select_c_index(lambda i: curve[i], len(curve), strategy="coarse-to-fine", stride=4,
                                  refine_margin=1)
    assert chosen == 6
    assert len(seen) < len(curve)
    assert coarse_indices(13, 4) == [0, 4, 8, 12] and coarse_indices(45, 4)[-1] == 44
    assert warm_start_index(6, [0, 4, 8, 12]) == 4 and warm_start_index(8, [0, 4, 8, 12]) == 4
    assert warm_start_index(0, [0, 4, 8, 12]) is None


@pytest.mark.parametrize("seed, random_features", [(0, 0), (2, 0), (1, 512)])
def test_coarse_to_fine_picks_the_full_sweeps_c_on_real_data(seed, random_features):
    train, test = digits_split(seed, random_features)
    full = LinearProbe(search="full").evaluate(train, test, seed=seed, settings=CPU).metrics
    fast = LinearProbe().evaluate(train, test, seed=seed, settings=CPU).metrics
    assert fast["search"] == "coarse-to-fine"
    assert fast["chosen_C"] == full["chosen_C"]
    assert fast["top1"] == full["top1"]
    assert fast["Cs_fitted"] < full["Cs_fitted"] == 45
    # both searches compute the same numbers at the C values they share
    full_curve = {point["C"]: point["val_top1"] for point in full["val_accuracy_per_C"]}
    for point in fast["val_accuracy_per_C"]:
        assert point["val_top1"] == full_curve[point["C"]]
    assert full["top1"] > 0.9  # digits are easy for a linear model


# -- reproducibility and the evaluator end to end -----------------------------------------------------------------


def test_same_seed_same_metrics():
    x, y = synthetic(600, seed=5, k=6, d=64, spread=0.4, offset=1.0)
    x_test, y_test = synthetic(300, seed=6, k=6, d=64, spread=0.4, offset=1.0)
    train, test = embeddings(x, y, "train"), embeddings(x_test, y_test, "test")
    first = LinearProbe().evaluate(train, test, seed=7, settings=CPU)
    again = LinearProbe().evaluate(train, test, seed=7, settings=CPU)
    assert first.metrics == again.metrics
    for key in first.predictions:
        assert np.array_equal(first.predictions[key], again.predictions[key])
    other = LinearProbe().evaluate(train, test, seed=8, settings=CPU)
    assert other.metrics["val_accuracy_per_C"] != first.metrics["val_accuracy_per_C"]  # another split


def test_end_to_end_on_memory_mapped_embeddings(tmp_path):
    k = 8
    names = [f"class-{i}" for i in range(k)]
    x, y = synthetic(1600, seed=10, k=k, d=128, spread=0.25, offset=2.0)
    x_test, y_test = synthetic(800, seed=11, k=k, d=128, spread=0.25, offset=2.0)
    # a class with a single train item (it cannot be in the validation split) that the test set also has
    y[y == k - 1] = 0
    y[0] = k - 1
    np.save(tmp_path / "train.npy", x)
    np.save(tmp_path / "test.npy", x_test)
    train = Embeddings(np.load(tmp_path / "train.npy", mmap_mode="r"), y, np.array([f"t{i}" for i in range(len(y))]),
                       {"class_names": names})
    test = Embeddings(np.load(tmp_path / "test.npy", mmap_mode="r"), y_test,
                      np.array([f"q{i}" for i in range(len(y_test))]), {"class_names": names})
    assert not train.features.flags.writeable

    probe = LinearProbe()
    torch.set_float32_matmul_precision("high")  # as an extractor might; the probe computes in full float32
    try:
        result = probe.evaluate(train, test, seed=0, settings=CPU)
        assert torch.get_float32_matmul_precision() == "high"  # and puts the setting back
    finally:
        torch.set_float32_matmul_precision("highest")
    assert probe.name == "linear" and probe.protocol == "linear/logreg-v1" and tuple(probe.needs) == ("train", "test")
    metrics = result.metrics
    json.dumps(metrics, allow_nan=False)  # JSON as written, no NaN

    assert result.main_metric == "top1" and result.main_score == metrics["top1"]
    chance = 1.0 / k
    assert metrics["top1"] > chance + 0.4
    assert metrics["top5"] >= metrics["top1"]
    assert set(metrics["per_class_accuracy"]) == set(names)
    per_class = np.array([metrics["per_class_accuracy"][n] for n in names])
    assert metrics["balanced_accuracy"] == pytest.approx(per_class.mean())
    assert metrics["val_split"] == "stratified"
    assert metrics["val_size"] + metrics["fit_size"] == len(y)
    assert metrics["val_size"] == pytest.approx(0.1 * len(y), abs=1)
    assert metrics["converged"] and metrics["iterations"] <= metrics["max_iter"] == 1000
    assert metrics["tolerance"] == 1e-4 and metrics["val_fraction"] == 0.1
    assert metrics["chosen_C"] in [point["C"] for point in metrics["val_accuracy_per_C"]]

    predictions = result.predictions
    assert list(predictions["ids"]) == list(test.ids)
    assert np.array_equal(predictions["label"], y_test)
    assert predictions["top5"].shape == (len(y_test), 5)
    assert np.array_equal(predictions["top5"][:, 0], predictions["prediction"])
    assert metrics["top1"] == pytest.approx(float((predictions["prediction"] == y_test).mean()))
    assert metrics["top5"] == pytest.approx(float((predictions["top5"] == y_test[:, None]).any(1).mean()))


def test_three_classes_have_no_top5():
    x, y = synthetic(300, seed=12, k=3, d=16, spread=1.0, offset=0.0)
    x_test, y_test = synthetic(150, seed=13, k=3, d=16, spread=1.0, offset=0.0)
    result = LinearProbe().evaluate(embeddings(x, y, "train"), embeddings(x_test, y_test, "test"), seed=0,
                                    settings=CPU)
    assert result.metrics["top5"] is None and "top5" in result.metrics["null_reasons"]
    assert set(result.metrics["per_class_accuracy"]) == {"0", "1", "2"}
    assert (result.predictions["top5"][:, 3:] == -1).all()
    assert result.metrics["top1"] > 0.6
    assert result.predictions["score"].tolist() == (result.predictions["prediction"] == y_test).astype(float).tolist()
    assert result.predictions["score"].mean() == pytest.approx(result.main_score, abs=1e-12)  # the per-item score
    json.dumps(result.metrics, allow_nan=False)


def test_per_item_outputs_cover_the_labelled_test_items_the_accuracy_counts():
    x, y = synthetic(300, seed=12, k=3, d=16, spread=1.0, offset=0.0)
    x_test, y_test = synthetic(150, seed=13, k=3, d=16, spread=1.0, offset=0.0)
    y_test = y_test.copy()
    y_test[::4] = -1  # a quarter of the test items have no label
    result = LinearProbe().evaluate(embeddings(x, y, "train"), embeddings(x_test, y_test, "test"), seed=0,
                                    settings=CPU)
    labelled = y_test >= 0
    assert result.predictions["ids"].tolist() == [f"test/{i:05d}" for i in np.flatnonzero(labelled)]
    assert (result.predictions["label"] >= 0).all()
    correct = result.predictions["prediction"] == y_test[labelled]
    assert result.main_score == pytest.approx(float(correct.mean()), abs=1e-12)
    assert result.predictions["score"].mean() == pytest.approx(result.main_score, abs=1e-12)


def test_options_are_checked():
    with pytest.raises(HarnessError):
        LinearProbe(C=1.0)
    train, test = digits_split(0)
    with pytest.raises(HarnessError):
        LinearProbe(dtype="float16").evaluate(train, test, seed=0, settings=CPU)
    with pytest.raises(HarnessError):
        LinearProbe(search="random").evaluate(train, test, seed=0, settings=CPU)
    assert LinearProbe(max_iter=50).non_default_options == {"max_iter": 50}
    defaults = LinearProbe.default_options()
    assert (defaults["num_c"], defaults["val_fraction"], defaults["max_iter"]) == (45, 0.1, 1000)
    assert math.isclose(10 ** defaults["log10_c_min"], 1e-6) and math.isclose(10 ** defaults["log10_c_max"], 1e5)


def test_registers_as_a_plugin():
    import pluggy

    import harness.plugins.linear_probe
    from harness import hookspecs

    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    pm.register(harness.plugins.linear_probe, name="harness.plugins.linear_probe")
    pm.check_pending()
    registered = []
    pm.hook.register_evaluators(register=lambda *args, **kwargs: registered.append(args))
    assert [(name, factory) for name, factory, _ in registered] == [("linear", LinearProbe)]
    assert "linear/logreg-v1" in registered[0][2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu():
    train, test = digits_split(0, 512)
    cpu = LinearProbe().evaluate(train, test, seed=0, settings=CPU).metrics
    cuda = LinearProbe().evaluate(train, test, seed=0, settings=ExecutionSettings(device="cuda")).metrics
    assert cuda["chosen_C"] == cpu["chosen_C"]
    assert abs(cuda["top1"] - cpu["top1"]) <= 0.005
