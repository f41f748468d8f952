"""`wds:` WebDataset shards, written here with tarfile from the real cifar10-mini images: the same items, labels and
embeddings as the image folder, an index read from the tar headers and reused, reading front to back, and damaged
shards named with their member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.errors import BadItemError, HarnessError
from harness.extract import ExtractionOptions, extract
from harness.plugin_manager import Plugins
from harness.plugins import wds_index
from harness.plugins.cifar10_mini import ROOT as CIFAR10_MINI
from harness.plugins.webdataset import WebDataset, expand_braces, read_class_names, shard_paths, split_of
from harness.store import EmbeddingStore
from harness_test_support.dataset_forms import add_member, write_shards

PER_SHARD = 400  # cifar10-mini: 1,000 train items in 3 shards, 500 test items in 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wds") / "shards"
    write_shards(CIFAR10_MINI, out, PER_SHARD)
    return out


@pytest.fixture(autouse=True)
def index_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "wds-index"
    monkeypatch.setenv(wds_index.INDEX_DIR_ENV, str(folder))
    return folder


def dataset(argument: str, **options) -> WebDataset:
    data = Plugins(entry_points=False).dataset(f"wds:{argument}", **options)
    return data


def pixels_embeddings(data, split: str, store: EmbeddingStore, **options):
    encoder = Plugins(entry_points=False).encoder("pixels")
    options = {"device": "cpu", "batch_size": 64, "workers": 0, "progress": False, "shard_size": 256, **options}
    return extract(encoder, data, split, store, ExtractionOptions(**options))


# -- patterns -------------------------------------------------------------------------------------------------------

def test_brace_patterns_expand_as_webdataset_writes_them():
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("{train,test}-{8..10}.tar") == ["train-8.tar", "train-9.tar", "train-10.tar",
                                                         "test-8.tar", "test-9.tar", "test-10.tar"]
    assert expand_braces("x{a,b{1..2}}y") == ["xay", "xb1y", "xb2y"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(HarnessError, match="unclosed"):
        expand_braces("a-{000..002.tar")


def test_split_names_come_from_file_or_folder_names():
    assert split_of(Path("/d/imagenet-train-000012.tar")) == "train"
    assert split_of(Path("/d/test/000.tar")) == "test"
    assert split_of(Path("/d/in1k_validation_3.tar")) == "val"
    assert split_of(Path("/d/valid/0.tar")) == "val"
    assert split_of(Path("/d/shard-000.tar")) is None
    assert split_of(Path("/d/contest-000.tar")) is None  # a word, not a substring


def test_a_brace_pattern_a_glob_and_a_folder_name_the_same_shards(shards):
    by_brace = shard_paths(str(shards / "{train-{000..002},test-{000..001}}.tar"))
    assert sorted(by_brace) == sorted(shard_paths(str(shards / "*.tar"))) == sorted(shard_paths(str(shards)))
    with pytest.raises(HarnessError, match=r"names 1 file\(s\) that do not exist: '.*test-002.tar'"):
        shard_paths(str(shards / "test-{000..002}.tar"))
    with pytest.raises(HarnessError, match="matches no shard"):
        shard_paths(str(shards / "nothing-*.tar"))


# -- the same items as the image folder -------------------------------------------------------------------------------

def test_items_labels_and_embeddings_equal_the_image_folders(shards, tmp_path):
    plugins = Plugins(entry_points=False)
    folder = plugins.dataset("cifar10-mini")
    data = dataset(str(shards))
    info = data.info()
    assert info["class_names"] == folder.info()["class_names"]  # from classes.txt beside the shards
    assert info["split_sizes"] == {"train": 1000, "test": 500} and info["shards"] == {"train": 3, "test": 2}
    store = EmbeddingStore(tmp_path / "cache")
    for split in ("train", "test"):
        ours, _ = pixels_embeddings(data, split, store)
        theirs, _ = pixels_embeddings(folder, split, store)
        # Sample `test/cat/0003` is the file test/cat/0003.jpg: the same bytes, decoded the same way.
        assert ours.ids.tolist() == [i.rsplit(".", 1)[0] for i in theirs.ids.tolist()]
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        np.testing.assert_array_equal(ours.features, theirs.features)


def test_dataloader_workers_read_the_same_items(shards, tmp_path):
    """Workers (forked processes) open their own shard files; the parent's descriptors are not shared."""
    data = dataset(str(shards))
    data.split("test")[0]  # the parent holds shard test-000 open before the workers start
    by_workers, _ = pixels_embeddings(data, "test", EmbeddingStore(tmp_path / "two"), workers=2)
    alone, _ = pixels_embeddings(data, "test", EmbeddingStore(tmp_path / "none"))
    np.testing.assert_array_equal(by_workers.ids, alone.ids)
    np.testing.assert_array_equal(by_workers.features, alone.features)


