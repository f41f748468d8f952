"""How well the linear probe's probabilities match its accuracy on test: expected calibration error (15 equal-width
confidence bins), negative log-likelihood and Brier score, over the labelled test items.

The probabilities are the softmax of the probe's logits over the classes it was trained on. A test label the probe
never saw has probability 0: its negative log-likelihood is infinite (the metric is then None, with the reason),
and it adds 1 to that item's Brier score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from harness.metric_names import NULL_REASONS

if TYPE_CHECKING:
    import torch

ECE_BINS = 15
_ROWS = 8192  # rows of logits turned into float64 probabilities at a time


def confidence_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence: bin b holds (b/bins, (b+1)/bins], bin 0 also 0."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / n) |accuracy_b − mean confidence_b| over equal-width confidence bins (Guo et al., 2017)."""
    which = confidence_bins(confidence, bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return float(np.abs(correct_sum - confidence_sum).sum() / len(confidence))


def calibration_metrics(logits: torch.Tensor, classes: np.ndarray, labels: np.ndarray,
                        prediction: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """(metrics, confidence of the predicted class for every test item). `logits` (N, K) has its columns in
    `classes` order; `labels` is -1 for an unlabelled item, which the metrics leave out."""
    import torch

    column = {int(c): j for j, c in enumerate(classes)}
    true_column = np.array([column.get(int(y), -1) for y in labels], dtype=np.int64)
    confidence = np.empty(len(labels), dtype=np.float64)
    true_log_p = np.full(len(labels), -np.inf)
    squares = np.empty(len(labels), dtype=np.float64)
    for start in range(0, len(labels), _ROWS):
        rows = slice(start, start + _ROWS)
        log_p = torch.log_softmax(logits[rows].double(), dim=1)
        p = log_p.exp()
        confidence[rows] = p.max(dim=1).values.cpu().numpy()
        squares[rows] = (p * p).sum(dim=1).cpu().numpy()
        cols = true_column[rows]
        seen = np.flatnonzero(cols >= 0)
        if len(seen):
            picked = log_p[torch.as_tensor(seen, device=log_p.device), torch.as_tensor(cols[seen], device=log_p.device)]
            true_log_p[start + seen] = picked.cpu().numpy()
    known = labels >= 0
    p_true = np.exp(true_log_p[known])  # 0 for a class the probe never saw
    metrics: dict[str, Any] = {
        "ece": expected_calibration_error(confidence[known], prediction[known] == labels[known]),
        "ece_bins": ECE_BINS,
        # Σ_k (p_k − 1[k = y])² = Σ_k p_k² − 2 p_y + 1
        "brier": float(np.mean(squares[known] - 2 * p_true + 1)),
    }
    unseen = int((true_column[known] < 0).sum())
    if unseen:
        metrics["nll"] = None
        metrics[NULL_REASONS] = {"nll": f"{unseen} labelled test item(s) of classes the probe was not trained on "
                                        f"(probability 0)"}
    else:
        metrics["nll"] = float(-np.mean(true_log_p[known]))
    return metrics, confidence
