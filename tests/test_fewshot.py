"""The few-shot evaluator `fewshot/simpleshot-logreg-v1`: the draws, both classifiers and the summary, recomputed.

Real data throughout: scikit-learn's bundled handwritten digits through a fixed random ReLU layer (as in the linear
probe's tests), with the train and test splits the evaluator gets from the cache. Each number of the record is
recomputed here from the stored support ids by plain numpy (nearest centroid, the draws, the interval) or by
scikit-learn's LogisticRegression (the logistic classifier).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.errors import HarnessError
from harness.plugins.fewshot import PROTOCOL, SUPPORT_IDS, FewShot, support_sets
from harness.types import Embeddings, ExecutionSettings
from test_linear_probe import digits_split, embeddings

CPU = ExecutionSettings(device="cpu", progress=False)
#: Smaller than the protocol's defaults, so the module runs in seconds: three shot counts (1: fixed C, 2 and 5:
#: cross-validation), three draws, a grid of seven C.
OPTIONS = {"shots": [1, 2, 5], "draws": 3, "num_c": 7}


def evaluate(train: Embeddings, test: Embeddings, seed: int = 0, **options):
    return FewShot(**{**OPTIONS, **options}).evaluate(train, test, seed=seed, settings=CPU)


@pytest.fixture(scope="module")
def digits():
    return digits_split(0, random_features=256)


@pytest.fixture(scope="module")
def result(digits):
    return evaluate(*digits)


def supports(result) -> dict[tuple[int, int], np.ndarray]:
    return support_sets({"metrics": result.metrics}, result.artifacts[SUPPORT_IDS])


def draws(result):
    for shots, summary in result.metrics["per_shots"].items():
        for draw in summary["draws"]:
            yield int(shots), draw


def cl2n(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = x - mean
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def support_rows(train: Embeddings, ids: np.ndarray) -> np.ndarray:
    row_of = {item: row for row, item in enumerate(np.asarray(train.ids).tolist())}
    return np.array([row_of[item] for item in ids.tolist()])


# -- the draws ----------------------------------------------------------------------------------------------------


def test_support_sets_hold_train_items_only_shots_per_class(digits, result):
    train, test = digits
    test_ids = set(np.asarray(test.ids).tolist())
    train_labels = np.asarray(train.labels)
    assert sorted(supports(result)) == [(s, d) for s in (1, 2, 5) for d in range(3)]
    for (shots, _), ids in supports(result).items():
        assert not test_ids & set(ids.tolist())
        assert len(set(ids.tolist())) == len(ids)  # without replacement
        labels = train_labels[support_rows(train, ids)]
        assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, shots))


def test_draws_follow_the_documented_seeding(digits, result):
    """Draw d of s shots: for each class in ascending order, the first s of a permutation of its train rows, from
    numpy's default_rng(SeedSequence([seed, s, d])), one generator for all classes of the draw."""
    train, _ = digits
    labels = np.asarray(train.labels)
    for (shots, draw), ids in supports(result).items():
        rng = np.random.default_rng(np.random.SeedSequence([0, shots, draw]))
        expected = []
        for c in range(10):
            rows = np.flatnonzero(labels == c)
            expected.extend(np.asarray(train.ids)[rows[rng.permutation(len(rows))[:shots]]].tolist())
        assert ids.tolist() == expected


def test_same_seed_same_draws_another_seed_other_draws(digits, result):
    again = evaluate(*digits)
    assert {k: v.tolist() for k, v in supports(again).items()} == {k: v.tolist() for k, v in supports(result).items()}
    strip = lambda r: {k: v for k, v in r.metrics.items() if k != "runtime"}  # noqa: E731
    assert strip(again) == strip(result)
    other = supports(evaluate(*digits, seed=1, shots=[5], main_shots=5))
    for draw in range(3):
        assert set(other[5, draw].tolist()) != set(supports(result)[5, draw].tolist())


def test_neither_test_items_nor_train_items_outside_the_support_take_part_in_choosing_c(digits, result):
    """Scramble the test split (features and labels) and every train item outside all support sets: the draws, the
    C chosen and the cross-validation counts stay the same; only the test accuracies change."""
    train, test = digits
    used = np.unique(np.concatenate([support_rows(train, ids) for ids in supports(result).values()]))
    rng = np.random.default_rng(7)
    features = np.array(train.features)
    outside = np.setdiff1d(np.arange(len(features)), used)
    features[outside] = rng.normal(size=(len(outside), features.shape[1]))
    scrambled_train = Embeddings(features, train.labels, train.ids, train.meta)
    scrambled_test = Embeddings(rng.normal(size=test.features.shape).astype(np.float32),
                                rng.permutation(np.asarray(test.labels)), test.ids, test.meta)
    scrambled = evaluate(scrambled_train, scrambled_test)
    keys = ("support", "C", "C_choice", "cv_folds", "cv_correct", "cv_items")
    for (shots, draw), (_, other) in zip(draws(result), draws(scrambled)):
        assert {k: draw[k] for k in keys} == {k: other[k] for k in keys}
    assert scrambled.metrics["logistic_5shot"] < 0.2 < result.metrics["logistic_5shot"]  # the test split did change


