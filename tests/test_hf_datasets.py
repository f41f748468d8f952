"""`hfds:` datasets (harness.plugins.hf_datasets) on real cifar10-mini images written by `datasets` itself:
saved with `save_to_disk` and as parquet files, each compared item by item with the same files through
`imagefolder:`. All offline: the hub path is exercised up to its offline error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from harness.errors import BadItemError, HarnessError  # noqa: E402
from harness.extract import ExtractionOptions, extract  # noqa: E402
from harness.plugin_manager import Plugins  # noqa: E402
from harness.plugins.cifar10_mini import ROOT as CIFAR10_MINI  # noqa: E402
from harness.plugins.hf_datasets import INSTALL_HINT, hfds  # noqa: E402
from harness.plugins.pixels import Pixels  # noqa: E402
from harness.store import EmbeddingStore  # noqa: E402

CLASSES = sorted(p.name for p in (CIFAR10_MINI / "train").iterdir() if p.is_dir())
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                              "file": datasets.Value("string")})


def cifar_split(split: str, order: np.ndarray | None = None) -> datasets.Dataset:
    """The split's images as a Dataset (image bytes embedded, class label, the file's imagefolder id), its rows in
    `order` (a permutation of imagefolder's order) so that ids are matched through `file`, never by position."""
    files = sorted((CIFAR10_MINI / split).glob("*/*.jpg"))
    if order is not None:
        files = [files[i] for i in order]
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": f.read_bytes(), "path": None} for f in files],
         "label": [CLASSES.index(f.parent.name) for f in files],
         "file": [f.relative_to(CIFAR10_MINI).as_posix() for f in files]}, features=FEATURES)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """datasets' cache (where the parquet builder converts files to arrow) in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("hf-datasets-cache")
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def cifar_dict():
    # train in imagefolder's order (the kNN bank's order, so votes sum in the same order), test shuffled
    test_order = np.random.default_rng(0).permutation(len(list((CIFAR10_MINI / "test").glob("*/*.jpg"))))
    return datasets.DatasetDict({"train": cifar_split("train"), "test": cifar_split("test", test_order)})


@pytest.fixture(scope="module")
def saved(cifar_dict, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hfds") / "saved"
    cifar_dict.save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def parquet(cifar_dict, tmp_path_factory, hf_cache):
    folder = tmp_path_factory.mktemp("hfds") / "parquet"
    (folder / "data").mkdir(parents=True)
    for split, table in cifar_dict.items():  # the hub's layout
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def imagefolder_embeddings(tmp_path_factory):
    store = EmbeddingStore(tmp_path_factory.mktemp("if-cache"))
    dataset = Plugins(entry_points=False).dataset("cifar10-mini")
    return {split: extract(Pixels(), dataset, split, store, ExtractionOptions(progress=False, workers=0))[0]
            for split in ("train", "test")}


def save(tmp_path: Path, splits: dict[str, datasets.Dataset]) -> Path:
    folder = tmp_path / "saved"
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_embeddings_labels_and_classes_equal_imagefolder_item_for_item(layout, request, tmp_path,
                                                                        imagefolder_embeddings, cifar_dict):
    folder = request.getfixturevalue(layout)
    dataset = Plugins(entry_points=False).dataset(f"hfds:{folder}")
    info = dataset.info()
    assert info["class_names"] == Plugins(entry_points=False).dataset("cifar10-mini").info()["class_names"]
    assert info["split_sizes"] == {"train": 1000, "test": 500}
    assert info["revision"] == "files" and info["image_column"] == "image"
    store = EmbeddingStore(tmp_path / "cache")
    for split, reference in imagefolder_embeddings.items():
        # two DataLoader workers: the split is pickled into each of them
        ours, report = extract(Pixels(), dataset, split, store, ExtractionOptions(progress=False, workers=2))
        assert report.items_encoded == len(reference.ids)
        files = cifar_dict[split]["file"]
        assert list(ours.ids) == [f"{split}/{row}" for row in range(len(files))]
        position = {item: i for i, item in enumerate(reference.ids)}
        matched = [position[f"{files[row]}"] for row in range(len(files))]
        np.testing.assert_array_equal(ours.features, reference.features[matched])
        np.testing.assert_array_equal(ours.labels, reference.labels[matched])
    assert sorted(matched) != matched  # test rows are shuffled: a match by position would have failed


def test_ids_and_fingerprints_are_stable_and_follow_the_data(saved, tmp_path):
    first, second = hfds(str(saved)).split("test"), hfds(str(saved)).split("test")
    assert [first.item_id(i) for i in range(len(first))] == [second.item_id(i) for i in range(len(second))]
    assert first.fingerprint() == second.fingerprint()
    # another process sees the same ids and fingerprint
    code = ("import json, sys; from harness.plugins.hf_datasets import hfds; s = hfds(sys.argv[1]).split('test');"
            "print(json.dumps([s.fingerprint(), [s.item_id(i) for i in range(len(s))]]))")
    out = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [first.fingerprint(), [first.item_id(i) for i in range(500)]]
    # a changed arrow file (a rewrite: its mtime) changes that split's cache key, and only that split's
    import shutil

    from harness.extract import split_cache_key

    def keys(folder):
        data = Plugins(entry_points=False).dataset(f"hfds:{folder}")
        options = ExtractionOptions(progress=False)
        return {s: split_cache_key(Pixels(), data, s, data.split(s), options)[0] for s in ("train", "test")}

    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    before = keys(copy)
    arrow = next((copy / "test").glob("*.arrow"))
    os.utime(arrow, ns=(arrow.stat().st_atime_ns, arrow.stat().st_mtime_ns + 10**9))
    after = keys(copy)
    assert after["test"] != before["test"] and after["train"] == before["train"]


def test_items_decode_lazily_and_pickle_without_the_table(saved):
    import pickle

    split = hfds(str(saved)).split("train")
    blob = pickle.dumps(split)
    table_bytes = sum((saved / "train" / e).stat().st_size for e in os.listdir(saved / "train") if e.endswith(".arrow"))
    assert len(blob) < table_bytes / 50  # a memory map pickles as its file's path, not its rows
    image, label = pickle.loads(blob)[7]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 0


def test_validation_is_the_test_split_when_there_is_no_test_split_and_the_record_says_so(tmp_path):
    folder = save(tmp_path, {"train": cifar_split("train").select(range(0, 1000, 50)),
                             "validation": cifar_split("test").select(range(0, 500, 25))})
    dataset = hfds(str(folder))
    info = dataset.info()
    assert info["split_source"] == {"train": "train", "test": "validation"}
    assert "validation is used as test" in info["note"] and "test split: validation" in info["source"]
    split = dataset.split("test")
    assert len(split) == 20 and split.item_id(3) == "validation/3"
    with pytest.raises(HarnessError, match="has no split 'validation'; it has train, test"):
        dataset.split("validation")
    short = save(tmp_path / "short", {"train": cifar_split("train").select(range(0, 1000, 50)),
                                      "valid": cifar_split("test").select(range(0, 500, 25))})  # as tiny-imagenet
    assert hfds(str(short)).info()["split_source"] == {"train": "train", "test": "valid"}
    both = save(tmp_path / "both", {"validation": cifar_split("train").select(range(0, 1000, 50)),
                                    "valid": cifar_split("test").select(range(0, 500, 25))})
    assert hfds(str(both), train_split="validation").info()["split_source"] == {"train": "validation",
                                                                                "test": "valid"}  # never train
    neither = save(tmp_path / "neither", {"train": cifar_split("train").select(range(0, 1000, 50)),
                                          "holdout": cifar_split("test").select(range(0, 500, 25))})
    with pytest.raises(HarnessError, match=r"no test split \(nor validation, valid, val\); it has train, holdout: "
                                           r"set the option test_split"):
        hfds(str(neither)).info()


def test_a_test_split_without_labels_gives_way_to_validation_unless_named(tmp_path):
    """As the hub publishes ImageNet-1k: its test split's labels are all -1 (missing)."""
    test = cifar_split("test").select(range(0, 500, 50))
    unlabelled = test.cast_column("label", datasets.Value("int64")).map(lambda row: {"label": -1})
    unlabelled = unlabelled.cast_column("label", FEATURES["label"])
    folder = save(tmp_path, {"train": cifar_split("train").select(range(0, 1000, 50)), "test": unlabelled,
                             "validation": test})
    info = hfds(str(folder)).info()
    assert info["split_source"] == {"train": "train", "test": "validation"}
    assert "split 'test' has no labels (column 'label'): validation is used as test" in info["note"]
    assert hfds(str(folder)).split("test")[0][1] == test[0]["label"]
    named = hfds(str(folder), test_split="test")  # asked for by name: kept, its items unlabelled
    assert named.info()["split_source"]["test"] == "test" and named.split("test")[0][1] == -1
    no_column = save(tmp_path / "no-column", {"train": cifar_split("train").select(range(0, 1000, 50)),
                                              "test": test.remove_columns(["label"]), "validation": test})
    assert hfds(str(no_column)).info()["split_source"]["test"] == "validation"  # no label column at all


