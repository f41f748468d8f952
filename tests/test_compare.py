"""`harness compare`: differences with 95 % intervals, checked against statistics written out in the tests.

The real comparison uses the offline default's EfficientNet-Lite0 against the same weights fed with ImageNet's
mean/std instead of the model's own 0.5/0.5 (a few kNN points apart), which costs one extraction of cifar10-mini
per test session."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.cli import main
from harness.errors import HarnessError
from harness.records import load_records, write_record
from harness.leaderboard.compare import compare_encoders, render_comparison
from harness.plugins.efficientnet_lite0 import EfficientNetLite0
from harness_test_support.records import make_record

IMAGENET_NORM = "efficientnet_lite0[imagenet-mean-std]"


class Lite0ImageNetNorm(EfficientNetLite0):
    """The same weights, normalised with ImageNet's mean/std (a plausible preprocessing mistake)."""

    def __init__(self) -> None:
        super().__init__()
        self.name = IMAGENET_NORM

    def data_config(self):
        return {**super().data_config(), "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="session")
def compare_results(default_run, tmp_path_factory):
    """kNN and linear records of efficientnet_lite0 and its ImageNet-normalised twin, kNN of pixels; one dir."""
    from harness.plugin_manager import Plugins
    from harness.runner import RunConfig, run

    _, _, cache = default_run
    results = tmp_path_factory.mktemp("compare") / "results"
    plugins = Plugins(entry_points=False)
    for encoders, evaluators in ((["efficientnet_lite0", Lite0ImageNetNorm()], ["knn", "linear"]),
                                 (["pixels"], ["knn"])):
        report = run(RunConfig(encoders=encoders, evaluators=evaluators, results_dir=results, cache_dir=cache,
                               device="cpu", progress=False), plugins)
        assert not report.failures
    return results


def independent_paired_bootstrap(new_record, baseline_record, n_boot=20000, seed=12345):
    """Written from the definition: pair items by id, resample items with replacement, the same draw for both."""
    def correct_by_id(record):
        path = Path(record["_path"]).with_name(record["predictions_file"])
        with np.load(path) as data:
            return {str(i): float(p == y) for i, p, y in zip(data["ids"], data["prediction"], data["label"])}

    new, base = correct_by_id(new_record), correct_by_id(baseline_record)
    assert set(new) == set(base)
    items = sorted(new)
    d = np.array([new[i] - base[i] for i in items])
    rng = np.random.default_rng(seed)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)]
    return d.mean(), np.quantile(means, 0.025), np.quantile(means, 0.975)


@pytest.mark.slow  # the real offline default (session fixture `default_run`)
@pytest.mark.parametrize("evaluator", ["knn", "linear"])
def test_interval_matches_an_independent_paired_bootstrap(compare_results, evaluator):
    records = load_records(compare_results)
    rows = compare_encoders(records, "efficientnet_lite0", [IMAGENET_NORM], n_boot=4000)
    row = next(r for r in rows if r.column == f"cifar10-mini {evaluator}")
    mine = {r["encoder"]["name"]: r for r in records if r["evaluator"]["name"] == evaluator}
    new, base = mine["efficientnet_lite0"], mine[IMAGENET_NORM]
    assert row.new_score == pytest.approx(new["main_score"], abs=1e-12)
    assert row.baseline_score == pytest.approx(base["main_score"], abs=1e-12)
    difference, low, high = independent_paired_bootstrap(new, base)
    assert row.difference == pytest.approx(difference, abs=1e-12)
    # Different random streams (the harness: seed 0, 4,000 resamples; here: seed 12345, 20,000), so the endpoints
    # agree up to Monte Carlo error, about 0.001 here; 0.006 is several of those and far below the width (~0.05).
    assert row.low == pytest.approx(low, abs=0.006) and row.high == pytest.approx(high, abs=0.006)
    assert row.n == 500 and row.method == "paired bootstrap, 500 items"
    assert row.verdict == ("within noise" if row.low <= 0 <= row.high else
                           "new better" if row.low > 0 else "new worse")
    if evaluator == "knn":
        assert 0.015 <= abs(row.difference) <= 0.08  # a few points apart: the case comparisons exist for
    # Pairing matters: the interval is narrower than the unpaired one (two independent bootstraps)
    se_unpaired = np.sqrt(new["main_score"] * (1 - new["main_score"]) / 500
                          + base["main_score"] * (1 - base["main_score"]) / 500)
    assert row.high - row.low < 2 * 1.96 * se_unpaired


