"""float16 storage of cached features: half the disk, another cache key and row, and its effect on accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.extract import _narrowed
from harness.plugin_manager import Plugins
from harness.runner import RunConfig, run
from harness.store import EmbeddingStore
from harness.types import Embeddings, ExecutionSettings
from harness.plugins.knn import KNN
from harness.plugins.linear_probe import LinearProbe

CPU = ExecutionSettings(device="cpu")

#: The most float16 rounding may move a top-1 accuracy on cifar10-mini (fraction: 0.005 = half a point).
MAX_EFFECT = 0.005


def rounded(embeddings: Embeddings, tmp_path, name: str) -> Embeddings:
    """The same embeddings as the store would hand them out with float16 storage: a float16 memory map."""
    np.save(tmp_path / f"{name}.npy", np.asarray(embeddings.features).astype(np.float16))
    return Embeddings(np.load(tmp_path / f"{name}.npy", mmap_mode="r"), embeddings.labels, embeddings.ids,
                      embeddings.meta)


@pytest.mark.slow  # the real offline default (`cifar_embeddings`)
def test_float16_storage_moves_knn_and_linear_top1_by_less_than_half_a_point(cifar_embeddings, tmp_path):
    train, test = cifar_embeddings
    train16, test16 = rounded(train, tmp_path, "train"), rounded(test, tmp_path, "test")
    assert train16.features.dtype == np.float16
    relative = np.abs(train16.features.astype(np.float32) - train.features).max() / np.abs(train.features).max()
    assert 0 < relative < 1e-3  # rounded, not truncated to nothing
    effects = {}
    for name, evaluator in (("knn", KNN()), ("linear", LinearProbe())):
        full = evaluator.evaluate(train, test, seed=0, settings=CPU)
        half = evaluator.evaluate(train16, test16, seed=0, settings=CPU)
        changed = int((full.predictions["prediction"] != half.predictions["prediction"]).sum())
        effects[name] = (full.main_score, half.main_score, changed)
        assert abs(half.main_score - full.main_score) <= MAX_EFFECT, effects
    print("\nfloat16 storage on cifar10-mini (efficientnet_lite0), top-1 float32 -> float16 (predictions changed):",
          ", ".join(f"{n} {a:.4f} -> {b:.4f} ({c} of {len(test.ids)})" for n, (a, b, c) in effects.items()))


def test_float16_storage_through_the_runner(tmp_path):
    cache = tmp_path / "cache"
    runs = {}
    for dtype in ("float32", "float16"):
        config = RunConfig(encoders=["pixels"], datasets=["synthetic"], evaluators=["knn"], device="cpu",
                           results_dir=tmp_path / "results", cache_dir=cache, progress=False, storage_dtype=dtype)
        runs[dtype] = run(config, Plugins(entry_points=False))
    store = EmbeddingStore(cache)
    r32, r16 = runs["float32"].records[0], runs["float16"].records[0]
    assert r16["encoder"]["name"] == "pixels[storage=float16]" and r32["encoder"]["name"] == "pixels"
    assert r16["cell"] != r32["cell"]  # another row: rounded features are another measurement
    for split in ("train", "test"):
        assert r16["cache_keys"][split] != r32["cache_keys"][split]
        e32, e16 = store.load(r32["cache_keys"][split]), store.load(r16["cache_keys"][split])
        assert e32.features.dtype == np.float32 and e16.features.dtype == np.float16
        assert e16.meta["dtype"] == "float16"
        np.testing.assert_array_equal(e16.features, np.asarray(e32.features).astype(np.float16))
        size32 = (store.entry_dir(r32["cache_keys"][split]) / "features.npy").stat().st_size
        size16 = (store.entry_dir(r16["cache_keys"][split]) / "features.npy").stat().st_size
        assert size16 - 128 == (size32 - 128) // 2  # the .npy header is 128 bytes; the data is half
    assert abs(r16["main_score"] - r32["main_score"]) <= 0.02
    with pytest.raises(HarnessError, match="storage dtype"):
        run(RunConfig(encoders=["pixels"], datasets=["synthetic"], evaluators=["knn"], device="cpu",
                      results_dir=tmp_path / "r", cache_dir=cache, progress=False, storage_dtype="int8"),
            Plugins(entry_points=False))


def test_features_beyond_float16_range_are_an_error_not_inf():
    with pytest.raises(HarnessError, match="do not fit float16.*--storage-dtype float32"):
        _narrowed(np.array([[1.0, 7e4]], dtype=np.float32), "float16", "enc on set/train")
    np.testing.assert_array_equal(_narrowed(np.array([[1.0, -2.5]], dtype=np.float32), "float16", "x"),
                                  np.array([[1.0, -2.5]], dtype=np.float16))