def test_explicit_train_and_test_splits(tmp_path):
    holdout = cifar_split("test").select([10, 260])
    folder = save(tmp_path, {"fit": cifar_split("train").select(range(0, 1000, 100)), "holdout": holdout,
                             "test": cifar_split("test").select([0])})
    dataset = hfds(str(folder), train_split="fit", test_split="holdout")
    assert dataset.info()["split_source"] == {"train": "fit", "test": "holdout"}
    assert "note" not in dataset.info()
    assert dataset.info()["split_sizes"] == {"train": 10, "test": 2}
    split = dataset.split("test")
    image, label = split[1]
    expected = Plugins(entry_points=False).dataset("cifar10-mini").split("test")
    expected_index = [expected.item_id(i) for i in range(len(expected))].index(holdout["file"][1])
    assert split.item_id(1) == "holdout/1" and label == expected[expected_index][1]
    assert np.array_equal(np.asarray(image), np.asarray(expected[expected_index][0]))
    with pytest.raises(HarnessError, match=r"no split 'val' \(option test_split\); it has fit, holdout, test"):
        hfds(str(folder), test_split="val").info()


def _columns_error(tmp_path, table: datasets.Dataset, **options) -> str:
    folder = save(tmp_path, {"train": table, "test": table})
    with pytest.raises(HarnessError) as caught:
        hfds(str(folder), **options).info()
    return str(caught.value)


