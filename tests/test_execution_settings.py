"""Execution settings reach every evaluator, third-party ones included, and `--eval-option` sets any evaluator's
options the way a suite's `[[evaluators]] options` do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from harness import hookimpl
from harness.cli import build_parser, run_config
from harness.errors import HarnessError
from harness.runner import RunConfig, plan_cells, run
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings


class NearestMean(Evaluator):
    """Accuracy of the nearest class mean (Euclidean): a real, tiny evaluator that records what it was given."""

    name = "nearest-mean"
    protocol = "nearest-mean/euclidean-v1"
    seen: list[Any] = []

    def _score(self, train: Embeddings, test: Embeddings) -> float:
        classes = np.unique(train.labels)
        means = np.stack([np.asarray(train.features)[train.labels == c].mean(axis=0) for c in classes])
        distances = ((np.asarray(test.features)[:, None, :] - means[None]) ** 2).sum(axis=2)
        return float((classes[distances.argmin(axis=1)] == test.labels).mean())

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        type(self).seen.append(settings)
        score = self._score(train, test)
        return EvaluationResult({"accuracy": score}, score, "accuracy")


class LegacyNearestMean(NearestMean):
    """The same evaluator written against the pre-0.2 contract: `evaluate(..., device=)`."""

    name = "legacy-nearest-mean"
    protocol = "legacy-nearest-mean/euclidean-v1"
    seen: list[Any] = []

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,  # type: ignore[override]
                 device: str) -> EvaluationResult:
        type(self).seen.append(device)
        score = self._score(train, test)
        return EvaluationResult({"accuracy": score}, score, "accuracy")


class EvaluatorsPlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("nearest-mean", NearestMean, "nearest class mean (test plugin)")
        register("legacy-nearest-mean", LegacyNearestMean, "pre-0.2 evaluate(device=) (test plugin)")


def test_settings_reach_new_and_legacy_evaluators(harness_plugins, tmp_path):
    plugins = harness_plugins(EvaluatorsPlugin())
    NearestMean.seen.clear()
    LegacyNearestMean.seen.clear()
    config = RunConfig(encoders=["pixels"], datasets=["synthetic"], evaluators=["nearest-mean", "legacy-nearest-mean"],
                       results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", progress=False,
                       memory_budget_mb=48, workers=0)
    report = run(config, plugins)
    assert not report.failures, report.failures
    assert NearestMean.seen == [ExecutionSettings(device="cpu", memory_budget_mb=48, workers=0, progress=False)]
    assert NearestMean.seen[0].memory_budget_bytes() == 48 * 2**20
    assert LegacyNearestMean.seen == ["cpu"]
    scores = {r["evaluator"]["name"]: r["main_score"] for r in report.records}
    # Both compute the same thing on the same embeddings; synthetic classes differ in colour, so well above chance.
    assert scores["nearest-mean"] == scores["legacy-nearest-mean"] > 0.5
    # The budget is how, never what: it is in no option set, so the cells are those of a run without it.
    assert plan_cells(config, plugins) == plan_cells(RunConfig(
        encoders=["pixels"], datasets=["synthetic"], evaluators=["nearest-mean", "legacy-nearest-mean"]), plugins)


def _config(harness_plugins, *flags: str) -> RunConfig:
    args = build_parser().parse_args(["run", *flags])
    return run_config(args, harness_plugins())


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("0.5", 0.5), ("true", True), ("pca", "pca"),
                                             ('"two words"', "two words"), ("[1, 2]", "[1, 2]")])
def test_eval_option_values_are_toml_scalars_or_bare_words(text, value):
    from harness.cli.run import _parse_option_value

    assert _parse_option_value(text) == value
    assert type(_parse_option_value(text)) is type(value)


def test_eval_option_sets_options_and_makes_the_cells_of_the_equivalent_suite(harness_plugins, tmp_path):
    config = _config(harness_plugins, "-e", "pixels", "--eval", "knn,clustering", "--eval-option",
                     "clustering.reduce=pca", "--eval-option", "knn.main_k=10", "--memory-budget-mb", "64")
    assert config.evaluator_options == {"clustering": {"reduce": "pca"}, "knn": {"main_k": 10}}
    assert config.memory_budget_mb == 64
    suite = tmp_path / "s.toml"
    suite.write_text('[[encoders]]\nname = "pixels"\n[[datasets]]\nname = "cifar10-mini"\n'
                     '[[evaluators]]\nname = "knn"\noptions = { main_k = 10 }\n'
                     '[[evaluators]]\nname = "clustering"\noptions = { reduce = "pca" }\n')
    from harness.suite import load_suite

    plugins = harness_plugins()
    assert plan_cells(config, plugins) == plan_cells(load_suite(suite, plugins, []).config, plugins)


def test_legacy_clustering_flags_become_eval_options(harness_plugins, caplog):
    config = _config(harness_plugins, "--eval", "clustering", "--reduce", "none", "--cluster-subsample", "300")
    assert config.evaluator_options == {"clustering": {"reduce": "none", "subsample": 300}}
    assert "--eval-option clustering.reduce=none" in caplog.text
    without = _config(harness_plugins, "--eval", "knn", "--reduce", "pca")  # ignored, as before 0.2, with a word
    assert without.evaluator_options == {}
    assert "--reduce is deprecated, and ignored here" in caplog.text


@pytest.mark.parametrize(("flags", "message"), [
    (["--eval-option", "knn"], "write EVALUATOR.OPTION=VALUE"),
    (["--eval-option", "knnn.main_k=10"], "knnn.*Did you mean: knn"),
    (["--eval", "knn", "--eval-option", "clustering.reduce=pca"], "does not use.*add it to --eval"),
    (["--eval", "knn", "--eval-option", "knn.main_kk=3"], "--eval-option for 'knn'.*main_kk"),
])
def test_bad_eval_options_fail_before_any_work(harness_plugins, flags, message):
    with pytest.raises(HarnessError, match=message):
        _config(harness_plugins, *flags)


def test_eval_option_beside_a_suite_is_an_error(harness_plugins, tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('[[encoders]]\nname = "pixels"\n[[datasets]]\nname = "cifar10-mini"\n')
    with pytest.raises(HarnessError, match="--eval-option cannot be combined with --suite"):
        _config(harness_plugins, "--suite", str(suite), "--eval-option", "knn.main_k=10")


