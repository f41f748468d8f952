"""Evaluation splits besides `test` (`harness.eval_splits`): an image folder with train/, test/ and test-shifted/
(mirrored greyscale copies of two of the four classes), built from real cifar10-mini images and encoded with the
`pixels` encoder. Every number is checked against numpy written out here, on the embeddings the run cached."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image, ImageOps

import harness
from harness import hookimpl
from harness.errors import HarnessError
from harness.eval_splits import check_evaluation_splits, evaluation_splits, split_classes, with_split_classes
from harness.extract import ExtractionOptions, extract
from harness.leaderboard.compare import compare_encoders
from harness.leaderboard.table import build_leaderboard
from harness.plugin_manager import Plugins
from harness.plugins.knn import KNN
from harness.plugins.linear_probe import LinearProbe
from harness.plugins.pixels import Pixels
from harness.records import load_predictions, load_records
from harness.runner import RunConfig, run
from harness.store import EmbeddingStore
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings

CLASSES = 4  # the first four cifar10-mini classes
SHIFTED = ["automobile", "cat"]  # the classes test-shifted/ holds (indices 1 and 3)
#: A short C grid: the default 45-C search on 3,072 pixel features takes a minute here, and the subset scoring
#: does not depend on how C was chosen.
PROBE = {"log10_c_min": -3.0, "log10_c_max": -1.0, "num_c": 3, "search": "full"}


def build_folder(root: Path, *, shifted_classes: list[str] | None = None) -> Path:
    """train/ (15 per class) and test/ (8 per class) copied from cifar10-mini; test-shifted/ holds mirrored
    greyscale copies of the test images of `shifted_classes` (none: no test-shifted/)."""
    source = Path(harness.dataset_path("cifar10-mini"))
    names = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())[:CLASSES]
    for split, count in (("train", 15), ("test", 8)):
        for name in names:
            (root / split / name).mkdir(parents=True)
            for image in sorted((source / split / name).iterdir())[:count]:
                shutil.copy(image, root / split / name / image.name)
    for name in shifted_classes or []:
        (root / "test-shifted" / name).mkdir(parents=True)
        for image in sorted((source / "test" / name).iterdir())[:8]:
            with Image.open(image) as opened:
                ImageOps.mirror(ImageOps.grayscale(opened)).save(root / "test-shifted" / name / f"{image.stem}.png")
    return root


class SeesTrain(Evaluator):
    """A third-party evaluator with only `evaluate`: reports which train items it was given; with
    `fail_on_subset`, it fails on a split holding a class subset (and only there)."""

    name = "sees-train"
    protocol = "sees-train/v1"

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"fail_on_subset": False}

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        assert train is not None
        if self.options["fail_on_subset"] and "split_classes" in test.meta:
            raise HarnessError("sees-train: refuses class subsets")
        return EvaluationResult(metrics={"n_train": len(train.labels), "train_classes": np.unique(train.labels)},
                                main_score=float(len(test.labels)), main_metric="n_test")


class TestPlugin:
    @hookimpl
    def register_evaluators(self, register: Callable[..., None]) -> None:
        register("sees-train", SeesTrain, "what train it was given")


class HalfPixels(Pixels):
    """A second cheap encoder for `compare`: every other pixel of every other row."""

    name = "pixels-half"

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "every": 2}

    def encode(self, batch: Any) -> Any:
        return batch[:, :, ::2, ::2].flatten(start_dim=1)


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory):
    """kNN, the linear probe and `sees-train` on the folder, with two encoders; the probe's fits counted."""
    root = build_folder(tmp_path_factory.mktemp("folder"), shifted_classes=SHIFTED)
    results = tmp_path_factory.mktemp("results")
    cache = tmp_path_factory.mktemp("cache")
    fits: list[int] = []
    original = LinearProbe.fit

    def counted(self, *args, **kwargs):
        fits.append(1)
        return original(self, *args, **kwargs)

    plugins = Plugins(entry_points=False, extra=[("splits-test", TestPlugin())])
    config = RunConfig(encoders=["pixels", HalfPixels()], datasets=[f"imagefolder:{root}"],
                       evaluators=["knn", "linear", "sees-train"], evaluator_options={"linear": PROBE},
                       results_dir=results, cache_dir=cache, device="cpu", progress=False, command="test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LinearProbe, "fit", counted)
        report = run(config, plugins)
    assert not report.failures, report.failures
    return {"root": root, "results": results, "cache": cache, "report": report, "fits": fits, "config": config,
            "plugins": plugins}


def records_of(report, encoder: str, evaluator: str) -> dict[str, dict[str, Any]]:
    """The records of one encoder and evaluator, by split."""
    return {r.get("split", "test"): r for r in report.records
            if r["encoder"]["name"] == encoder and r["evaluator"]["name"] == evaluator}


def cached(shifted_run, split: str) -> Embeddings:
    """The pixels embeddings of one split, as the run cached them (a cache hit: nothing is encoded)."""
    dataset = shifted_run["plugins"].dataset(f"imagefolder:{shifted_run['root']}")
    embeddings, report = extract(Pixels(), dataset, split, EmbeddingStore(shifted_run["cache"]),
                                 ExtractionOptions(device="cpu", progress=False))
    assert report.cache_hit
    return embeddings


def test_imagefolder_offers_the_extra_folder_as_an_evaluation_split(tmp_path):
    root = build_folder(tmp_path / "data", shifted_classes=SHIFTED)
    dataset = Plugins(entry_points=False).dataset(f"imagefolder:{root}")
    info = dataset.info()
    assert info["evaluation_splits"] == ["test", "test-shifted"]
    assert info["split_classes"] == {"test-shifted": SHIFTED}
    assert info["split_sizes"]["test-shifted"] == 16
    assert split_classes(dataset.name, info, "test-shifted") == [1, 3]
    assert split_classes(dataset.name, info, "test") is None
    split = dataset.split("test-shifted")
    # labels are train's class indices, by the folder each image lies in
    assert sorted({split[i][1] for i in range(len(split))}) == [1, 3]
    assert all(info["class_names"][split[i][1]] == split.item_id(i).split("/")[1] for i in range(len(split)))
    plain = Plugins(entry_points=False).dataset(f"imagefolder:{build_folder(tmp_path / 'plain')}").info()
    assert "evaluation_splits" not in plain and "split_classes" not in plain
    assert evaluation_splits("plain", plain) == ["test"]


def test_each_split_is_its_own_leaderboard_column(shifted_run):
    report = shifted_run["report"]
    assert len(report.records) == 2 * 3 * 2  # encoders x evaluators x splits
    shifted = [r for r in report.records if r.get("split") == "test-shifted"]
    assert len(shifted) == 6 and all(r["split_classes"] == SHIFTED for r in shifted)
    assert all("split" not in r and "split_classes" not in r for r in report.records if r not in shifted)
    assert all(Path(r["_path"]).parent.name == "test-shifted" for r in shifted)
    assert len({r["cell"] for r in report.records}) == 12
    board = build_leaderboard(load_records(shifted_run["results"]))
    dataset = report.records[0]["dataset"]["name"]
    assert f"{dataset} [test-shifted] knn" in board.columns and f"{dataset} knn" in board.columns
    assert len(board.columns) == 6
    assert all("[test-shifted]" in column for column in board.columns[3:])  # the test columns first
    row = next(r for r in board.rows if r["encoder"] == "pixels")
    knn = records_of(report, "pixels", "knn")
    assert row["cells"][f"{dataset} [test-shifted] knn"] == [knn["test-shifted"]["main_score"]]
    assert row["cells"][f"{dataset} knn"] == [knn["test"]["main_score"]]


def test_the_site_shows_each_split_with_its_own_provenance(shifted_run, tmp_path):
    from harness.leaderboard.site import publish

    page = publish(load_records(shifted_run["results"]), tmp_path / "site").read_text(encoding="utf-8")
    dataset = shifted_run["report"].records[0]["dataset"]["name"]
    score = records_of(shifted_run["report"], "pixels", "knn")["test-shifted"]["main_score"]
    assert f"{dataset} [test-shifted] knn" in page
    assert f"{score:.3f}" in page


def test_a_generic_evaluator_gets_the_train_items_of_the_subset_only(shifted_run):
    seen = records_of(shifted_run["report"], "pixels", "sees-train")
    assert seen["test"]["metrics"]["n_train"] == 60 and seen["test"]["metrics"]["train_classes"] == [0, 1, 2, 3]
    assert seen["test-shifted"]["metrics"]["n_train"] == 30
    assert seen["test-shifted"]["metrics"]["train_classes"] == [1, 3]
    assert seen["test-shifted"]["main_score"] == 16


def knn_predictions(train: Embeddings, test: Embeddings, k: int = 20, temperature: float = 0.07) -> np.ndarray:
    """DINO's weighted kNN written out in numpy: cosine similarity, the k nearest (ties to the lower train row)
    vote exp(sim / T) for their class; ties between classes to the lower class."""
    x = np.asarray(train.features, dtype=np.float64)
    q = np.asarray(test.features, dtype=np.float64)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(q), int(train.labels.max()) + 1))
    for row in range(len(q)):
        np.add.at(votes[row], train.labels[nearest[row]], np.exp(sims[row, nearest[row]] / temperature))
    return votes.argmax(axis=1)