def test_parquet_written_without_datasets_features_is_read_from_the_image_storage(tmp_path, hf_cache,
                                                                                 imagefolder_embeddings):
    """Parquet written by pyarrow (no datasets feature metadata): the image is a struct of bytes and path and the
    label a plain integer, or the image is a bare binary column named by image_column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "arrow-written"
    (folder / "data").mkdir(parents=True)
    for split in ("train", "test"):
        files = sorted((CIFAR10_MINI / split).glob("*/*.jpg"))[::10]
        table = pa.table({"image": [{"bytes": f.read_bytes(), "path": f.name} for f in files],
                          "raw": [f.read_bytes() for f in files],
                          "label": pa.array([CLASSES.index(f.parent.name) for f in files], pa.int64())})
        pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet")
    with pytest.raises(HarnessError, match=r"has no ClassLabel.*set the option label_column.*image \(struct bytes, "
                                           r"path\), raw \(Value binary\), label \(Value int64\)"):
        hfds(str(folder)).info()
    reference = imagefolder_embeddings["test"]
    for image_column in (None, "raw"):
        dataset = hfds(str(folder), label_column="label", image_column=image_column)
        assert dataset.info()["image_column"] == (image_column or "image")
        ours, _ = extract(Pixels(), dataset, "test", EmbeddingStore(tmp_path / f"cache-{image_column}"),
                          ExtractionOptions(progress=False, workers=0))
        np.testing.assert_array_equal(ours.features, reference.features[::10])  # imagefolder's order, every 10th
        np.testing.assert_array_equal(ours.labels, reference.labels[::10])
    with pytest.raises(HarnessError, match="column 'label' .*is Value, not datasets.Image or image bytes"):
        hfds(str(folder), label_column="label", image_column="label").info()


def test_a_local_copy_of_a_hub_repository_with_two_configs_reads_the_one_named(tmp_path, hf_cache):
    """As `huggingface-cli download --local-dir` leaves a repository: a dataset card whose `configs` say which
    parquet files are which configuration's splits. Each configuration is read alone, never the files merged."""
    repo = tmp_path / "repo"
    tables = {"coarse": {"train": cifar_split("train").select(range(0, 1000, 100)),
                         "test": cifar_split("test").select(range(0, 500, 100))},
              "fine": {"train": cifar_split("train").select(range(1, 1000, 50)),
                       "test": cifar_split("test").select(range(1, 500, 50))}}
    card = ["---", "configs:"]
    for config, splits in tables.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, table in splits.items():
            (repo / config).mkdir(parents=True, exist_ok=True)
            table.to_parquet(str(repo / config / f"{split}-00000-of-00001.parquet"))
            card += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (repo / "README.md").write_text("\n".join(card + ["---", "A dataset card.", ""]))
    with pytest.raises(HarnessError, match=r"Config name is missing.*'coarse', 'fine'.*set the option config"):
        hfds(str(repo)).info()
    with pytest.raises(HarnessError, match="'medium' not found.*change or drop the option config='medium'"):
        hfds(str(repo), config="medium").info()
    for config, splits in tables.items():
        dataset = hfds(str(repo), config=config)
        info = dataset.info()
        assert info["split_sizes"] == {"train": len(splits["train"]), "test": len(splits["test"])}
        assert info["source"].endswith(f"(config {config})") and info["config"] == config
        test = dataset.split("test")
        assert [test[i][1] for i in range(len(test))] == splits["test"]["label"]
    fine, coarse = (hfds(str(repo), config=c).split("train").fingerprint() for c in ("fine", "coarse"))
    assert fine != coarse
    saved = save(tmp_path, tables["fine"])
    with pytest.raises(HarnessError, match="option 'config' .*written by save_to_disk"):
        hfds(str(saved), config="fine").info()
    # A partial download (only fine/): the card names coarse/'s files too, which datasets resolves; the error says
    # so and what to do. Without the card the files are read by their names, and a config is then refused.
    shutil.rmtree(repo / "coarse")
    with pytest.raises(HarnessError, match="names data files, for its configurations, that are not in the folder.*"
                                           "partial download.*move README.md out"):
        hfds(str(repo), config="fine").info()
    (repo / "README.md").unlink()
    assert hfds(str(repo)).info()["split_sizes"] == {"train": 20, "test": 10}
    with pytest.raises(HarnessError, match="change or drop the option config='fine'"):
        hfds(str(repo), config="fine").info()