def test_cross_validation_choices_are_recorded(result):
    for shots, draw in draws(result):
        if shots == 1:
            assert (draw["C_choice"], draw["C"], draw["cv_correct"]) == ("fixed", 1.0, None)
        else:
            # one fold per shot, each holding out one item of every class
            assert (draw["C_choice"], draw["cv_folds"], draw["cv_items"]) == ("cross-validation", shots, 10 * shots)
            grid = result.metrics["C_grid"]
            best = max(draw["cv_correct"])
            assert draw["C"] == grid[draw["cv_correct"].index(best)]  # the smallest C of the most correct


# -- the classifiers ----------------------------------------------------------------------------------------------


def test_centroid_accuracy_recomputed_from_the_stored_support_ids(digits, result):
    train, test = digits
    x_train = np.asarray(train.features, dtype=np.float64)
    x_test = np.asarray(test.features, dtype=np.float64)
    for (shots, draw_index), ids in supports(result).items():
        rows = support_rows(train, ids)
        mean = x_train[rows].mean(axis=0)
        support, labels = cl2n(x_train[rows], mean), np.asarray(train.labels)[rows]
        centres = np.stack([support[labels == c].mean(axis=0) for c in range(10)])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        predicted = np.argmax(cl2n(x_test, mean) @ centres.T, axis=1)
        accuracy = float(np.mean(predicted == np.asarray(test.labels)))
        recorded = result.metrics["per_shots"][str(shots)]["draws"][draw_index]["centroid_top1"]
        assert recorded == pytest.approx(accuracy, abs=1e-12), (shots, draw_index)


def sklearn_differences(train: Embeddings, test: Embeddings, result) -> list[int]:
    """Per draw, how many more or fewer test items the record's logistic regression got right than scikit-learn's
    LogisticRegression at the draw's C, fitted to a tight tolerance on the same CL2N support features."""
    from sklearn.linear_model import LogisticRegression

    x_train = np.asarray(train.features, dtype=np.float64)
    x_test = np.asarray(test.features, dtype=np.float64)
    differences = []
    for (shots, draw_index), ids in supports(result).items():
        rows = support_rows(train, ids)
        mean = x_train[rows].mean(axis=0)
        draw = result.metrics["per_shots"][str(shots)]["draws"][draw_index]
        model = LogisticRegression(C=draw["C"], tol=1e-10, max_iter=100_000)
        model.fit(cl2n(x_train[rows], mean), np.asarray(train.labels)[rows])
        correct = int(np.sum(model.predict(cl2n(x_test, mean)) == np.asarray(test.labels)))
        differences.append(abs(round(draw["logistic_top1"] * len(test.labels)) - correct))
    return differences


def test_logistic_accuracy_agrees_with_scikit_learn_at_the_same_c(digits, result):
    """Both minimise the same strictly convex objective. At the protocol's tolerance (a gradient of 1e-4) the
    solver stops near the minimiser, not on it: at large C the objective is flat, so that point can sit measurably
    away (docs/protocols.md#linearlogreg-v1), and test items close to a decision boundary can flip. Allowed: 1 % of
    the 597 test items per draw (5 items); measured here: at most 3, on a 5-shot draw at C = 1000, 0 on most draws.
    With the tolerance tightened to 1e-8, both reach the same minimiser and agree on every draw, to the item."""
    train, test = digits
    assert max(sklearn_differences(train, test, result)) <= 0.01 * len(test.labels)
    assert sklearn_differences(train, test, evaluate(train, test, tolerance=1e-8)) == [0] * 9


# -- the summary and the record -------------------------------------------------------------------------------------