def test_knn_on_the_subset_uses_the_train_items_of_its_classes_only(shifted_run):
    train, shifted = cached(shifted_run, "train"), cached(shifted_run, "test-shifted")
    record = records_of(shifted_run["report"], "pixels", "knn")["test-shifted"]
    saved = load_predictions(record)
    assert saved["ids"].tolist() == shifted.ids.tolist()
    of_subset = np.isin(train.labels, [1, 3])
    bank = Embeddings(train.features[of_subset], train.labels[of_subset], train.ids[of_subset])
    expected = knn_predictions(bank, shifted)
    np.testing.assert_array_equal(saved["prediction"], expected)
    assert record["main_score"] == pytest.approx(np.mean(expected == shifted.labels))
    assert record["metrics"]["n_train"] == 30
    # Only the split's classes are ranked: the top-5 holds the two of them, the better first.
    assert np.array_equal(np.sort(saved["top5"], axis=1), np.tile([1, 3], (16, 1)))
    assert record["metrics"]["top5_k20"] == 1.0
    # The evaluator alone, given all of train, limits its bank the same way.
    alone = KNN().evaluate(train, with_split_classes(shifted, [1, 3]), seed=0,
                           settings=ExecutionSettings(device="cpu", progress=False))
    np.testing.assert_array_equal(alone.predictions["prediction"], expected)
    # The whole bank would predict classes the split does not hold: the restriction is what the test checks.
    assert not np.isin(knn_predictions(train, shifted), [1, 3]).all()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_linear_probe_is_fitted_once_and_scores_the_subset_over_its_classes(shifted_run):
    assert len(shifted_run["fits"]) == 2  # once per encoder, for both splits
    train = cached(shifted_run, "train")
    records = records_of(shifted_run["report"], "pixels", "linear")
    # The same fit again (same data, options and seed): its raw-coordinate weights give the logits in numpy.
    fitted = LinearProbe(**PROBE).fit(train, seed=0, settings=ExecutionSettings(device="cpu", progress=False))
    assert fitted.metrics["chosen_C"] == records["test"]["metrics"]["chosen_C"]
    assert records["test-shifted"]["metrics"]["chosen_C"] == records["test"]["metrics"]["chosen_C"]
    for split, columns in (("test", [0, 1, 2, 3]), ("test-shifted", [1, 3])):
        embeddings = cached(shifted_run, split)
        logits = np.asarray(embeddings.features, dtype=np.float64) @ fitted.coef.T + fitted.intercept
        kept = logits[:, columns]
        expected = np.asarray(columns)[kept.argmax(axis=1)]
        saved = load_predictions(records[split])
        np.testing.assert_array_equal(saved["prediction"], expected)
        assert records[split]["main_score"] == pytest.approx(np.mean(expected == embeddings.labels))
        probabilities = softmax(kept)
        np.testing.assert_allclose(saved["confidence"], probabilities.max(axis=1), atol=1e-5)
        true = probabilities[np.arange(len(expected)), np.searchsorted(columns, embeddings.labels)]
        assert records[split]["metrics"]["nll"] == pytest.approx(-np.mean(np.log(true)), rel=1e-4)
    assert records["test-shifted"]["metrics"]["classes_scored"] == 2
    assert records["test-shifted"]["metrics"]["top5"] is None  # two classes: no top-5
    # Over all four classes some mirrored items are predicted as a class the split does not hold.
    shifted = cached(shifted_run, "test-shifted")
    full = (np.asarray(shifted.features, dtype=np.float64) @ fitted.coef.T + fitted.intercept).argmax(axis=1)
    assert not np.isin(full, [1, 3]).all()