def test_two_image_columns_are_an_error_listing_the_columns(tmp_path):
    table = cifar_split("test").select(range(2))
    table = table.add_column("thumbnail", [{"bytes": b, "path": None} for b in
                                           [x["bytes"] for x in table.cast_column(
                                               "image", datasets.Image(decode=False))["image"]]])
    table = table.cast_column("thumbnail", datasets.Image())
    message = _columns_error(tmp_path, table)
    assert "2 Image columns (image, thumbnail)" in message and "set the option image_column" in message
    assert "image (Image), label (ClassLabel: 10 names), file (Value string), thumbnail (Image)" in message
    assert hfds(str(tmp_path / "saved"), image_column="thumbnail").info()["image_column"] == "thumbnail"


def test_no_class_label_column_is_an_error_naming_the_option(tmp_path):
    table = cifar_split("test").select(range(2)).cast_column("label", datasets.Value("int64"))
    message = _columns_error(tmp_path, table)
    assert "has no ClassLabel (class label) column; set the option label_column" in message
    assert "label (Value int64)" in message
    # Named, an integer (or string) column is taken: its distinct values, sorted, are the classes.
    two = cifar_split("test").select([0, 250, 251]).cast_column("label", datasets.Value("int64"))  # classes 0, 5, 5
    named = hfds(str(save(tmp_path / "named", {"train": two, "test": two})), label_column="label")
    assert named.info()["class_names"] == ["0", "5"] and "not a ClassLabel" in named.info()["note"]
    assert [named.split("test")[i][1] for i in range(3)] == [0, 1, 1]
    floats = two.cast_column("label", datasets.Value("float32"))
    folder = save(tmp_path / "float", {"train": floats, "test": floats})
    message = str(pytest.raises(HarnessError, hfds(str(folder), label_column="label").info).value)
    assert "column 'label' (option label_column) is Value, not datasets.ClassLabel or an integer or string" in message


