"""What a run uses when nobody says otherwise, defined once for the CLI, the Python API, suites and the runner."""

from __future__ import annotations

#: The offline default (`harness run` with no arguments): a pretrained net, the raw-pixel and untrained baselines.
DEFAULT_ENCODERS = ("efficientnet_lite0", "pixels", "random:tf_efficientnet_lite0")
DEFAULT_DATASETS = ("cifar10-mini",)
#: The evaluators of a `RunConfig` or `harness.evaluate_model` that names none: the quick one, for a model still
#: training (`harness run` without --eval runs every built-in evaluator but opt-in presets instead).
DEFAULT_EVALUATORS = ("knn",)
#: Where records go and where embeddings are cached, relative to the current directory.
DEFAULT_RESULTS_DIR = "results"
DEFAULT_CACHE_DIR = ".harness-cache"