def test_class_names_from_a_file_beside_the_shards_or_the_option(shards, tmp_path):
    beside = tmp_path / "beside"
    beside.mkdir()
    for shard in shards.glob("*.tar"):
        os.symlink(shard, beside / shard.name)
    numbers = dataset(str(beside)).info()
    assert numbers["class_names"] == [str(n) for n in range(10)]
    assert "label numbers" in numbers["class_names_source"]
    names = sorted(p.name for p in (CIFAR10_MINI / "train").iterdir())
    (beside / "classes.json").write_text(json.dumps(names))
    assert dataset(str(beside)).info()["class_names"] == names
    as_object = tmp_path / "names.json"
    as_object.write_text(json.dumps({str(i): n.upper() for i, n in enumerate(names)}))
    assert dataset(str(beside), class_names=str(as_object)).info()["class_names"] == [n.upper() for n in names]
    text = tmp_path / "names.txt"
    text.write_text("\n".join(names[::-1]) + "\n")
    assert read_class_names(text) == names[::-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": "a", "2": "b"}))
    with pytest.raises(HarnessError, match="every index from 0"):
        read_class_names(bad)


def test_ids_and_fingerprints_are_stable_across_constructions_and_processes(shards):
    first, second = dataset(str(shards)).split("test"), dataset(str(shards / "*.tar")).split("test")
    assert [first.item_id(i) for i in range(len(first))] == [second.item_id(i) for i in range(len(second))]
    assert first.item_id(0) == "test/airplane/0000"
    code = ("from harness.plugin_manager import Plugins; s = Plugins(entry_points=False).dataset("
            f"'wds:{shards}').split('test'); print(s.fingerprint(), s.item_id(499))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, wds_index.INDEX_DIR_ENV: str(shards.parent / "other-index")})
    assert other.stdout.split() == [first.fingerprint(), first.item_id(499)]


def test_the_index_is_read_from_the_headers_once_and_reused(shards, index_dir, monkeypatch):
    data = dataset(str(shards))
    info, fingerprint = data.info(), data.split("train").fingerprint()
    assert len(list(index_dir.glob("*.json"))) == 5  # one per shard

    def no_tar_reading(*args, **kwargs):
        raise AssertionError("a shard's headers were read again")

    monkeypatch.setattr(wds_index.tarfile, "open", no_tar_reading)
    again = dataset(str(shards))
    assert again.info() == info and again.split("train").fingerprint() == fingerprint
    assert again.split("train")[999][1] == 9  # items are read without tarfile: one pread of the member


def test_the_fingerprint_follows_the_members_not_the_mtime(shards, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for shard in [*shards.glob("*.tar"), shards / "classes.txt"]:
        (copy / shard.name).write_bytes(shard.read_bytes())  # new files, new mtimes, same members
    original = dataset(str(shards)).split("test").fingerprint()
    assert dataset(str(copy)).split("test").fingerprint() == original
    keys = cache_keys(copy)
    with tarfile.open(copy / "test-001.tar", "a") as tar:  # one more sample
        add_member(tar, "test/extra/0000.jpg", (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes())
        add_member(tar, "test/extra/0000.cls", b"3")
    changed = dataset(str(copy)).split("test")
    assert len(changed) == 501 and changed.fingerprint() != original
    now = cache_keys(copy)  # only the changed split is extracted again
    assert now["test"] != keys["test"] and now["train"] == keys["train"]


def cache_keys(folder: Path) -> dict[str, str]:
    from harness.extract import split_cache_key

    data = dataset(str(folder))
    encoder = Plugins(entry_points=False).encoder("pixels")
    return {s: split_cache_key(encoder, data, s, data.split(s), ExtractionOptions(progress=False))[0]
            for s in ("train", "test")}


def test_each_shard_is_read_front_to_back_once(shards, tmp_path):
    data = dataset(str(shards))
    pixels_embeddings(data, "train", EmbeddingStore(tmp_path / "cache"))
    split = data.split("train")  # the split object the extraction read through
    assert split.shards_opened == 3 and split.reads_backwards == 0
    split[5], split[0]  # shard 0 was read to its end: each of these goes back
    assert split.reads_backwards == 2 and split.shards_opened == 3


# -- splits and options ---------------------------------------------------------------------------------------------

def test_train_and_test_options_and_val_standing_in_for_test(shards, tmp_path):
    explicit = dataset(str(shards), train="train-{000..001}.tar", test="test-000.tar")
    assert explicit.info()["split_sizes"] == {"train": 800, "test": 400}
    val = tmp_path / "val"
    val.mkdir()
    for shard in shards.glob("*.tar"):
        os.symlink(shard, val / shard.name.replace("test", "val"))
    info = dataset(str(val)).info()
    assert info["splits"] == ["train", "test"] and info["split_sizes"]["test"] == 500
    assert info["note"] == "no test shards: the val shards are the test split"
    with pytest.raises(HarnessError, match="give both the train and the test option"):
        dataset(str(shards), train="train-000.tar").info()
    with pytest.raises(HarnessError, match="is in both train and test"):
        dataset(str(shards), train="test-000.tar", test="test-*.tar").info()
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    os.symlink(shards / "train-000.tar", unnamed / "shard-000.tar")
    with pytest.raises(HarnessError, match="names no split: put train, test or val"):
        dataset(str(unnamed)).info()


def test_label_key_image_key_class_name_labels_and_unlabelled_shards(tmp_path):
    image = (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes()
    png = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 6), (1, 2, 3)).save(png)
    for split in ("train", "test"):
        with tarfile.open(tmp_path / f"{split}.tar", "w") as tar:
            for n, name in enumerate(("cat", "dog")):
                add_member(tar, f"{split}{n}.jpg", image)
                add_member(tar, f"{split}{n}.seg.png", png.read_bytes())  # an extension with a dot
                add_member(tar, f"{split}{n}.label", name.encode())
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    data = dataset(str(tmp_path), label_key="label")
    test = data.split("test")
    assert [test[i][1] for i in range(2)] == [0, 1]  # class names as labels
    assert test[0][0].size == (32, 32)
    seg = dataset(str(tmp_path), label_key="label", image_key="seg.png").split("test")
    assert seg[1][0].size == (8, 6)
    unlabelled = dataset(str(tmp_path))  # no `cls` member anywhere
    assert unlabelled.info()["class_names"] == [] and unlabelled.split("test")[1][1] == -1


def test_keys_repeating_across_shards_get_the_shard_name(tmp_path):
    image = (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes()
    for name in ("train-0.tar", "train-1.tar", "test-0.tar"):
        with tarfile.open(tmp_path / name, "w") as tar:
            add_member(tar, "000000.jpg", image)
            add_member(tar, "000000.cls", b"0")
    train = dataset(str(tmp_path)).split("train")
    assert [train.item_id(i) for i in range(2)] == ["train-0.tar/000000", "train-1.tar/000000"]
    assert dataset(str(tmp_path)).split("test").item_id(0) == "000000"


# -- damaged shards ---------------------------------------------------------------------------------------------------

def damaged_copy(shards: Path, out: Path) -> Path:
    out.mkdir()
    for shard in shards.glob("*.tar"):
        os.symlink(shard, out / shard.name)
    return out


def test_a_truncated_shard_names_the_shard_and_member_and_skipping_counts_it(shards, tmp_path):
    folder = damaged_copy(shards, tmp_path / "cut")
    os.unlink(folder / "test-001.tar")
    whole = (shards / "test-001.tar").read_bytes()
    with tarfile.open(shards / "test-001.tar") as tar:
        last_image = [m for m in tar.getmembers() if m.name.endswith(".jpg")][-1]
    (folder / "test-001.tar").write_bytes(whole[:last_image.offset_data + 100])  # cut inside the last image
    data = dataset(str(folder))
    assert data.info()["split_sizes"]["test"] == 500  # every sample is still there, the last one marked
    store = EmbeddingStore(tmp_path / "cache")
    with pytest.raises(BadItemError, match=r"test-001.tar member test/truck/0049.jpg.*truncated"):
        pixels_embeddings(data, "test", store)
    kept, report = pixels_embeddings(data, "test", store, skip_bad_images=True)
    assert len(kept.ids) == 499 and [s["id"] for s in report.skipped] == ["test/truck/0049"]
    assert "truncated" in report.skipped[0]["reason"]


def test_a_shard_cut_between_members_is_truncated_too(shards, tmp_path):
    folder = damaged_copy(shards, tmp_path / "cut")
    os.unlink(folder / "test-000.tar")
    with tarfile.open(shards / "test-000.tar") as tar:
        members = tar.getmembers()
    end_of_member_10 = members[10].offset_data + members[10].size  # after sample 5's jpg: its cls is lost
    end = -(-end_of_member_10 // 512) * 512
    (folder / "test-000.tar").write_bytes((shards / "test-000.tar").read_bytes()[:end])
    test = dataset(str(folder)).split("test")
    assert len(test) == 500 - 400 + 6
    with pytest.raises(BadItemError, match="no end-of-archive marker"):
        test[5]
    assert test[4][1] == 0


def test_an_unreadable_image_names_the_shard_and_member(shards, tmp_path):
    folder = tmp_path / "garbage"
    folder.mkdir()
    os.symlink(shards / "train-000.tar", folder / "train-000.tar")
    with tarfile.open(folder / "test-000.tar", "w") as tar:
        add_member(tar, "a.jpg", (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes())
        add_member(tar, "a.cls", b"3")
        add_member(tar, "b.jpg", b"not a jpeg at all")
        add_member(tar, "b.cls", b"3")
    data = dataset(str(folder))
    with pytest.raises(BadItemError, match=r"cannot read .*test-000.tar member b.jpg: UnidentifiedImageError"):
        data.split("test")[1]
    kept, report = pixels_embeddings(data, "test", EmbeddingStore(tmp_path / "cache"), skip_bad_images=True)
    assert kept.ids.tolist() == ["a"] and [s["id"] for s in report.skipped] == ["b"]


def test_a_file_that_is_not_a_tar_is_named(shards, tmp_path):
    folder = damaged_copy(shards, tmp_path / "gz")
    import gzip

    (folder / "test-009.tar").write_bytes(gzip.compress((shards / "test-000.tar").read_bytes()))
    with pytest.raises(HarnessError, match=r"'.*test-009.tar' is not an uncompressed tar archive"):
        dataset(str(folder)).info()


# -- the command line -------------------------------------------------------------------------------------------------

def test_dataset_options_on_the_command_line(shards):
    from harness.cli import build_parser
    from harness.cli.run import run_config

    plugins = Plugins(entry_points=False)
    args = build_parser().parse_args(["run", "-e", "pixels", "-d", f"wds:{shards}", "-d", "cifar10-mini",
                                      "--dataset-option", "label_key=cls", "--dataset-option", "image_key=jpg"])
    config = run_config(args, plugins)
    wds_spec, plain = config.datasets
    assert wds_spec.options == {"label_key": "cls", "image_key": "jpg"} and plain == "cifar10-mini"
    args = build_parser().parse_args(["run", "-d", "cifar10-mini", "--dataset-option", "label_key=cls"])
    with pytest.raises(HarnessError, match="--dataset-option label_key: no dataset of this run"):
        run_config(args, plugins)


@pytest.mark.slow  # torchrun: two processes
def test_two_ranks_read_their_shards_in_order_and_merge_to_the_single_process_embeddings(shards, tmp_path):
    from harness_test_support.torchrun import rank_output, torchrun

    worker = Path(__file__).resolve().with_name("harness_test_support") / "wds_distributed_worker.py"
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    launch = torchrun([str(worker), str(shards), str(out)], logs)
    output, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, output + rank_output(logs, 0, "stderr") + rank_output(logs, 1, "stderr")
    reads = [json.loads((out / f"rank{rank}-reads.json").read_text()) for rank in (0, 1)]
    # 1,000 items in cache shards of 128: rank 0 encodes items 0-127, 256-383, ..., rank 1 the others, each
    # moving forward through the three tar shards (400 items each), never back.
    assert [r["reads_backwards"] for r in reads] == [0, 0]
    assert [r["shards_opened"] for r in reads] == [3, 3]
    reference, report = pixels_embeddings(dataset(str(shards)), "train", EmbeddingStore(tmp_path / "single"),
                                          shard_size=128)
    assert report.key == reads[0]["key"] == reads[1]["key"]
    merged = EmbeddingStore(out / "cache").load(report.key)
    assert merged.meta["ranks"]["world_size"] == 2
    assert merged.meta["ranks"]["shards_written_by_rank"] == {"0": [0, 2, 4, 6], "1": [1, 3, 5, 7]}
    np.testing.assert_array_equal(merged.ids, reference.ids)
    np.testing.assert_array_equal(merged.labels, reference.labels)
    np.testing.assert_array_equal(merged.features, reference.features)
    # `harness run` under torchrun, with an empty index folder: rank 0 scanned first and indexed all 5 tar shards,
    # rank 1 then read the saved index instead of reading the same headers at the same time.
    runs = [json.loads((out / f"rank{rank}-run.json").read_text()) for rank in (0, 1)]
    assert runs == [{"exit": 0, "shards_indexed": 5}, {"exit": 0, "shards_indexed": 0}]


def test_clip_benchmark_layout_class_names_above_split_folders_and_webp(tmp_path):
    """CLIP_benchmark's converter writes root/classnames.txt and root/<split>/<n>.tar, samples `s0000000` holding
    lossless `webp` and `cls`: found as a folder and as a brace pattern over the split folders."""
    from PIL import Image

    names = ["airplane", "automobile"]
    root = tmp_path / "wds_cifar2"
    root.mkdir()
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    expected = {}
    for split in ("train", "test"):
        (root / split).mkdir()
        files = [f for c in names for f in sorted((CIFAR10_MINI / split / c).glob("*.jpg"))[:3]]
        with tarfile.open(root / split / "0.tar", "w") as tar:
            for n, file in enumerate(files):
                webp = tmp_path / "sample.webp"
                Image.open(file).convert("RGB").save(webp, format="webp", lossless=True)
                add_member(tar, f"s{n:07d}.webp", webp.read_bytes())
                add_member(tar, f"s{n:07d}.cls", str(names.index(file.parent.name)).encode())
        expected[split] = [(np.asarray(Image.open(f).convert("RGB")), names.index(f.parent.name)) for f in files]
    for argument in (str(root), f"{root}/{{train,test}}/0.tar"):
        data = dataset(argument)
        info = data.info()
        assert info["class_names"] == names and info["class_names_source"] == str(root / "classnames.txt")
        assert info["split_sizes"] == {"train": 6, "test": 6}
        test = data.split("test")
        assert [test.item_id(i) for i in range(2)] == ["s0000000", "s0000001"]
        for i, (pixels, label) in enumerate(expected["test"]):  # lossless: the decoded pixels, exactly
            image, got = test[i]
            assert got == label and np.array_equal(np.asarray(image), pixels)


def test_labels_written_as_class_names_without_a_names_file_are_the_sorted_names(tmp_path):
    image = (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes()
    for split in ("train", "test"):
        with tarfile.open(tmp_path / f"{split}.tar", "w") as tar:
            for n, name in enumerate(("n02", "n01", "n02")):
                add_member(tar, f"{split}{n}.jpg", image)
                add_member(tar, f"{split}{n}.cls", name.encode())
    data = dataset(str(tmp_path))
    assert data.info()["class_names"] == ["n01", "n02"]
    assert "distinct label texts" in data.info()["class_names_source"]
    assert [data.split("test")[i][1] for i in range(3)] == [1, 0, 1]
    empty = tmp_path / "with-empty"  # an empty label member: its sample is a bad item, not a class ''
    empty.mkdir()
    for split in ("train", "test"):
        with tarfile.open(empty / f"{split}.tar", "w") as tar:
            for n, name in enumerate(("7", "01", "", "-1")):
                add_member(tar, f"{split}{n}.jpg", image)
                add_member(tar, f"{split}{n}.cls", name.encode())
            add_member(tar, f"{split}9.jpg", image)
            add_member(tar, f"{split}9.cls", b"n01")  # a name among numbers: a bad item too, named
    data = dataset(str(empty))
    assert data.info()["class_names"] == [str(n) for n in range(8)]  # "01" is class 1, as "1" would be
    test = data.split("test")
    assert [test[i][1] for i in range(2)] == [7, 1]
    with pytest.raises(BadItemError, match="test2.jpg.*label '' is neither a class number nor a class name"):
        test[2]
    assert test[3][1] == -1  # -1: an unlabelled sample, as timm's reader reads it
    with pytest.raises(BadItemError, match="test9.jpg.*label 'n01' is neither"):
        test[4]


def test_labels_from_a_field_of_the_json_sidecar(tmp_path):
    """As timm's `target_key`: the label is a field of each sample's `json` member (dotted for nested objects);
    a sample whose JSON lacks the field, or is not JSON, is a bad item naming that member."""
    image = (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes()
    rows = [{"label": 2, "meta": {"name": "dog"}}, {"label": 0.0, "meta": {"name": "cat"}},
            {"label": 1, "meta": {"name": "dog"}}]
    for split in ("train", "test"):
        with tarfile.open(tmp_path / f"{split}.tar", "w") as tar:
            for n, row in enumerate(rows):
                add_member(tar, f"{split}{n}.jpg", image)
                add_member(tar, f"{split}{n}.json", json.dumps({"caption": "a photo", **row}).encode())
            add_member(tar, f"{split}8.jpg", image)
            add_member(tar, f"{split}8.json", b'{"caption": "no label here"}')
            add_member(tar, f"{split}9.jpg", image)
            add_member(tar, f"{split}9.json", b"{not json")
    numbers = dataset(str(tmp_path), label_field="label")
    assert numbers.info()["class_names"] == ["0", "1", "2"]
    test = numbers.split("test")
    assert [test[i][1] for i in range(3)] == [2, 0, 1]  # 0.0 is the class number 0
    with pytest.raises(BadItemError, match=r"test8.jpg.*member 'test8.json' has no field 'label'"):
        test[3]
    with pytest.raises(BadItemError, match=r"test9.jpg.*member 'test9.json' is not JSON"):
        test[4]
    names = dataset(str(tmp_path), label_field="meta.name")  # a second index of the same shards, by its field
    assert names.info()["class_names"] == ["cat", "dog"]
    assert [names.split("test")[i][1] for i in range(3)] == [1, 0, 1]
    assert dataset(str(tmp_path)).info()["class_names"] == []  # no `cls` member: unlabelled, as before


def test_label_field_mistakes_unlabelled_test_shards_and_label_key_default(tmp_path):
    image = (CIFAR10_MINI / "test/cat/0000.jpg").read_bytes()
    metas = {"train": ['{"label": 0}', '{"label": 1}'], "val": ['{"label": 1}', '\ufeff{"label": " 0 "}'],
             "test": ['{"label": -1}', '{"label": -1}']}  # a held-out test set published without its labels
    for split, rows in metas.items():
        with tarfile.open(tmp_path / f"{split}.tar", "w") as tar:
            for n, meta in enumerate(rows):
                add_member(tar, f"{split}{n}.jpg", image)
                add_member(tar, f"{split}{n}.json", meta.encode())
    data = dataset(str(tmp_path), label_field="label")
    info = data.info()
    assert info["split_sizes"] == {"train": 2, "test": 2}  # val stands in for the unlabelled test shards
    assert info["note"] == "the test shards have no labels: the val shards are the test split"
    test = data.split("test")
    assert [test[i][1] for i in range(2)] == [1, 0]  # a byte-order mark and spaces around the name are read
    named = dataset(str(tmp_path), label_field="label", test=str(tmp_path / "test.tar"),
                    train=str(tmp_path / "train.tar"))
    assert [named.split("test")[i][1] for i in range(2)] == [-1, -1]  # asked for by name: kept, unlabelled
    with pytest.raises(HarnessError, match=r"no sample has a label in field 'lable' of its 'json' member \(the "
                                           r"first sample's: member '.*' has no field 'lable'\); check the option"):
        dataset(str(tmp_path), label_field="lable").info()
    with pytest.raises(HarnessError, match="option label_field=3 must name a field"):
        dataset(str(tmp_path), label_field=3)
    # label_key=cls is the default: the same dataset, the same column name, with or without it.
    from harness.plan import DatasetSpec, RunConfig, build_dataset

    config = RunConfig(encoders=["pixels"], datasets=[])
    names = {build_dataset(DatasetSpec(f"wds:{tmp_path}", options), config, Plugins(entry_points=False)).name
             for options in ({}, {"label_key": "cls"})}
    assert names == {f"wds:{tmp_path}"}