def test_a_string_label_column_and_a_test_split_named_train(tmp_path):
    table = cifar_split("test").select(range(0, 500, 50))  # 10 rows, one per class
    names = [CLASSES[label] for label in table["label"]]
    table = table.remove_columns("label").add_column("species", names)
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "saved"))
    data = hfds(str(tmp_path / "saved"), label_column="species", test_split="train")
    info = data.info()
    assert info["splits"] == ["test"] and "there is no train split" in info["note"]
    assert info["class_names"] == sorted(CLASSES)
    assert [data.split("test")[i][1] for i in range(10)] == [sorted(CLASSES).index(n) for n in names]
    with pytest.raises(HarnessError, match="train_split and test_split both name split 'train'"):
        hfds(str(tmp_path / "saved"), label_column="species", train_split="train", test_split="train").info()


def test_an_unknown_column_is_an_error_listing_the_columns(tmp_path):
    message = _columns_error(tmp_path, cifar_split("test").select(range(2)), image_column="img")
    assert "has no column 'img' (option image_column)" in message
    assert "image (Image), label (ClassLabel: 10 names), file (Value string)" in message


def test_a_corrupt_image_is_a_bad_item_naming_the_row_and_is_skipped_on_request(tmp_path):
    table = cifar_split("test").select(range(0, 500, 25))  # 20 rows, two per class
    rows = table.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[5]["image"] = {"bytes": b"this is not a JPEG", "path": None}
    broken = datasets.Dataset.from_list(rows, features=FEATURES)
    folder = save(tmp_path, {"train": table, "test": broken})
    dataset = Plugins(entry_points=False).dataset(f"hfds:{folder}")
    with pytest.raises(BadItemError) as caught:
        dataset.split("test")[5]
    assert f"hfds:{folder} split 'test' row 5 (id test/5)" in str(caught.value)
    assert "UnidentifiedImageError" in caught.value.reason
    store = EmbeddingStore(tmp_path / "cache")
    with pytest.raises(BadItemError, match="test/5"):
        extract(Pixels(), dataset, "test", store, ExtractionOptions(progress=False, workers=0))
    embeddings, report = extract(Pixels(), dataset, "test", store,
                                 ExtractionOptions(progress=False, workers=0, skip_bad_images=True))
    assert [skip["id"] for skip in report.skipped] == ["test/5"]
    assert "row 5 (id test/5)" in report.skipped[0]["reason"]
    assert len(embeddings.ids) == 19 and "test/5" not in set(embeddings.ids)


def test_a_single_saved_dataset_is_the_test_split(tmp_path):
    folder = tmp_path / "one"
    cifar_split("test").select(range(4)).save_to_disk(str(folder))
    info = hfds(str(folder)).info()
    assert info["splits"] == ["test"] and info["split_sizes"] == {"test": 4}
    assert "single saved Dataset" in info["note"]


def test_local_path_errors_name_the_path(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        hfds(str(tmp_path / "missing")).info()
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="neither a folder written by save_to_disk"):
        hfds(str(tmp_path / "empty")).info()
    with pytest.raises(HarnessError, match="option 'revision' applies to hub ids only"):
        hfds(str(tmp_path / "empty"), revision="main").info()


