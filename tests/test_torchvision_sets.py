"""The torchvision datasets plugin, against real torchvision classes reading real files on disk.

No dataset host is reachable from the test machines, and none may be contacted from a test anywhere: an autouse
fixture makes every DNS lookup fail (the way it fails on an offline machine) and records what was looked up, so a
test can also assert that no network access happened at all. Local copies are fabricated in torchvision's own
on-disk formats (MNIST idx files, the EuroSAT and Oxford-IIIT Pet folders); CIFAR-10's format is fabricated too,
to show that torchvision's MD5 check refuses it and that the user is told so.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.errors import BadItemError, HarnessError
from harness.plugin_manager import Plugins
from harness.plugins import torchvision_sets as tvs

REQUIRED_NAMES = {"cifar10", "cifar100", "stl10", "mnist", "fashion-mnist", "svhn", "flowers102", "dtd", "pets",
                  "eurosat"}


class NetworkLog:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.timeouts: list[float | None] = []


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> NetworkLog:
    """Every host lookup fails as on an offline machine; the hosts and the socket timeout in force are kept."""
    log = NetworkLog()

    def offline_getaddrinfo(host, *args, **kwargs):
        log.hosts.append(host)
        log.timeouts.append(socket.getdefaulttimeout())
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network disabled in tests)")

    monkeypatch.setattr(socket, "getaddrinfo", offline_getaddrinfo)
    monkeypatch.delenv(tvs.DATA_ROOT_ENV, raising=False)
    return log


def make(name: str, **options):
    return tvs.TorchvisionDataset(tvs.SETS[name], **options)


# -- fabricated local copies ---------------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx (ubyte) file as MNIST ships them: big-endian magic 0x08<ndim>, big-endian dims, uint8 data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def fabricate_mnist(root: Path, folder: str = "MNIST", n_train: int = 12, n_test: int = 5):
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


EUROSAT_CLASSES = {"AnnualCrop": 10, "Forest": 5, "River": 7}


def fabricate_eurosat(root: Path) -> dict[str, tuple[int, tuple[int, int, int]]]:
    """Small PNGs whose colour says which file they are: relative path -> (label, RGB colour)."""
    files = {}
    for label, (cls, count) in enumerate(EUROSAT_CLASSES.items()):
        folder = root / "eurosat" / "2750" / cls
        folder.mkdir(parents=True)
        for k in range(count):
            colour = (label * 60, k * 20, 7)
            image = Image.new("RGB", (4, 4), colour)
            if k == 1:
                image = image.convert("RGBA")  # a 4-channel file must come back as RGB
            image.save(folder / f"{cls}_{k + 1}.png")
            files[f"{cls}/{cls}_{k + 1}.png"] = (label, colour)
    return files


# -- registration and construction ---------------------------------------------------------------------------------

def test_every_registered_name_constructs_without_touching_disk_or_network(tmp_path, network):
    plugins = Plugins(builtins=("harness.plugins.torchvision_sets",), entry_points=False)
    assert plugins.problems == []
    names = {entry.name for entry in plugins.datasets}
    assert REQUIRED_NAMES <= names
    root = tmp_path / "data"
    for name in sorted(names):
        dataset = plugins.dataset(name, data_root=str(root), download=True)
        assert dataset.name == name
        assert dataset.folder.parent == root
        with pytest.raises(HarnessError) as error:
            dataset.split("no-such-split")
        message = str(error.value)
        assert name in message and "no-such-split" in message
        for split in tvs.SETS[name].splits:
            assert split in message
        assert {"train", "test"} <= set(tvs.SETS[name].splits)
    # Sets whose class names torchvision knows without the files answer info() without the files.
    for name in ("mnist", "fashion-mnist", "svhn", "flowers102"):
        info = plugins.dataset(name, data_root=str(root)).info()
        assert len(info["class_names"]) == {"flowers102": 102}.get(name, 10)
        assert info["source"].startswith("torchvision.datasets.")
        assert info["revision"].startswith(f"torchvision {tvs.torchvision_version()}")
    assert network.hosts == []
    assert not root.exists()


def test_unknown_option_is_a_harness_error(tmp_path):
    with pytest.raises(HarnessError, match="no option.*'colour'.*data_root"):
        make("mnist", data_root=tmp_path, colour="red")


def test_data_root_option_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert make("mnist").data_root == tmp_path / "home" / ".cache" / "harness" / "data"
    monkeypatch.setenv(tvs.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert make("mnist").data_root == tmp_path / "env"
    assert make("mnist", data_root=tmp_path / "opt").data_root == tmp_path / "opt"
    assert make("mnist", data_root=tmp_path / "opt").info()["data_root"] == str(tmp_path / "opt")


# -- offline and missing data --------------------------------------------------------------------------------------

def test_offline_download_fails_fast_and_says_what_to_do(tmp_path, network):
    dataset = make("mnist", data_root=tmp_path)
    started = time.monotonic()
    with pytest.raises(HarnessError) as error:
        dataset.split("train")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "'mnist'" in message
    assert "could not be downloaded" in message
    assert "ossci-datasets.s3.amazonaws.com" in message  # the URL that failed
    assert f"expected in {tmp_path / 'MNIST'}" in message  # the exact folder
    assert "--data-root DIR" in message and f"{tvs.DATA_ROOT_ENV}=DIR" in message
    assert "MNIST/raw/{train-images-idx3-ubyte" in message  # the layout torchvision reads
    # The network was really tried, under the harness's socket timeout, which is then lifted again.
    assert "ossci-datasets.s3.amazonaws.com" in network.hosts
    assert set(network.timeouts) == {tvs.DEFAULT_DOWNLOAD_TIMEOUT}
    assert socket.getdefaulttimeout() is None


def test_missing_data_with_download_off_never_uses_the_network(tmp_path, network):
    with pytest.raises(HarnessError) as error:
        make("eurosat", data_root=tmp_path, download="false").split("test")
    message = str(error.value)
    assert "'eurosat' not found" in message and str(tmp_path / "eurosat") in message
    assert "download=False" in message and tvs.DATA_ROOT_ENV in message and "eurosat/2750/" in message
    assert network.hosts == []


def test_fabricated_cifar10_is_refused_by_torchvision_md5_check(tmp_path, network):
    """torchvision checks the MD5 of every CIFAR batch, even with download=False: a fabricated copy in the right
    format is refused, and the message says that the copy, not the network, is the problem."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / batch).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))

    with pytest.raises(HarnessError) as error:
        make("cifar10", data_root=tmp_path, download=False).split("train")
    message = str(error.value)
    assert f"files in {folder} were not accepted" in message and "MD5" in message
    assert network.hosts == []

    with pytest.raises(HarnessError) as error:
        make("cifar10", data_root=tmp_path).split("test")
    message = str(error.value)
    assert "www.cs.toronto.edu" in message and "could not be downloaded" in message
    assert f"The copy in {folder} was not accepted" in message and "HARNESS_DATA_ROOT=DIR" in message
    assert network.hosts == ["www.cs.toronto.edu"]