def test_compare_pairs_records_of_the_same_split(shifted_run):
    rows = compare_encoders(load_records(shifted_run["results"]), "pixels-half", ["pixels"], n_boot=200)
    knn = {row.column: row for row in rows if row.column.endswith(" knn")}
    dataset = shifted_run["report"].records[0]["dataset"]["name"]
    assert set(knn) == {f"{dataset} knn", f"{dataset} [test-shifted] knn"}
    assert knn[f"{dataset} [test-shifted] knn"].n == 16 and knn[f"{dataset} knn"].n == 32
    mine = records_of(shifted_run["report"], "pixels-half", "knn")["test-shifted"]["main_score"]
    theirs = records_of(shifted_run["report"], "pixels", "knn")["test-shifted"]["main_score"]
    assert knn[f"{dataset} [test-shifted] knn"].difference == pytest.approx(mine - theirs)


def test_a_resumed_run_finds_every_split_done(shifted_run):
    again = run(RunConfig(**{**shifted_run["config"].__dict__, "resume": True}), shifted_run["plugins"])
    assert again.records == [] and again.extractions == []
    assert len(again.already_done) == 12


def test_a_failure_on_one_split_fails_that_cell_only(shifted_run, tmp_path):
    config = RunConfig(encoders=["pixels"], datasets=[f"imagefolder:{shifted_run['root']}"],
                       evaluators=["sees-train"], evaluator_options={"sees-train": {"fail_on_subset": True}},
                       results_dir=tmp_path / "results", cache_dir=shifted_run["cache"], device="cpu",
                       progress=False)
    report = run(config, shifted_run["plugins"])
    assert [r.get("split", "test") for r in report.records] == ["test"]
    assert len(report.failures) == 1 and "[test-shifted]" in report.failures[0].error
    failed = [r for r in load_records(tmp_path / "results") if r["status"] == "failed"]
    assert [(r["split"], r["split_classes"]) for r in failed] == [("test-shifted", SHIFTED)]
    assert "refuses class subsets" in failed[0]["error"]


