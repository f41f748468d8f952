"""Image folders: layouts, colour modes, unlabelled sets, and errors that name the path to fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.errors import BadItemError, HarnessError
from harness.plugins.imagefolder import ImageFolder


def save(path, mode="RGB", size=(12, 10), colour=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if colour is not None else (10, 200, 30, 0)[: len(mode)] if mode != "L" else 128).save(path)


def labelled_folder(root):
    save(root / "train" / "cat" / "a.png")
    save(root / "train" / "cat" / "b.jpg")
    save(root / "train" / "dog" / "c.bmp")
    save(root / "test" / "cat" / "d.webp")
    save(root / "test" / "dog" / "grey.png", mode="L")
    save(root / "test" / "dog" / "alpha.png", mode="RGBA", colour=(255, 0, 0, 0))
    (root / "test" / "dog" / "notes.txt").write_text("not an image")
    return root


def test_labelled_layout_classes_ids_and_rgb(tmp_path):
    data = ImageFolder(labelled_folder(tmp_path / "set"))
    data.name = "imagefolder:set"
    info = data.info()
    assert info["class_names"] == ["cat", "dog"] and info["splits"] == ["train", "test"]
    assert info["split_sizes"] == {"train": 3, "test": 3}
    test = data.split("test")
    assert [test.item_id(i) for i in range(len(test))] == ["test/cat/d.webp", "test/dog/alpha.png", "test/dog/grey.png"]
    items = [test[i] for i in range(len(test))]
    assert [label for _, label in items] == [0, 1, 1]
    assert all(image.mode == "RGB" for image, _ in items)
    assert np.asarray(items[1][0])[0, 0].tolist() == [255, 255, 255]  # transparent pixels composited on white


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    root = labelled_folder(tmp_path / "set")
    before = ImageFolder(root).split("train").fingerprint()
    assert ImageFolder(root).split("train").fingerprint() == before
    save(root / "train" / "cat" / "a.png", size=(13, 10))
    assert ImageFolder(root).split("train").fingerprint() != before


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        save(tmp_path / "flat" / f"{i}.png")
    data = ImageFolder(tmp_path / "flat")
    data.name = "imagefolder:flat"
    assert data.info()["class_names"] == [] and data.info()["splits"] == ["test"] and not data.labelled
    assert data.split("test")[0][1] == -1


@pytest.mark.parametrize("layout, message", [
    ("missing", r"imagefolder path '.*nowhere' does not exist"),
    ("empty", r"has neither train/ and test/ folders"),
    ("no-test", r"has no test/ folder"),
    ("empty-class", r"class folder '.*train/dog' holds no images"),
    ("unknown-class", r"class folder\(s\) \['bird'\] that train/ lacks"),
])
def test_layout_errors_name_the_path(tmp_path, layout, message):
    root = tmp_path / "set"
    if layout == "missing":
        root = tmp_path / "nowhere"
    elif layout == "empty":
        root.mkdir()
    elif layout == "no-test":
        save(root / "train" / "cat" / "a.png")
    elif layout == "empty-class":
        save(root / "train" / "cat" / "a.png")
        (root / "train" / "dog").mkdir()
        save(root / "test" / "cat" / "b.png")
    else:
        save(root / "train" / "cat" / "a.png")
        save(root / "test" / "bird" / "b.png")
    with pytest.raises(HarnessError, match=message):
        ImageFolder(root).info()


def test_truncated_image_is_a_bad_item_naming_the_file(tmp_path):
    root = labelled_folder(tmp_path / "set")
    good = (root / "train" / "cat" / "b.jpg").read_bytes()
    (root / "train" / "cat" / "b.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(BadItemError, match=r"cannot read .*train/cat/b\.jpg"):
        ImageFolder(root).split("train")[1]


def test_unknown_split_lists_the_available_ones(tmp_path):
    data = ImageFolder(labelled_folder(tmp_path / "set"))
    data.name = "imagefolder:set"
    with pytest.raises(HarnessError, match=r"has no split 'val'; it has train, test"):
        data.split("val")


def test_cifar10_mini_ships_with_the_package():
    from harness.plugin_manager import Plugins

    data = Plugins(entry_points=False).dataset("cifar10-mini")
    info = data.info()
    assert info["split_sizes"] == {"train": 1000, "test": 500} and len(info["class_names"]) == 10
    image, label = data.split("test")[0]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 0


def test_spellings_of_one_path_give_one_dataset_identity(tmp_path, monkeypatch):
    """`data/set`, `./data/set` and `data/set/` are one dataset: one name, one results folder, one column."""
    from harness.cli import main
    from harness.leaderboard import build_leaderboard
    from harness.plugin_manager import Plugins
    from harness.records import load_records
    from harness.suite import load_suite

    for split, count in (("train", 12), ("test", 4)):
        for name, colour in (("red", (250, 10, 10)), ("blue", (10, 10, 250))):
            for i in range(count):
                save(tmp_path / "data" / "set" / split / name / f"{i}.png", colour=colour)
    monkeypatch.chdir(tmp_path)
    plugins = Plugins(entry_points=False)
    assert {plugins.dataset(s).name for s in ("imagefolder:data/set", "imagefolder:./data/set",
                                              "imagefolder:data/set/", "imagefolder:data//x/../set")} == {
        "imagefolder:data/set"}
    assert plugins.datasets.canonical("imagefolder:https://example.org/a//b") == "imagefolder:https://example.org/a//b"
    assert plugins.encoders.canonical("timm:./x") == "timm:./x"  # encoder arguments are model names, not paths
    for spelling in ("imagefolder:data/set", "imagefolder:./data/set", "imagefolder:data/set/"):
        assert main(["run", "--encoder", "pixels", "--dataset", spelling, "--eval", "knn", "--results-dir", "results",
                     "--cache-dir", "cache", "--no-progress"]) == 0
    records = load_records(tmp_path / "results")
    assert [r["dataset"]["name"] for r in records] == ["imagefolder:data/set"]
    assert build_leaderboard(records).columns == ["imagefolder:data/set knn"]
    assert records[0]["main_score"] == 1.0  # two flat colours
    # in a suite, the `path` key resolves against the suite's folder, and its spelling is normalised the same way
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "s.toml").write_text('[[encoders]]\nname = "pixels"\n[[datasets]]\nname = "imagefolder"\n'
                                                'path = "./../data/set/"\n')
    suite = load_suite(tmp_path / "suites" / "s.toml", plugins, ["knn"])
    [spec] = suite.config.datasets
    assert spec.name == f"imagefolder:{tmp_path / 'data' / 'set'}" and spec.display_name == "imagefolder:../data/set"


def test_bad_item_error_takes_a_path_or_an_id_and_warns_on_an_index(tmp_path):
    error = BadItemError(tmp_path / "train" / "cat" / "b.jpg", "truncated")
    assert error.item == str(tmp_path / "train" / "cat" / "b.jpg") and isinstance(error.item, str)
    assert str(error) == f"cannot read {tmp_path / 'train' / 'cat' / 'b.jpg'}: truncated"
    assert BadItemError("test/7", "bad bytes").item == "test/7"  # an item id
    with pytest.warns(DeprecationWarning, match=r"not int 3; for a position, pass split.item_id\(index\)"):
        legacy = BadItemError(3, "bad bytes")  # a dataset written before 0.2: still a clear, skippable error
    assert legacy.item == "item at position 3" and str(legacy) == "cannot read item at position 3: bad bytes"


def test_info_reads_the_listing_not_the_items(tmp_path):
    """`info()` may list files (class names, split sizes) but decodes no item: a corrupt image does not stop it."""
    root = labelled_folder(tmp_path / "set")
    (root / "train" / "cat" / "b.jpg").write_bytes(b"not a jpeg at all")
    data = ImageFolder(root)
    info = data.info()
    assert info["class_names"] == ["cat", "dog"] and info["split_sizes"] == {"train": 3, "test": 3}
    with pytest.raises(BadItemError) as error:
        data.split("train")[1]
    assert error.value.item == str(root / "train" / "cat" / "b.jpg")