# -- local copies ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_local_idx_copy_is_read_as_rgb_with_labels(tmp_path, network, name, folder):
    arrays = fabricate_mnist(tmp_path, folder)
    dataset = make(name, data_root=tmp_path)  # download=True: a complete copy must not trigger a download
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[prefix]
        items = dataset.split(split)
        assert len(items) == len(labels)
        for i in (0, len(items) - 1):
            image, label = items[i]
            assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (28, 28)
            pixels = np.asarray(image)
            assert (pixels == images[i][:, :, None]).all()  # grey replicated into R, G and B
            assert type(label) is int and label == labels[i]
            assert items.item_id(i) == f"{split}/{i}"
        assert [items[i][1] for i in range(len(items))] == labels.tolist()
        with pytest.raises(IndexError):
            items[len(items)]
        copied = pickle.loads(pickle.dumps(items))  # DataLoader workers started by spawn get a pickled copy
        assert copied.item_id(2) == items.item_id(2) and copied[2][1] == items[2][1]
    info = dataset.info()
    assert info["source"] == f"torchvision.datasets.{tvs.SETS[name].tv_class}"
    assert info["splits"] == ["train", "test"] and len(info["class_names"]) == 10
    assert info["data_root"] == str(tmp_path)
    assert network.hosts == []


def test_fingerprint_is_stable_and_follows_the_files(tmp_path):
    fabricate_mnist(tmp_path)
    train = make("mnist", data_root=tmp_path).split("train")
    first = train.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", first), first  # a sha256 hex digest
    assert train.fingerprint() == first
    assert make("mnist", data_root=tmp_path).split("train").fingerprint() == first  # a fresh object agrees
    assert make("mnist", data_root=tmp_path).split("test").fingerprint() != first

    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = train.fingerprint()
    assert touched != first

    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert train.fingerprint() == first  # only size and mtime count, so restoring the mtime restores it

    with labels.open("ab") as handle:  # same mtime, one byte longer
        handle.write(b"\0")
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert train.fingerprint() not in (first, touched)

    other = make("fashion-mnist", data_root=tmp_path)  # another set's folder is not part of it
    before = train.fingerprint()
    (tmp_path / "FashionMNIST").mkdir()
    (tmp_path / "FashionMNIST" / "new-file").write_bytes(b"x")
    assert train.fingerprint() == before and other.folder == tmp_path / "FashionMNIST"
    (tmp_path / "MNIST" / "extra-file").write_bytes(b"x")  # a new file in its own folder is
    assert train.fingerprint() != before