def test_a_class_that_train_lacks_is_an_error_naming_it(tmp_path):
    root = build_folder(tmp_path / "data", shifted_classes=SHIFTED)
    (root / "test-shifted" / "zebra").mkdir()
    shutil.copy(next((root / "test-shifted" / "cat").iterdir()), root / "test-shifted" / "zebra" / "z.png")
    config = RunConfig(encoders=["pixels"], datasets=[f"imagefolder:{root}"], evaluators=["knn"],
                       results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", progress=False)
    with pytest.raises(HarnessError, match=r"test-shifted.*\['zebra'\].*train/ lacks"):
        run(config, Plugins(entry_points=False))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    # A plugin dataset's info() naming such a class: the same refusal, before anything is extracted.
    info = {"class_names": ["cat", "dog"], "splits": ["train", "test", "test-r"],
            "evaluation_splits": ["test", "test-r"], "split_classes": {"test-r": ["cat", "zebra"]}}
    with pytest.raises(HarnessError, match=r"split 'test-r' has class\(es\) \['zebra'\] that train does not have"):
        check_evaluation_splits("plugin-set", info)
    with pytest.raises(HarnessError, match=r"evaluation split\(s\) \['test-x'\]"):
        check_evaluation_splits("plugin-set", {**info, "evaluation_splits": ["test", "test-x"], "split_classes": {}})


def test_single_split_runs_keep_their_cell_keys_and_paths(tmp_path, shifted_run):
    root = build_folder(tmp_path / "plain")
    report = run(RunConfig(encoders=["pixels"], datasets=[f"imagefolder:{root}"], evaluators=["knn"],
                           results_dir=tmp_path / "results", cache_dir=shifted_run["cache"], device="cpu",
                           progress=False), Plugins(entry_points=False))
    (record,) = report.records
    # The cell key as it was computed before evaluation splits existed, written out.
    payload = [record["encoder"]["name"], record["dataset"]["name"], "knn", "knn/dino-v1",
               record["evaluator"]["options"], 0]
    old_key = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert record["cell"] == old_key
    assert "split" not in record and "split_classes" not in record
    assert Path(record["_path"]).relative_to(tmp_path / "results").parts[2:] == ("knn", "knn-dino-v1", "seed-0.json")


# -- the few-shot evaluator: one draw and fit per (shots, draw) for every split ------------------------------------

#: Small enough for seconds on 3,072 pixel features: 1 shot (fixed C) and 2 and 5 (cross-validated), two draws.
FEWSHOT = {"shots": [1, 2, 5], "draws": 2, "num_c": 3}


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory):
    """`fewshot` with `pixels` on the folder; every support drawn, C chosen and logistic fit counted."""
    from harness.plugins.fewshot import evaluator as fewshot_evaluator, logistic

    root = build_folder(tmp_path_factory.mktemp("fewshot-folder"), shifted_classes=SHIFTED)
    cache = tmp_path_factory.mktemp("fewshot-cache")
    calls: dict[str, list[Any]] = {"draw": [], "choose_c": [], "fit": []}

    def counting(name: str, original: Callable[..., Any], key: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args, **kwargs):
            calls[name].append(key(*args))
            return original(*args, **kwargs)
        return counted

    plugins = Plugins(entry_points=False)
    config = RunConfig(encoders=["pixels"], datasets=[f"imagefolder:{root}"], evaluators=["fewshot"],
                       evaluator_options={"fewshot": FEWSHOT}, results_dir=tmp_path_factory.mktemp("fewshot"),
                       cache_dir=cache, device="cpu", progress=False, command="test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fewshot_evaluator, "draw_support", counting(
            "draw", fewshot_evaluator.draw_support, lambda rows, shots, seed, draw: (shots, draw)))
        patch.setattr(logistic, "choose_c", counting("choose_c", logistic.choose_c, lambda x, *rest: len(x)))
        patch.setattr(logistic, "fit", counting("fit", logistic.fit, lambda x, *rest: len(x)))
        report = run(config, plugins)
    assert not report.failures, report.failures
    return {"root": root, "cache": cache, "report": report, "calls": calls, "plugins": plugins}