@pytest.mark.slow  # the real offline default (session fixture `default_run`)
def test_cli_lite0_against_pixels_excludes_zero(compare_results, capsys):
    assert main(["compare", "efficientnet_lite0", "--against", "pixels", IMAGENET_NORM,
                 "--results-dir", str(compare_results), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    pixels = [r for r in rows if r["baseline"] == "pixels"]
    assert [r["column"] for r in pixels] == ["cifar10-mini knn"]  # pixels has no linear record here
    knn = pixels[0]
    assert float(knn["ci_low"]) > 0.3 and float(knn["difference"]) == pytest.approx(0.69 - 0.21, abs=0.02)
    assert knn["verdict"] == "new better"
    assert {r["column"] for r in rows if r["baseline"] == IMAGENET_NORM} == {"cifar10-mini knn", "cifar10-mini linear"}
    assert main(["compare", "efficientnet_lite0", "--against", "pixels", "--results-dir", str(compare_results)]) == 0
    captured = capsys.readouterr()
    assert "new better" in captured.out and "paired bootstrap, 500 items" in captured.out
    assert "paired bootstrap over test items (2000 resamples, seed 0" in captured.err


@pytest.mark.slow  # the real offline default (session fixture `default_run`)
def test_unknown_names_suggest_close_matches(compare_results, capsys):
    assert main(["compare", "efficientnet_lite", "--against", "pixels", "--results-dir", str(compare_results)]) == 2
    assert "did you mean: efficientnet_lite0" in capsys.readouterr().err
    with pytest.raises(HarnessError, match="dataset 'cifar10-min' .*did you mean: cifar10-mini"):
        compare_encoders(load_records(compare_results), "efficientnet_lite0", ["pixels"], datasets=["cifar10-min"])


# -- crafted records ---------------------------------------------------------------------------------------------

def knn_record(tmp_path, encoder, correct, ids=None, seed=0):
    """A schema-valid kNN record whose predictions are right exactly where `correct` is 1 (10 classes)."""
    correct = np.asarray(correct, dtype=bool)
    ids = np.array(ids if ids is not None else [f"test/{i}" for i in range(len(correct))])
    labels = np.array([int(i.split("/")[1]) % 10 for i in ids])  # an item's label goes with its id
    prediction = np.where(correct, labels, (labels + 1) % 10)
    record = make_record(encoder, "set1", "knn", float(correct.mean()), seed=seed)
    top5 = np.stack([prediction, *(((labels + j) % 10) for j in range(2, 6))], axis=1)
    return write_record(tmp_path, record, predictions={"ids": ids, "label": labels, "prediction": prediction,
                                                       "top5": top5})


def test_small_difference_is_marked_within_noise_and_items_are_paired_by_id(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.6
    new = base.copy()
    new[np.flatnonzero(~base)[:3]] = True  # three more items right: +0.0075, well within noise
    knn_record(tmp_path, "new", new)
    # the baseline's predictions stored in another order: pairing must go by id, not by position
    order = rng.permutation(400)
    path = knn_record(tmp_path, "base", base[order], ids=[f"test/{i}" for i in order])
    rows = compare_encoders(load_records(tmp_path), "new", ["base"], n_boot=1000)
    assert len(rows) == 1 and rows[0].difference == pytest.approx(3 / 400)
    assert rows[0].verdict == "within noise" and rows[0].low <= 0 <= rows[0].high
    # positional pairing would see 400 unrelated items and a much wider interval
    assert rows[0].high - rows[0].low < 0.02
    assert path.exists()


def test_top5_metric_uses_the_top5_predictions(tmp_path):
    knn_record(tmp_path, "new", np.ones(50))
    knn_record(tmp_path, "base", np.zeros(50))
    for path in tmp_path.rglob("seed-0.json"):  # make the top-5 metric present, as real kNN records have it
        record = json.loads(path.read_text())
        record["metrics"]["top5_k20"] = 1.0 if "/new/" in str(path) else 0.0
        path.write_text(json.dumps(record))
    row = compare_encoders(load_records(tmp_path), "new", ["base"], metric="top5_k20")[0]
    # base's top-5 never holds the label (labels+1..+5 shifted away); new's top-1 is right
    assert (row.new_score, row.baseline_score, row.low, row.high) == (1.0, 0.0, 1.0, 1.0)


def test_different_test_items_name_both_records(tmp_path):
    knn_record(tmp_path, "new", np.ones(20))
    knn_record(tmp_path, "base", np.ones(20), ids=[f"test/{i}" for i in range(1, 21)])
    with pytest.raises(HarnessError) as error:
        compare_encoders(load_records(tmp_path), "new", ["base"])
    message = str(error.value)
    assert "new/set1/knn" in message and "base/set1/knn" in message and "different test items" in message


def clustering_record(encoder, per_seed_ami):
    metrics = {"labelled": True, "seeds": list(range(len(per_seed_ami))),
               "per_seed": {str(s): {"ward.ami": v, "kmeans.ami": v / 2} for s, v in enumerate(per_seed_ami)},
               "mean": {"ward.ami": float(np.mean(per_seed_ami))}}
    record = make_record(encoder, "set1", "clustering", float(np.mean(per_seed_ami)), metrics=metrics)
    record["main_metric"] = "ward.ami"
    return record


def test_clustering_interval_is_welch_over_seeds(tmp_path):
    new, base = [0.41, 0.37, 0.39], [0.30, 0.35, 0.28]
    write_record(tmp_path, clustering_record("new", new))
    write_record(tmp_path, clustering_record("base", base))
    knn_record(tmp_path, "new", np.ones(30))
    knn_record(tmp_path, "base", np.zeros(30))
    rows = compare_encoders(load_records(tmp_path), "new", ["base"])
    assert [r.column for r in rows] == ["set1 clustering", "set1 knn"]
    row = rows[0]
    reference = stats.ttest_ind(new, base, equal_var=False).confidence_interval(0.95)
    assert row.difference == pytest.approx(np.mean(new) - np.mean(base))
    assert (row.low, row.high) == pytest.approx((reference.low, reference.high), abs=1e-12)
    assert row.method == "Welch t over seeds (3 + 3)" and row.n == 6
    assert row.verdict == ("within noise" if reference.low <= 0 else "new better")
    [other] = compare_encoders(load_records(tmp_path), "new", ["base"], metric="kmeans.ami")  # kNN has none
    assert other.difference == pytest.approx((np.mean(new) - np.mean(base)) / 2)
    with pytest.raises(HarnessError, match="did you mean: ward.ami"):
        compare_encoders(load_records(tmp_path), "new", ["base"], metric="ward.am")


def test_one_seed_gives_no_interval_and_says_why(tmp_path):
    write_record(tmp_path, clustering_record("new", [0.4]))
    write_record(tmp_path, clustering_record("base", [0.3]))
    row = compare_encoders(load_records(tmp_path), "new", ["base"])[0]
    assert row.difference == pytest.approx(0.1) and row.low is None and row.verdict == "no interval"
    assert "one seed" in render_comparison([row])


def test_hostile_names_are_escaped_in_html(tmp_path):
    hostile = "<img src=x onerror=alert(1)>"
    knn_record(tmp_path, hostile, np.ones(30))
    knn_record(tmp_path, "base", np.zeros(30))
    html = render_comparison(compare_encoders(load_records(tmp_path), hostile, ["base"], n_boot=200), "html")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# -- the per-item contract: `score` for any evaluator, label/prediction only for top-1 classifiers ---------------

def retrieval_record(tmp_path, encoder, ap, seed=0, label=None, prediction=None, main_score=None):
    """A plugin evaluator's record: per-query AP in `score` (main score mAP), and columns that happen to be called
    `label` and `prediction` but are not top-1 predictions (a query's class and its first hit's gallery index)."""
    ap = np.asarray(ap, dtype=np.float64)
    record = make_record(encoder, "set1", "retrieval", float(ap.mean()) if main_score is None else main_score,
                         seed=seed, metrics={"map": float(ap.mean()), "recall_at_1": 0.5})
    record["main_metric"] = "map"
    n = len(ap)
    columns = {"ids": np.array([f"q/{i}" for i in range(n)]), "score": ap,
               "label": np.arange(n) % 3 if label is None else label,
               "prediction": np.arange(n) + 100 if prediction is None else prediction}
    return write_record(tmp_path, record, predictions=columns)


def test_a_plugin_score_column_is_bootstrapped_and_label_prediction_do_not_make_it_a_classifier(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.random(300)
    new = np.clip(base + 0.05 + 0.02 * rng.standard_normal(300), 0, 1)
    retrieval_record(tmp_path, "new", new)
    retrieval_record(tmp_path, "base", base)
    [row] = compare_encoders(load_records(tmp_path), "new", ["base"], n_boot=3000)
    assert row.metric == "map" and row.method == "paired bootstrap, 300 items" and row.n == 300
    assert row.new_score == pytest.approx(new.mean(), abs=1e-12)
    assert row.difference == pytest.approx((new - base).mean(), abs=1e-12)
    # the interval of a paired bootstrap of the mean difference: about mean ± 1.96 sd/sqrt(n)
    half = 1.96 * (new - base).std(ddof=1) / np.sqrt(300)
    assert row.low == pytest.approx(row.difference - half, abs=0.3 * half)
    assert row.high == pytest.approx(row.difference + half, abs=0.3 * half)
    assert row.verdict == "new better"
    # a secondary metric has no per-item scores: difference, no interval, and the row says why
    [other] = compare_encoders(load_records(tmp_path), "new", ["base"], metric="recall_at_1")
    assert other.difference == 0.0 and other.low is None
    assert other.note == "no interval: per-item scores are kept for the main metric (map) only"


def test_label_prediction_without_score_that_are_not_top1_give_no_interval_not_a_false_error(tmp_path):
    for encoder, accuracy in (("new", 0.8), ("base", 0.6)):
        record = make_record(encoder, "set1", "oddity", accuracy, metrics={"accuracy": accuracy})
        record["main_metric"] = "accuracy"
        write_record(tmp_path, record, predictions={"ids": np.array([f"x/{i}" for i in range(10)]),
                                                    "label": np.arange(10), "prediction": np.arange(10) % 2})
    [row] = compare_encoders(load_records(tmp_path), "new", ["base"])
    assert row.difference == pytest.approx(0.2) and row.low is None and row.verdict == "no interval"
    assert "no 'score' column" in row.note and "agree on 0.200000 of items, not the recorded accuracy = 0.800000" \
        in row.note and "new/set1/oddity" in row.note


def test_a_score_column_that_does_not_average_to_the_main_score_says_what_differs(tmp_path):
    retrieval_record(tmp_path, "new", np.full(20, 0.5), main_score=0.55)
    retrieval_record(tmp_path, "base", np.full(20, 0.4))
    with pytest.raises(HarnessError) as error:
        compare_encoders(load_records(tmp_path), "new", ["base"])
    message = str(error.value)
    assert "column 'score' of" in message and "seed-0.predictions.npz" in message and "new/set1/retrieval" in message
    assert "mean 0.500000" in message and "map = 0.550000" in message
    assert "another run" not in message.split(";")[0]  # the mismatch first, the possible causes after


def test_old_top1_records_without_score_compare_as_before(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.random(200) < 0.5
    new = base | (rng.random(200) < 0.3)
    knn_record(tmp_path, "new", new)  # label/prediction/top5, no score column: a record of an older harness
    knn_record(tmp_path, "base", base)
    [row] = compare_encoders(load_records(tmp_path), "new", ["base"], n_boot=500)
    assert row.difference == pytest.approx(new.mean() - base.mean()) and row.method == "paired bootstrap, 200 items"
    # and one whose predictions no longer match its score is reported as such, with both values
    path = next(tmp_path.rglob("new/**/seed-0.json"))
    record = json.loads(path.read_text())
    record["main_score"] = record["metrics"]["top1_k20"] = 0.123
    path.write_text(json.dumps(record))
    [row] = compare_encoders(load_records(tmp_path), "new", ["base"], n_boot=500)
    assert row.low is None and f"agree on {new.mean():.6f} of items, not the recorded top1_k20 = 0.123000" in row.note


def test_records_without_their_npz_files_compare_without_an_interval(tmp_path):
    retrieval_record(tmp_path, "new", np.full(20, 0.5))
    retrieval_record(tmp_path, "base", np.full(20, 0.4))
    for npz in tmp_path.rglob("*.npz"):
        npz.unlink()
    [row] = compare_encoders(load_records(tmp_path), "new", ["base"])
    assert row.difference == pytest.approx(0.1) and row.low is None
    assert "is missing (records shared without their .npz files?)" in row.note


def test_each_predictions_file_is_read_once(tmp_path):
    from harness.leaderboard.compare import PredictionsReader

    for encoder in ("new", "base1", "base2", "base3"):
        retrieval_record(tmp_path, encoder, np.linspace(0, 1, 30), seed=0)
        retrieval_record(tmp_path, encoder, np.linspace(0, 1, 30), seed=1)
    reader = PredictionsReader()
    rows = compare_encoders(load_records(tmp_path), "new", ["base1", "base2", "base3"], n_boot=100, read=reader)
    assert len(rows) == 3 and reader.reads == 8  # 4 encoders x 2 seeds; "new"'s files not once per baseline
    compare_encoders(load_records(tmp_path), "base1", ["new"], n_boot=100, read=reader)
    assert reader.reads == 8