def reference_eurosat_split(files: dict[str, tuple[int, tuple]], seed: int = 0) -> dict[str, set[str]]:
    """The documented rule, written out independently: per class, order by the hash, first 20 % is test."""
    test: set[str] = set()
    for cls in EUROSAT_CLASSES:
        paths = [p for p in files if p.startswith(cls + "/")]
        paths.sort(key=lambda p: hashlib.sha256(f"eurosat-split-v1:{seed}:{p}".encode()).hexdigest())
        test.update(paths[:int(len(paths) * 0.2 + 0.5)])
    return {"test": test, "train": set(files) - test}


def test_eurosat_local_copy_gets_a_deterministic_stratified_split(tmp_path, network):
    files = fabricate_eurosat(tmp_path)
    colour_to_path = {colour: path for path, (_, colour) in files.items()}
    expected = reference_eurosat_split(files)
    assert [len([p for p in expected["test"] if p.startswith(c)]) for c in EUROSAT_CLASSES] == [2, 1, 1]

    dataset = make("eurosat", data_root=tmp_path)
    seen = {}
    for split in ("train", "test"):
        items = dataset.split(split)
        paths = set()
        for i in range(len(items)):
            image, label = items[i]
            assert image.mode == "RGB" and image.size == (4, 4)
            path = colour_to_path[tuple(int(v) for v in np.asarray(image)[0, 0])]
            assert files[path][0] == label
            assert items.item_id(i) == f"{split}/{i}"
            paths.add(path)
        assert len(paths) == len(items)
        seen[split] = paths
    assert seen == expected

    info = dataset.info()
    assert info["class_names"] == list(EUROSAT_CLASSES)
    assert info["split_method"]["seed"] == tvs.EUROSAT_SPLIT_SEED == 0
    assert info["split_method"]["test_fraction"] == 0.2
    assert "stratified 80%/20%" in info["revision"] and "seed 0" in info["revision"]
    # Another object, and a copy listed from another root, give the same split and ids.
    again = make("eurosat", data_root=tmp_path).split("test")
    assert [again[i][1] for i in range(len(again))] == [dataset.split("test")[i][1] for i in range(len(again))]
    assert network.hosts == []


def test_unreadable_image_is_a_bad_item_naming_the_file(tmp_path):
    fabricate_eurosat(tmp_path)
    dataset = make("eurosat", data_root=tmp_path)
    train = dataset.split("train")
    source_path = Path(train.source.samples[train.indices[0]][0])
    source_path.write_bytes(b"not a png at all")
    with pytest.raises(BadItemError) as error:
        train[0]
    assert source_path.name in str(error.value) and "train/0" in str(error.value)
    train[1]  # the others still read


def test_pets_trainval_is_served_as_train(tmp_path, network):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]
    lines = {"trainval": [], "test": []}
    for breed, class_id, species in breeds:
        for k in range(1, 4):
            image_id = f"{breed}_{k}"
            mode = "L" if k == 1 else "RGB"  # a greyscale JPEG, as a few real Pets images are
            Image.new(mode, (6, 5), 100).save(base / "images" / f"{image_id}.jpg")
            lines["test" if k == 3 else "trainval"].append(f"{image_id} {class_id} {species} 1")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")

    dataset = make("pets", data_root=tmp_path)
    train, test = dataset.split("train"), dataset.split("test")
    assert (len(train), len(test)) == (6, 3)
    assert [train[i][1] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert all(train[i][0].mode == "RGB" for i in range(6))
    assert dataset.info()["class_names"] == ["Abyssinian", "American Bulldog", "Bengal"]
    assert "trainval as train" in dataset.info()["revision"]
    with pytest.raises(HarnessError, match="available splits: train, test"):
        dataset.split("trainval")
    assert network.hosts == []


# -- small pieces ---------------------------------------------------------------------------------------------------

def test_to_rgb_handles_grey_palette_and_alpha():
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    palette.info["transparency"] = 0
    for image, pixel in ((Image.new("L", (2, 2), 77), (77, 77, 77)), (palette, (200, 10, 30)),
                         (Image.new("RGBA", (2, 2), (1, 2, 3, 0)), (1, 2, 3)),
                         (Image.new("1", (2, 2), 1), (255, 255, 255))):
        converted = tvs.to_rgb(image)
        assert converted.mode == "RGB" and converted.getpixel((0, 0)) == pixel


def test_socket_timeout_is_scoped_and_respects_an_existing_default():
    assert socket.getdefaulttimeout() is None
    with tvs.socket_timeout(3.0):
        assert socket.getdefaulttimeout() == 3.0
    assert socket.getdefaulttimeout() is None
    socket.setdefaulttimeout(9.0)
    try:
        with tvs.socket_timeout(3.0):
            assert socket.getdefaulttimeout() == 9.0
        assert socket.getdefaulttimeout() == 9.0
    finally:
        socket.setdefaulttimeout(None)
