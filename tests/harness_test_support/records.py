"""Result records made by hand, small and valid, for the leaderboard, compare, merge and site tests."""

from __future__ import annotations


def make_record(encoder, dataset, evaluator, score, seed=0, pretraining="supervised", options=None, metrics=None,
                protocol=None):
    protocol = protocol or {"knn": "knn/dino-v1", "clustering": "clustering/umap-v2"}.get(evaluator, f"{evaluator}/v1")
    return {
        "schema_version": 1, "cell": f"{encoder}-{dataset}-{evaluator}-{seed}", "status": "ok", "error": None,
        "encoder": {"name": encoder, "fingerprint": {}, "baseline": pretraining in ("random", "none"),
                    "info": {"architecture": "x", "weights": {}, "pretraining": pretraining}},
        "dataset": {"name": dataset, "fingerprint": {}, "split_sizes": {"test": 10}},
        "evaluator": {"name": evaluator, "protocol": protocol, "options": options or {},
                      "non_default_options": options or {}},
        "seed": seed, "metrics": metrics or {"top1_k20": score}, "main_metric": "top1_k20", "main_score": score,
        "predictions_file": None, "cache_keys": {}, "timings": {}, "device": "cpu", "precision": "fp32",
        "versions": {"harness": "0", "python": "3", "torch": "2"}, "date": "2026-11-27", "command": "harness run",
    }