def support_ids_of(record: dict[str, Any]) -> np.ndarray:
    from harness.plugins.fewshot import SUPPORT_IDS

    with np.load(Path(record["_path"]).with_name(record["artifacts"][SUPPORT_IDS])) as files:
        return files[SUPPORT_IDS]


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_fewshot_draws_and_fits_once_for_every_split(fewshot_run):
    from harness.plugins.fewshot import support_sets

    records = records_of(fewshot_run["report"], "pixels", "fewshot")
    assert set(records) == {"test", "test-shifted"}
    # One draw, one C choice and one fit per (shot count, draw), all four classes in each: none per split.
    calls = fewshot_run["calls"]
    assert calls["draw"] == [(shots, draw) for shots in (1, 2, 5) for draw in range(2)]
    assert calls["choose_c"] == calls["fit"] == [4 * shots for shots in (1, 2, 5) for draw in range(2)]
    ids = {split: support_ids_of(record) for split, record in records.items()}
    np.testing.assert_array_equal(ids["test"], ids["test-shifted"])
    test_sets, shifted_sets = (support_sets(records[s], ids[s]) for s in ("test", "test-shifted"))
    assert test_sets.keys() == shifted_sets.keys() and len(test_sets) == 6
    assert all(np.array_equal(test_sets[key], shifted_sets[key]) for key in test_sets)
    shifted = records["test-shifted"]
    assert shifted["split"] == "test-shifted" and shifted["split_classes"] == SHIFTED
    assert shifted["metrics"]["classes_scored"] == 2 and shifted["metrics"]["classes_in_support"] == 4
    assert shifted["metrics"]["test_size"] == 16
    assert "classes_scored" not in records["test"]["metrics"] and "split" not in records["test"]
    for shots in ("1", "2", "5"):  # the same fits: the same C in both records
        assert ([d["C"] for d in shifted["metrics"]["per_shots"][shots]["draws"]]
                == [d["C"] for d in records["test"]["metrics"]["per_shots"][shots]["draws"]])