def test_means_and_student_t_intervals_over_draws(result):
    for shots, summary in result.metrics["per_shots"].items():
        for classifier in ("centroid", "logistic"):
            values = np.array([draw[f"{classifier}_top1"] for draw in summary["draws"]])
            low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                         scale=values.std(ddof=1) / math.sqrt(len(values)))
            got = summary[classifier]
            assert got["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert result.metrics[f"{classifier}_{shots}shot"] == got["mean"]
            assert got["sd"] == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert (got["ci95_low"], got["ci95_high"]) == pytest.approx((low, high), abs=1e-12)
    assert result.main_metric == "logistic_5shot" and result.main_score == result.metrics["logistic_5shot"]


def test_per_item_score_is_the_main_classifiers_correctness_averaged_over_draws(digits):
    train, test = digits
    result = evaluate(train, test, shots=[2], main_shots=2, main_classifier="centroid")
    x_train = np.asarray(train.features, dtype=np.float64)
    x_test = np.asarray(test.features, dtype=np.float64)
    hits = []
    for ids in supports(result).values():
        rows = support_rows(train, ids)
        mean = x_train[rows].mean(axis=0)
        support, labels = cl2n(x_train[rows], mean), np.asarray(train.labels)[rows]
        centres = np.stack([support[labels == c].mean(axis=0) for c in range(10)])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        hits.append(np.argmax(cl2n(x_test, mean) @ centres.T, axis=1) == np.asarray(test.labels))
    assert np.allclose(result.predictions["score"], np.mean(hits, axis=0), atol=1e-12)
    assert result.predictions["ids"].tolist() == np.asarray(test.ids).tolist()
    assert result.predictions["score"].mean() == pytest.approx(result.main_score, abs=1e-12)
    assert result.main_metric == "centroid_2shot"


def test_one_draw_has_no_interval(digits):
    result = evaluate(*digits, shots=[1], main_shots=1, draws=1)
    summary = result.metrics["per_shots"]["1"]["logistic"]
    assert summary["sd"] is None and summary["ci95_low"] is None
    assert "per_shots.1.logistic.ci95" in result.metrics["null_reasons"]


# -- refusals -----------------------------------------------------------------------------------------------------


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def with_few_threes(digits, keep: int) -> tuple[Embeddings, Embeddings]:
    """Train with only `keep` items of class 3 ('three'), class names given."""
    train, test = digits
    labels = np.asarray(train.labels)
    rows = np.concatenate([np.flatnonzero(labels != 3), np.flatnonzero(labels == 3)[:keep]])
    rows.sort()
    return (embeddings(np.asarray(train.features)[rows], labels[rows], "train", NAMES),
            embeddings(np.asarray(test.features), np.asarray(test.labels), "test", NAMES))


def test_a_class_smaller_than_the_shot_count_is_an_error_naming_it(digits):
    train, test = with_few_threes(digits, keep=4)
    with pytest.raises(HarnessError, match=r"class\(es\) 'three' \(4\).*allow_smaller_classes"):
        evaluate(train, test)


def test_smaller_classes_when_allowed_give_all_their_items(digits):
    train, test = with_few_threes(digits, keep=4)
    result = evaluate(train, test, shots=[5], main_shots=5, allow_smaller_classes=True)
    assert result.metrics["per_shots"]["5"]["smaller_classes"] == {"three": 4}
    labels = np.asarray(train.labels)
    for ids in supports(result).values():
        counts = np.bincount(labels[support_rows(train, ids)], minlength=10)
        assert counts[3] == 4 and (np.delete(counts, 3) == 5).all()


def test_a_subset_split_whose_classes_have_no_train_item_is_an_error_naming_them(digits):
    from harness.eval_splits import with_split_classes

    train, test = with_few_threes(digits, keep=0)
    threes = np.asarray(test.labels) == 3
    only_threes = with_split_classes(embeddings(np.asarray(test.features)[threes], np.asarray(test.labels)[threes],
                                                "test-threes", NAMES), [3])
    splits = {"test": test, "test-threes": only_threes}
    with pytest.raises(HarnessError, match=r"none of the split's classes \[3\] has train items"):
        FewShot(**{**OPTIONS, "allow_smaller_classes": True}).evaluate_splits(train, splits, seed=0, settings=CPU)


def test_fewer_than_two_classes_are_refused(digits):
    train, test = digits
    only = np.asarray(train.labels) == 0
    one_class = embeddings(np.asarray(train.features)[only], np.asarray(train.labels)[only], "train")
    with pytest.raises(HarnessError, match="fewshot: the train split's labelled items belong to 1 class"):
        evaluate(one_class, test)


@pytest.mark.parametrize("options, message", [
    ({"shots": [1, 0]}, "shots=0"),
    ({"shots": [1, 2], "main_shots": 5}, "main_shots=5 must be one of shots"),
    ({"main_classifier": "svm"}, "main_classifier='svm'"),
    ({"draws": 0}, "draws=0"),
    ({"allow_smaller_classes": "yes"}, "allow_smaller_classes"),
    ({"one_shot_C": 0}, "one_shot_C=0"),
    ({"log10_c_min": 3, "log10_c_max": 1}, "log10_c_min=3.0 > log10_c_max=1.0"),
    ({"k": 3}, "has no option"),
])
def test_impossible_options_are_refused_when_the_evaluator_is_built(options, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace("[", r"\[")):
        FewShot(**options)


def test_shots_typed_on_the_command_line():
    from harness.cli.run import _parse_option_value

    assert FewShot(shots=_parse_option_value("[1,5]"), main_shots=5).parsed.shots == (1, 5)
    assert FewShot(shots=_parse_option_value("10,2"), main_shots=2).parsed.shots == (2, 10)
    with pytest.raises(HarnessError, match="shots='one': whole numbers"):
        FewShot(shots="one")


def test_check_dataset_refuses_a_train_split_too_small_for_the_largest_shot_count():
    info = {"class_names": [f"c{i}" for i in range(10)], "split_sizes": {"train": 60, "test": 100}}
    with pytest.raises(HarnessError, match=r"10 shots per class need 100 train items.*fewshot.shots=\[1, 2, 5\]"):
        FewShot().check_dataset(info)
    FewShot(allow_smaller_classes=True).check_dataset(info)
    FewShot(shots=[1, 5], main_shots=5).check_dataset(info)


# -- through the runner: the record, its schema and its files ------------------------------------------------------


def test_record_and_files_through_the_runner(tmp_path, harness_plugins):
    from harness.leaderboard.table import build_leaderboard
    from harness.records import load_records
    from harness.runner import RunConfig, run
    from harness_test_support.helpers import CountingPixels, EncoderPlugin

    plugins = harness_plugins(EncoderPlugin("counting-pixels", CountingPixels))
    config = RunConfig(encoders=["counting-pixels"], datasets=["synthetic"], evaluators=["fewshot"],
                       evaluator_options={"fewshot": {"draws": 2, "num_c": 5}}, results_dir=tmp_path / "results",
                       cache_dir=tmp_path / "cache", device="cpu", progress=False)
    report = run(config, plugins)
    assert not report.failures, report.failures
    [record] = load_records(tmp_path / "results")  # validated against the record schema on the way in
    assert record["evaluator"]["protocol"] == PROTOCOL == "fewshot/simpleshot-logreg-v1"
    folder = next((tmp_path / "results").rglob(record["predictions_file"])).parent
    with np.load(folder / record["artifacts"][SUPPORT_IDS]) as files:
        ids = files[SUPPORT_IDS]
    assert len(support_sets(record, ids)) == 4 * 2 and len(ids) == (1 + 2 + 5 + 10) * 4 * 2
    with np.load(folder / record["predictions_file"]) as predictions:
        assert predictions["score"].mean() == pytest.approx(record["main_score"], abs=1e-9)
    board = build_leaderboard([record])
    assert board.columns == ["synthetic fewshot [draws=2,num_c=5]"]  # like any column with non-default options
    assert board.rows[0]["cells"][board.columns[0]] == [record["main_score"]]


def test_registered_as_a_builtin_of_the_default_run():
    from harness.plugin_manager import Plugins

    plugins = Plugins(entry_points=False)
    entry, _ = plugins.evaluators.resolve("fewshot")
    assert plugins.infos[entry.plugin].builtin and entry.factory is FewShot


def test_every_option_is_documented_in_the_protocol_section():
    from pathlib import Path

    from harness.plugins.fewshot import DEFAULTS

    docs = (Path(__file__).resolve().parents[1] / "docs" / "protocols.md").read_text(encoding="utf-8")
    section = docs.split(f"## `{PROTOCOL}`", 1)[1].split("\n## ", 1)[0]
    assert [name for name in DEFAULTS if f"`{name}`" not in section] == []


def test_memory_budget_and_threads_change_how_not_what(digits, result):
    """A budget that cuts the test split into blocks of a few rows gives the same record; the fits of these small
    supports ran on one torch thread, and the process's setting is back afterwards."""
    import torch

    threads = torch.get_num_threads()
    small = FewShot(**OPTIONS).evaluate(*digits, seed=0, settings=ExecutionSettings(
        device="cpu", progress=False, memory_budget_mb=0.1))
    assert small.metrics["runtime"]["test_block_rows"] < 20 < len(digits[1].labels)
    assert result.metrics["runtime"]["test_block_rows"] >= len(digits[1].labels)  # the default: one block
    strip = lambda r: {k: v for k, v in r.metrics.items() if k != "runtime"}  # noqa: E731
    assert strip(small) == strip(result)
    assert small.metrics["runtime"]["torch_threads"] == 1 and torch.get_num_threads() == threads
