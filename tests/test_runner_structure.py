"""The runner split into plan / record builder / run: names still importable from `harness.runner`, one record
builder for finished and failed cells, one line (no traceback) for a HarnessError refusal, the keys computed by a
resumed run passed down to extraction, and the process group joined in one place."""

from __future__ import annotations

import logging

import pytest

import harness.runner as runner
from harness import distributed
from harness.errors import HarnessError
from harness.records import load_records, validate
from harness.runner import RunConfig, run
from harness.types import Evaluator
from harness_test_support.helpers import EvaluatorPlugin


def config(tmp_path, evaluators=("knn",), **kw) -> RunConfig:
    return RunConfig(encoders=["pixels"], datasets=["synthetic"], evaluators=list(evaluators),
                     results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", batch_size=16,
                     progress=False, dataset_options={"classes": 3, "per_class": 8}, **kw)


class RefusingEvaluator(Evaluator):
    name = "refusing"
    protocol = "refusing/v1"

    def evaluate(self, train, test, *, seed, settings):
        raise HarnessError("refusing: these embeddings are too small; pass a larger dataset")


def test_the_runner_still_exports_what_callers_import():
    from harness.plan import RunConfig as PlanRunConfig

    for name in ("RunConfig", "run", "plan_cells", "EncoderSpec", "DatasetSpec", "call_evaluate", "DEFAULT_ENCODERS",
                 "DEFAULT_DATASETS", "RunReport", "CellFailure", "options_for", "spec_label", "encoder_label",
                 "BASELINE_PRETRAINING", "run_seeds"):
        assert hasattr(runner, name), name
    assert runner.RunConfig is PlanRunConfig
    assert RunConfig().results_dir == "results" and RunConfig().cache_dir == ".harness-cache"


def test_a_harness_error_from_an_evaluator_is_one_line_and_its_record_keeps_the_message(tmp_path, harness_plugins,
                                                                                         caplog):
    plugins = harness_plugins(EvaluatorPlugin("refusing", RefusingEvaluator))
    with caplog.at_level(logging.ERROR, logger="harness.runner"):
        report = run(config(tmp_path, evaluators=["refusing", "knn"]), plugins)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert "Traceback" not in caplog.text and "too small; pass a larger dataset" in caplog.text
    [failure] = report.failures
    assert failure.evaluator == "refusing" and "too small" in failure.error
    records = {r["evaluator"]["name"]: r for r in load_records(tmp_path / "results")}
    assert records["refusing"]["status"] == "failed"
    assert records["refusing"]["error"] == "refusing: these embeddings are too small; pass a larger dataset"
    assert records["knn"]["status"] == "ok"  # the other cell of the pair is measured


def test_one_builder_makes_finished_and_failed_records_of_the_same_shape(tmp_path, harness_plugins):
    from harness.plan import PlannedEncoder
    from harness.record_builder import PairRecords

    plugins = harness_plugins()
    encoder, dataset = plugins.encoder("pixels"), plugins.dataset("synthetic", classes=3, per_class=8)
    knn = plugins.evaluator("knn")
    failed = PairRecords.failed_extraction(PlannedEncoder("pixels", encoder), dataset, dataset.info(), "cpu", "cmd")
    record = failed.record(knn, 0, error="extraction failed: disk full")
    validate({**record, "predictions_file": None})  # what write_record adds
    assert record["status"] == "failed" and record["main_score"] is None and record["cache_keys"] == {}
    assert record["encoder"]["baseline"] is True  # pixels: pretraining "none"
    with pytest.raises(ValueError):
        failed.record(knn, 0)  # neither a result nor an error

    class Broken(type(encoder)):
        def info(self):
            raise RuntimeError("cannot describe myself")

    broken = PairRecords.failed_extraction(PlannedEncoder("broken", Broken()), dataset, dataset.info(), "cpu", "c")
    assert broken.encoder["info"]["pretraining"] == "unknown" and broken.encoder["fingerprint"] == {}

    report = run(config(tmp_path), plugins)
    [ok] = report.records
    assert ok["status"] == "ok" and ok["error"] is None
    assert set(ok) - {"_path", "predictions_file", "artifacts"} == set(record)  # the same keys, ok or failed


def test_a_resumed_run_passes_the_keys_it_computed_down_to_extraction(tmp_path, harness_plugins, monkeypatch):
    plugins = harness_plugins()
    run(config(tmp_path, evaluators=["knn"]), plugins)  # the knn cell is done; the linear one is still to do
    seen: list[tuple[str, str | None]] = []
    real_extract = runner.extract

    def extract(encoder, dataset, split, store, options, ranks=None, cache_key=None):
        seen.append((split, cache_key))
        return real_extract(encoder, dataset, split, store, options, ranks, cache_key=cache_key)

    monkeypatch.setattr(runner, "extract", extract)
    report = run(config(tmp_path, evaluators=["knn", "linear"], resume=True), plugins)
    assert len(report.already_done) == 1 and [r["evaluator"]["name"] for r in report.records] == ["linear"]
    assert [split for split, _ in seen] == ["train", "test"]
    assert [key for _, key in seen] == [report.records[0]["cache_keys"][split] for split in ("train", "test")]


def test_without_resume_extraction_fingerprints_for_itself(tmp_path, harness_plugins, monkeypatch):
    seen = []
    real_extract = runner.extract

    def extract(encoder, dataset, split, store, options, ranks=None, cache_key=None):
        seen.append(cache_key)
        return real_extract(encoder, dataset, split, store, options, ranks, cache_key=cache_key)

    monkeypatch.setattr(runner, "extract", extract)
    run(config(tmp_path), harness_plugins())
    assert seen == [None, None]


def test_process_group_is_a_single_process_outside_torchrun(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with distributed.process_group() as ranks:
        assert ranks == distributed.Ranks() and not ranks.distributed


def test_run_under_torchrun_without_the_process_group_says_how_to_join(tmp_path, monkeypatch, harness_plugins):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HarnessError, match=r"process_group\(\)"):
        run(config(tmp_path), harness_plugins())
    assert not (tmp_path / "cache").exists()  # refused before any work