def _run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def test_without_datasets_installed_hfds_names_the_extra_and_nothing_else_changes(tmp_path):
    # A sitecustomize that makes `import datasets` fail, as when the package is not installed.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['datasets'] = None\n")
    code = """
import json
from harness.errors import HarnessError
from harness.plugin_manager import Plugins
plugins = Plugins(entry_points=False)
listed = [e.display_name for e in plugins.datasets]
try:
    plugins.dataset("hfds:some/where").info()
    error = None
except HarnessError as e:
    error = str(e)
print(json.dumps({"listed": listed, "problems": [str(p) for p in plugins.problems], "error": error,
                  "mini": plugins.dataset("cifar10-mini").info()["split_sizes"]}))
"""
    done = _run_python(code, {"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "hfds:<...>" in result["listed"] and result["problems"] == []
    assert INSTALL_HINT in result["error"] and "'hfds:some/where'" in result["error"]
    assert result["mini"] == {"train": 1000, "test": 500}


def test_a_hub_id_offline_without_a_cached_copy_is_one_clear_error(tmp_path):
    home = tmp_path / "hf-home"
    code = """
import time
from harness.errors import HarnessError
from harness.plugins.hf_datasets import hfds
start = time.monotonic()
try:
    hfds("uoft-cs/cifar10", revision="main").info()
except HarnessError as e:
    print(f"{time.monotonic() - start:.1f}", e)
"""
    start = time.monotonic()
    done = _run_python(code, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "ds")},
                       timeout=60)
    assert done.returncode == 0, done.stderr
    seconds, _, message = done.stdout.strip().splitlines()[-1].partition(" ")
    assert float(seconds) < 10 and time.monotonic() - start < 60
    assert "'uoft-cs/cifar10' at revision main is not in the HF cache" in message
    assert "offline (HF_HUB_OFFLINE is set)" in message and "hfds:/path/to/DIR" in message


#: Run offline in a fresh process (datasets reads HF_HOME and HF_HUB_OFFLINE at import): leaves in datasets' cache
#: what an earlier online `load_dataset("someone/tiny")` of commit C leaves there (the prepared arrow files under
#: `<owner>___<name>/<config>/<version>/<commit>/`), then reads the hub id through hfds; then the same for a newer
#: commit, which `load_dataset` offline takes as the latest.
HUB_CACHE_SCRIPT = """
import io, json, shutil, sys, time
from pathlib import Path
import datasets
from PIL import Image
from harness.plugins.hf_datasets import hfds

def png(red):
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (red, 0, 0)).save(out, "PNG")
    return out.getvalue()

features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
seen = []
for commit, reds in ((sys.argv[1], [0, 40, 80, 120]), (sys.argv[2], [0, 40, 80, 160])):
    files = {}
    for split in ("train", "test"):
        table = datasets.Dataset.from_dict({"image": [{"bytes": png(r), "path": None} for r in reds],
                                           "label": [0, 1, 0, 1]}, features=features)
        files[split] = f"{sys.argv[3]}/{commit}-{split}.parquet"
        table.to_parquet(files[split])
    builder = datasets.load_dataset_builder("parquet", data_files=files)
    builder.download_and_prepare()
    target = Path(datasets.config.HF_DATASETS_CACHE) / "someone___tiny" / "default" / "0.0.0" / commit
    shutil.copytree(builder.cache_dir, target)
    for arrow in target.glob("parquet-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("parquet-", "tiny-")))
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default", "dataset_name": "tiny"}))
    time.sleep(0.05)  # the newer commit's folder is the newer one
    data = hfds("someone/tiny")
    test = data.split("test")
    seen.append({"revision": data.info()["revision"], "fingerprint": test.fingerprint(),
                 "red": [test[i][0].getpixel((0, 0))[0] for i in range(4)], "labels": [test[i][1] for i in range(4)]})
print(json.dumps(seen))
"""


