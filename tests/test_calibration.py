"""The linear probe's calibration (issue 12): ECE over 15 equal-width confidence bins, negative log-likelihood and
Brier score, against the formulas written out here and scikit-learn's log_loss, on the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from harness.plugins.linear_probe import LinearProbe
from harness.plugins.linear_probe.calibration import calibration_metrics
from harness.types import ExecutionSettings
from test_linear_probe import embeddings, synthetic


def written_out(probabilities: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, NLL and Brier by their definitions, one item and one bin at a time."""
    confidence = probabilities.max(axis=1)
    correct = classes[probabilities.argmax(axis=1)] == labels
    ece = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        inside = [i for i in range(len(labels)) if (low < confidence[i] <= high) or (b == 0 and confidence[i] == 0)]
        if inside:
            ece += len(inside) / len(labels) * abs(np.mean(correct[inside]) - np.mean(confidence[inside]))
    brier = nll = 0.0
    for i, y in enumerate(labels):
        target = (classes == y).astype(float)
        brier += np.sum((probabilities[i] - target) ** 2) + (0.0 if target.any() else 1.0)
        nll += -np.log(probabilities[i][classes == y][0]) if target.any() else np.inf
    return {"ece": ece, "brier": brier / len(labels), "nll": nll / len(labels)}


def test_calibration_equals_the_formulas_and_scikit_learn():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.5, (400, 6))
    classes = np.array([0, 2, 3, 5, 7, 9])
    labels = classes[rng.integers(0, 6, 400)]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    prediction = classes[probabilities.argmax(1)]
    metrics, confidence = calibration_metrics(torch.as_tensor(logits), classes, labels, prediction)
    expected = written_out(probabilities, classes, labels)
    assert metrics["ece"] == pytest.approx(expected["ece"], abs=1e-12) and metrics["ece"] > 0.01
    assert metrics["brier"] == pytest.approx(expected["brier"], abs=1e-12)
    assert metrics["nll"] == pytest.approx(expected["nll"], abs=1e-12)
    assert metrics["nll"] == pytest.approx(log_loss(labels, probabilities, labels=classes), abs=1e-12)
    np.testing.assert_allclose(confidence, probabilities.max(1), atol=1e-12)


def test_unlabelled_items_are_left_out_and_an_unseen_class_has_no_nll():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.0, (60, 3))
    classes = np.array([0, 1, 2])
    labels = rng.integers(0, 3, 60)
    labels[:10] = -1  # unlabelled
    labels[10:13] = 4  # a class the probe never saw
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics, _ = calibration_metrics(torch.as_tensor(logits), classes, labels, classes[logits.argmax(1)])
    expected = written_out(probabilities[10:], classes, labels[10:])
    assert metrics["ece"] == pytest.approx(expected["ece"], abs=1e-12)
    assert metrics["brier"] == pytest.approx(expected["brier"], abs=1e-12)
    assert metrics["nll"] is None and "3 labelled test item(s)" in metrics["null_reasons"]["nll"]


def test_the_ece_of_a_record_is_recomputed_from_its_predictions():
    x, y = synthetic(300, seed=12, k=4, d=16, spread=1.5, offset=0.0)
    x_test, y_test = synthetic(200, seed=13, k=4, d=16, spread=1.5, offset=0.0)
    result = LinearProbe().evaluate(embeddings(x, y, "train"), embeddings(x_test, y_test, "test"), seed=0,
                                    settings=ExecutionSettings(device="cpu"))
    saved = result.predictions
    bins = np.clip(np.ceil(saved["confidence"] * 15).astype(int) - 1, 0, 14)
    correct = saved["prediction"] == saved["label"]
    ece = sum((bins == b).sum() / len(bins) * abs(correct[bins == b].mean() - saved["confidence"][bins == b].mean())
              for b in range(15) if (bins == b).any())
    assert result.metrics["ece"] == pytest.approx(ece, abs=1e-12)
    assert 0 < result.metrics["nll"] and 0 <= result.metrics["brier"] <= 2
    assert ((saved["confidence"] > 0.25 - 1e-9) & (saved["confidence"] <= 1)).all()  # 4 classes: max p >= 1/4
