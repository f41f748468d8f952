"""The extraction modules' seams: names kept importable from `harness.extract`, the storage dtype check, a cache
key computed once (`extract(cache_key=)`), the partial directory opened once by rank 0, and entries hashed while
they are written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import harness.extract
from harness import device, shards, store
from harness.errors import HarnessError
from harness.extract import ExtractionOptions, check_storage_dtype, extract, split_cache_key
from harness.plugins.synthetic import Synthetic, SyntheticSplit
from harness.store import EmbeddingStore
from harness_test_support.helpers import CountingPixels


def options(**kw):
    return ExtractionOptions(**{"device": "cpu", "batch_size": 8, "shard_size": 16, "progress": False, **kw})


class CountingSplit(SyntheticSplit):
    """A synthetic split that counts how often it is fingerprinted (for a folder that would hash every file)."""

    def __init__(self, counter: list[int], *args) -> None:
        super().__init__(*args)
        self.counter = counter

    def fingerprint(self) -> str:
        self.counter.append(1)
        return super().fingerprint()


class CountingSynthetic(Synthetic):
    name = "synthetic"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.fingerprints: list[int] = []

    def split(self, name: str) -> CountingSplit:
        plain = super().split(name)
        return CountingSplit(self.fingerprints, plain.split, plain.classes, plain.per_class, plain.side, plain.seed)


def test_moved_names_are_still_importable_from_harness_extract():
    assert harness.extract.resolve_device is device.resolve_device
    assert harness.extract.default_workers is device.default_workers
    assert harness.extract.precision_for is device.precision_for
    assert harness.extract.ShardedExtraction is shards.ShardedExtraction
    for name in ("extract", "split_cache_key", "ExtractionOptions", "ExtractionReport", "STORAGE_DTYPES",
                 "dataset_fingerprint", "encoder_fingerprint", "check_storage_dtype"):
        assert name in harness.extract.__all__ and hasattr(harness.extract, name)


def test_storage_dtype_check():
    for dtype in harness.extract.STORAGE_DTYPES:
        check_storage_dtype(dtype)
    with pytest.raises(HarnessError, match=r"storage dtype 'float64': use one of float32, float16"):
        check_storage_dtype("float64")
    with pytest.raises(HarnessError, match="storage dtype 'int8'"):
        extract(CountingPixels(), CountingSynthetic(), "train", EmbeddingStore("/nonexistent"),
                options(storage_dtype="int8"))


def entry_files(embeddings) -> dict[str, bytes]:
    root = Path(embeddings.meta["entry_dir"])
    return {name: (root / f"{name}.npy").read_bytes() for name in ("features", "labels", "ids")}


@pytest.mark.parametrize("storage_dtype", ["float32", "float16"])
def test_a_cache_key_given_is_not_computed_again(tmp_path, storage_dtype):
    data = CountingSynthetic(classes=4, per_class=10)
    key, _ = split_cache_key(CountingPixels(), data, "train", data.split("train"),
                             options(storage_dtype=storage_dtype))
    assert len(data.fingerprints) == 1  # as the runner's resume check does

    given, report = extract(CountingPixels(), data, "train", EmbeddingStore(tmp_path / "given"),
                            options(storage_dtype=storage_dtype), cache_key=key)
    assert len(data.fingerprints) == 1 and not report.cache_hit and report.key == key
    hit, report = extract(CountingPixels(), data, "train", EmbeddingStore(tmp_path / "given"),
                          options(storage_dtype=storage_dtype), cache_key=key)
    assert len(data.fingerprints) == 1 and report.cache_hit

    plain, report = extract(CountingPixels(), data, "train", EmbeddingStore(tmp_path / "plain"),
                            options(storage_dtype=storage_dtype))
    assert len(data.fingerprints) == 2 and report.key == key
    assert entry_files(given) == entry_files(plain) == entry_files(hit)
    varying = {"created", "extract_seconds", "meta_sha256", "entry_dir", "derived_dir"}
    assert {k: v for k, v in given.meta.items() if k not in varying} == \
        {k: v for k, v in plain.meta.items() if k not in varying}


def test_a_cache_key_of_other_arguments_is_refused(tmp_path):
    data = CountingSynthetic(classes=4, per_class=10)
    test_key, _ = split_cache_key(CountingPixels(), data, "test", data.split("test"), options())
    with pytest.raises(HarnessError, match="cache key"):
        extract(CountingPixels(), data, "train", EmbeddingStore(tmp_path), options(), cache_key=test_key)
    assert not list((tmp_path / "entries").glob("*"))  # nothing was cached under the wrong key


def test_rank_zero_opens_the_partial_directory_once(tmp_path, monkeypatch):
    opened = []
    real_init = shards.ShardedExtraction.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(kwargs.get("create", True))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(shards.ShardedExtraction, "__init__", counting_init)
    embeddings, report = extract(CountingPixels(), CountingSynthetic(classes=4, per_class=10), "train",
                                 EmbeddingStore(tmp_path), options())
    assert opened == [True] and report.items_encoded == 40 and embeddings.features.shape == (40, 3072)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_entry_files_are_hashed_while_written_not_read_back(tmp_path, monkeypatch, dtype):
    hashed_by_reading = []
    monkeypatch.setattr(store, "sha256_file", lambda path, *a: hashed_by_reading.append(path))
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 5)).astype(np.float32)
    labels, ids = np.arange(40) % 4, np.array([f"x/{i}" for i in range(40)])
    entry = EmbeddingStore(tmp_path).finish_chunks("h" * 32, features.shape, [features[:17], features[17:]],
                                                    labels, ids, {}, dtype=dtype)
    assert hashed_by_reading == []
    monkeypatch.undo()
    for name in ("features", "labels", "ids"):
        on_disk = (tmp_path / "entries" / ("h" * 32) / f"{name}.npy").read_bytes()
        assert entry.meta["files"][f"{name}.npy"] == {"size": len(on_disk),
                                                      "sha256": hashlib.sha256(on_disk).hexdigest()}
    assert EmbeddingStore(tmp_path).load("h" * 32) is not None  # the full hash check on load agrees
    np.testing.assert_array_equal(entry.features, features.astype(dtype))