def test_fewshot_scores_the_subset_over_its_classes_means_and_logits(fewshot_run):
    """Each draw's centroid accuracy on test-shifted, recomputed from the stored support ids with the means of
    classes 1 and 3 only; the logistic logits of the same draw limited to those columns the same way."""
    from harness.plugins.fewshot import logistic, support_sets

    train, shifted = cached(fewshot_run, "train"), cached(fewshot_run, "test-shifted")
    record = records_of(fewshot_run["report"], "pixels", "fewshot")["test-shifted"]
    x_train, x_test = np.asarray(train.features, dtype=np.float64), np.asarray(shifted.features, dtype=np.float64)
    row_of = {item: row for row, item in enumerate(train.ids.tolist())}
    subset = np.array([1, 3])
    changed = 0
    for (shots, draw), ids in support_sets(record, support_ids_of(record)).items():
        rows = np.array([row_of[item] for item in ids.tolist()])
        mean = x_train[rows].mean(axis=0)
        support, labels = unit_rows(x_train[rows] - mean), train.labels[rows]
        assert sorted(set(labels.tolist())) == [0, 1, 2, 3]  # drawn from every train class
        centres = unit_rows(np.stack([support[labels == c].mean(axis=0) for c in range(4)]))
        similarity = unit_rows(x_test - mean) @ centres.T
        predicted = subset[similarity[:, subset].argmax(axis=1)]
        entry = record["metrics"]["per_shots"][str(shots)]["draws"][draw]
        assert entry["centroid_top1"] == pytest.approx(np.mean(predicted == shifted.labels), abs=1e-12)
        changed += int(np.sum(similarity.argmax(axis=1) != predicted))
        # The logistic regression refitted on the stored support at the recorded C, its logits written out here.
        model = logistic.fit(support, labels, entry["C"], device="cpu", max_iter=1000, tol=1e-4)
        logits = unit_rows(x_test - mean) @ model.coef.T + model.intercept
        logistic_predicted = subset[logits[:, subset].argmax(axis=1)]
        assert entry["logistic_top1"] == pytest.approx(np.mean(logistic_predicted == shifted.labels), abs=1e-12)
    # Over all four class means some mirrored items go to a class the split does not hold: the restriction matters.
    assert changed > 0


def test_fewshot_test_record_is_what_evaluate_alone_gives(fewshot_run):
    from harness.plugins.fewshot import FewShot

    record = records_of(fewshot_run["report"], "pixels", "fewshot")["test"]
    alone = FewShot(**FEWSHOT).evaluate(cached(fewshot_run, "train"), cached(fewshot_run, "test"), seed=0,
                                        settings=ExecutionSettings(device="cpu", progress=False))
    assert alone.main_score == record["main_score"]
    for shots, summary in alone.metrics["per_shots"].items():
        assert ([(d["centroid_top1"], d["logistic_top1"], d["C"]) for d in summary["draws"]]
                == [(d["centroid_top1"], d["logistic_top1"], d["C"])
                    for d in record["metrics"]["per_shots"][shots]["draws"]])
