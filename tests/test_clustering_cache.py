"""The reductions cache writes through `harness.files`: a killed write leaves a temporary that the stale-file
cleanup (`harness cache prune`, and the next write into the directory) recognises and removes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.files import stale_temp_target
from harness.plugins import umap_cache

KILLED_WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from harness.plugins import umap_cache

    real_save = np.save

    def save_then_die(handle, array, **kwargs):
        real_save(handle, array, **kwargs)
        handle.flush()
        os._exit(9)  # as a SIGKILL: no finally, no cleanup

    np.save = save_then_die
    umap_cache.reduce(np.load(sys.argv[1]), method="pca", n_components=4, seed=0, cache_dir=sys.argv[2])
""")


@pytest.mark.slow  # a writer process, killed mid-write
def test_a_killed_reduction_write_leaves_a_temporary_the_cleanup_recognises(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    np.save(tmp_path / "features.npy", features)
    cache_dir = tmp_path / "derived"
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "features.npy"), str(cache_dir)])
    assert child.returncode == 9

    reductions = cache_dir / "reductions"
    leftovers = sorted(p.name for p in reductions.iterdir())
    assert len(leftovers) == 1 and leftovers[0].startswith(".pca-4d-seed0-")  # nothing under a real name
    target = stale_temp_target(leftovers[0])  # the files module's parser, which `harness cache prune` uses
    assert target is not None and target.startswith("pca-4d-seed0-") and target.endswith(".npy")

    umap_cache.clear_memory()
    reduced, params, source = umap_cache.reduce(features, method="pca", n_components=4, seed=0,
                                                cache_dir=cache_dir)
    assert source == "computed" and reduced.shape == (40, 4)
    names = sorted(p.name for p in reductions.iterdir())
    assert names == sorted([target, target[:-len(".npy")] + ".json"])  # the leftover is gone, the new files are in place
    umap_cache.clear_memory()
    again, _, source = umap_cache.reduce(features, method="pca", n_components=4, seed=0, cache_dir=cache_dir)
    assert source == "disk" and np.array_equal(again, reduced)