def test_a_hub_id_offline_reads_datasets_cache_and_records_the_commit(tmp_path):
    first, second = "0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"
    home = tmp_path / "hf-home"
    done = subprocess.run([sys.executable, "-c", HUB_CACHE_SCRIPT, first, second, str(tmp_path)], cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    older, newer = json.loads(done.stdout.strip().splitlines()[-1])
    assert older["revision"] == first and newer["revision"] == second  # the commit of the cached copy
    assert older["red"] == [0, 40, 80, 120] and newer["red"] == [0, 40, 80, 160]
    assert older["labels"] == newer["labels"] == [0, 1, 0, 1]
    assert older["fingerprint"] != newer["fingerprint"]  # another commit: another cache key


def test_harness_run_knn_on_a_saved_dataset_from_a_suite_equals_the_imagefolder_run(saved, tmp_path):
    """`[[datasets]] name = "hfds"` with a path and options in a suite file runs as `cifar10-mini` does."""
    from dataclasses import replace

    from harness.runner import RunConfig, run
    from harness.suite import load_suite

    plugins = Plugins(entry_points=False)
    suite_file = tmp_path / "hf.toml"
    suite_file.write_text(f"""
[[encoders]]
name = "pixels"

[[datasets]]
name = "hfds"
path = "{saved}"
options = {{ test_split = "test", label_column = "label" }}

[[evaluators]]
name = "knn"
""")
    suite = load_suite(suite_file, plugins, ["knn"])
    common = dict(device="cpu", results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", progress=False,
                  workers=0)
    reports = {"hfds": run(replace(suite.config, **common), plugins),
               "cifar10-mini": run(RunConfig(encoders=["pixels"], datasets=["cifar10-mini"], evaluators=["knn"],
                                             **common), plugins)}
    scores = {}
    for name, report in reports.items():
        assert not report.failures, report.failures
        (record,) = report.records
        scores[name] = (record["main_score"], record["metrics"]["top5_k20"])
    (record,) = reports["hfds"].records
    assert record["dataset"]["name"] == f"hfds:{saved}[label_column=label,test_split=test]"
    assert record["dataset"]["revision"] == hfds(str(saved)).info()["revision"]
    assert scores["hfds"] == scores["cifar10-mini"]
    assert 0.1 < scores["cifar10-mini"][0] < 1.0


def test_a_suite_refuses_an_option_hfds_does_not_take(saved, tmp_path):
    from harness.suite import SuiteError, load_suite

    suite_file = tmp_path / "bad.toml"
    suite_file.write_text(f'[[encoders]]\nname = "pixels"\n[[datasets]]\nname = "hfds"\npath = "{saved}"\noptions = {{ split = "test" }}\n')
    with pytest.raises(SuiteError, match="takes no option.*'split'.*test_split"):
        load_suite(suite_file, Plugins(entry_points=False), ["knn"])


def test_dataset_option_on_the_command_line_chooses_the_split(tmp_path, capsys):
    from harness.cli import main
    from harness.records import load_records

    folder = save(tmp_path, {"train": cifar_split("train").select(range(0, 1000, 5)),
                             "holdout": cifar_split("test").select(range(0, 500, 5))})
    rc = main(["run", "-e", "pixels", "-d", f"hfds:{folder}", "--dataset-option", "test_split=holdout", "--eval",
               "knn", "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
               "--device", "cpu", "--workers", "0", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    (record,) = load_records(tmp_path / "results")
    assert record["dataset"]["name"] == f"hfds:{folder}[test_split=holdout]"
    assert record["dataset"]["source"].endswith("; test split: holdout")
    assert record["dataset"]["split_sizes"] == {"train": 200, "test": 100}


@pytest.mark.slow  # two `harness run` subprocesses: datasets reads its progress setting when first imported
def test_no_progress_quiets_the_bars_datasets_draws_itself(cifar_dict, tmp_path):
    folder = tmp_path / "parquet"  # parquet: datasets converts it to arrow on first read, behind a bar
    (folder / "data").mkdir(parents=True)
    for split, table in cifar_dict.items():
        table.select(range(0, len(table), 10)).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))

    def run(*flags: str) -> str:
        case = tmp_path / ("quiet" if flags else "loud")
        env = {**os.environ, "HF_DATASETS_CACHE": str(case / "hf-cache"), "HF_HUB_OFFLINE": "1"}
        env.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
        done = subprocess.run([sys.executable, "-m", "harness", "run", "-e", "pixels", "-d", f"hfds:{folder}",
                               "--eval", "knn", "--results-dir", str(case / "results"), "--cache-dir",
                               str(case / "cache"), "--device", "cpu", "--workers", "0", *flags],
                              capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "Generating train split" in run()  # the bar this test looks for is there without the flag
    quiet = run("--no-progress")
    assert "Generating" not in quiet and "examples/s" not in quiet, quiet
