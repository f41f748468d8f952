"""The embedding store: extracted once, then read from the cache; bad items named or skipped.

Interruptions, damaged entries and shards, NaN output: tests/test_faults.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import BadItemError
from harness.extract import ExtractionOptions, extract
from harness.runner import RunConfig, run
from harness.store import EmbeddingStore
from harness.plugins.imagefolder import ImageFolder
from harness_test_support.helpers import CountingPixels, EncoderPlugin
from harness.plugins.synthetic import Synthetic


def options(**kw):
    return ExtractionOptions(**{"device": "cpu", "batch_size": 8, "shard_size": 16, "progress": False, **kw})


def dataset():
    data = Synthetic(classes=4, per_class=20)  # 80 items per split: 5 shards of 16
    data.name = "synthetic"
    return data


def test_second_extraction_is_a_cache_hit_with_no_forward_pass(tmp_path):
    store = EmbeddingStore(tmp_path)
    encoder = CountingPixels()
    first, report = extract(encoder, dataset(), "train", store, options())
    assert not report.cache_hit and report.items_encoded == 80 and encoder.calls == 10
    again, report = extract(encoder, dataset(), "train", store, options())
    assert report.cache_hit and report.forward_passes == 0 and encoder.calls == 10
    np.testing.assert_array_equal(again.features, first.features)
    assert isinstance(again.features, np.memmap) and not again.features.flags.writeable
    assert (tmp_path / "entries" / report.key / "features.npy").is_file()
    assert not (tmp_path / "partial" / report.key).exists()


def write_image_folder(root: Path, corrupt: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 4)):
        for label, cls in enumerate(("dark", "light")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                base = 40 if label == 0 else 200
                pixels = np.clip(base + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    if corrupt:
        (root / "test" / "light" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "images", corrupt=True)
    data = ImageFolder(root)
    data.name = f"imagefolder:{root}"
    store = EmbeddingStore(tmp_path / "cache")
    with pytest.raises(BadItemError, match=r"test/light/2\.png.*--skip-bad-images"):
        extract(CountingPixels(), data, "test", store, options(batch_size=3, shard_size=4))
    assert not list((tmp_path / "cache" / "entries").glob("*"))
    embeddings, report = extract(CountingPixels(), data, "test", store,
                                 options(batch_size=3, shard_size=4, skip_bad_images=True))
    assert embeddings.features.shape == (7, 3072)
    assert [s["id"] for s in report.skipped] == ["test/light/2.png"]
    assert "test/light/2.png" in report.skipped[0]["reason"]
    assert "test/light/2.png" not in set(embeddings.ids.tolist())


def test_a_skipped_image_inside_a_piece_is_kept_across_an_interruption(tmp_path):
    """Pieces (a shard saved as it goes) hold the items skipped in them too: an interrupted extraction resumed from
    pieces gives the entry an uninterrupted one gives, skipped item included."""
    root = write_image_folder(tmp_path / "images", corrupt=True)  # test/light/2.png (item 6 of 8) is corrupt
    (root / "test" / "dark" / "1.png").write_bytes(b"not an image")  # item 1: in the first piece
    data = ImageFolder(root)
    data.name = f"imagefolder:{root}"
    pieces = options(batch_size=3, shard_size=1024, skip_bad_images=True, piece_every_s=0.0)
    reference, _ = extract(CountingPixels(), data, "test", EmbeddingStore(tmp_path / "ref"), pieces)
    store = EmbeddingStore(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        extract(CountingPixels(fail_after=2), data, "test", store, pieces)  # batches 0-2 and 3-5 saved as pieces
    assert sorted(p.name for p in (tmp_path / "cache" / "partial").rglob("piece-*.npz")) == [
        "piece-00000-0000000000-0000000003.npz", "piece-00000-0000000003-0000000006.npz"]
    resumed, report = extract(CountingPixels(), data, "test", store, pieces)
    assert report.items_resumed == 6
    assert [s["id"] for s in report.skipped] == ["test/dark/1.png", "test/light/2.png"]
    np.testing.assert_array_equal(resumed.features, reference.features)
    np.testing.assert_array_equal(resumed.ids, reference.ids)


def test_run_extracts_each_split_once_and_a_rerun_runs_no_forward_pass(tmp_path, harness_plugins):
    encoder = CountingPixels()
    plugins = harness_plugins(EncoderPlugin("counting-pixels", lambda: encoder))
    config = RunConfig(encoders=["counting-pixels"], datasets=["synthetic"], evaluators=["knn"],
                       results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", batch_size=16,
                       progress=False)
    first = run(config, plugins)
    assert first.items_encoded == 2 * 96 and encoder.calls == 12 and not first.failures
    second = run(config, plugins)
    assert second.forward_passes == 0 and encoder.calls == 12
    assert second.records[0]["main_score"] == first.records[0]["main_score"]


def test_entry_streamed_from_chunks_is_byte_for_byte_what_np_save_writes(tmp_path):
    import hashlib
    import io

    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 7)).astype(np.float32)
    labels, ids = np.arange(50) % 3, np.array([f"item/{i}" for i in range(50)])
    chunks = [features[:13], features[13:13], features[13:]]  # uneven, one empty, as shards with skipped items
    entry = EmbeddingStore(tmp_path).finish_chunks("k" * 32, features.shape, iter(chunks), labels, ids, {})
    expected = io.BytesIO()
    np.save(expected, features)  # what finishing from one in-memory array wrote before streaming
    written = (tmp_path / "entries" / ("k" * 32) / "features.npy").read_bytes()
    assert written == expected.getvalue()
    assert entry.meta["files"]["features.npy"]["sha256"] == hashlib.sha256(expected.getvalue()).hexdigest()
    np.testing.assert_array_equal(entry.features, features)
    np.testing.assert_array_equal(entry.ids, ids)
    with pytest.raises(ValueError, match="49 rows were given for an array of 50"):
        EmbeddingStore(tmp_path / "short").finish_chunks("s" * 32, (50, 7), [features[:49]], labels, ids, {})
    assert not list((tmp_path / "short" / "entries").iterdir())  # nothing half-written is left behind
