"""What `clustering/umap-v2` costs, stage by stage, and what sharing one UMAP across five clusterers saves.

Synthetic features (default 5,000 x 1,280, 100 classes: Gaussian class centres plus isotropic noise five times
their spread; at three times every clusterer still finds the classes exactly, at five AMI is about 0.25 and the
clusterers disagree) go through `ClusteringEvaluator` with one seed. The
script counts the UMAP fits by wrapping `umap.UMAP.fit_transform`, prints the time of the UMAP and of each
clusterer, and compares with what a user would otherwise do: one UMAP per clusterer (each script of a typical
pipeline reduces the features again). A second evaluation of the same features shows the cached path.

    python benchmarks/bench_clustering.py [--n 5000] [--dim 1280] [--classes 100] [--noise 5.0]

UMAP import and numba compilation (~20 s in a fresh process) are paid by a warm-up on a tiny set first, so they
are not charged to the first stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness_import import ensure_harness  # noqa: E402

ensure_harness()  # the installed harness, else the checkout laid out as installed

from harness.types import Embeddings, ExecutionSettings  # noqa: E402
from harness.plugins import umap_cache  # noqa: E402
from harness.plugins.clustering import ClusteringEvaluator  # noqa: E402

CPU = ExecutionSettings(device="cpu")


def synthetic(n: int, dim: int, classes: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    features = centres[labels] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return features.astype(np.float32), labels.astype(np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--noise", type=float, default=5.0, help="noise std relative to the class-centre std")
    args = parser.parse_args(argv)

    umap = umap_cache.import_umap()
    fits: list[tuple[int, float]] = []
    original = umap.UMAP.fit_transform

    def counted(reducer: Any, *a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        out = original(reducer, *a, **k)
        fits.append((reducer.n_components, time.perf_counter() - start))
        return out

    umap.UMAP.fit_transform = counted

    warm_x, warm_y = synthetic(200, 16, 4, 0.5, seed=1)
    start = time.perf_counter()
    ClusteringEvaluator(n_seeds=1).evaluate(None, Embeddings(warm_x, warm_y, np.arange(200).astype(str)),
                                            seed=0, settings=CPU)
    print(f"warm-up (imports, numba compilation, tiny set): {time.perf_counter() - start:.1f} s")
    fits.clear()

    features, labels = synthetic(args.n, args.dim, args.classes, args.noise)
    ids = np.array([f"item/{i}" for i in range(args.n)])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"features {args.n} x {args.dim}, {args.classes} classes, noise {args.noise}; {cores} CPU cores")

    with tempfile.TemporaryDirectory() as derived:
        test = Embeddings(features, labels, ids, meta={"derived_dir": derived})
        start = time.perf_counter()
        result = ClusteringEvaluator(n_seeds=1).evaluate(None, test, seed=0, settings=CPU)
        first = time.perf_counter() - start
        cold_fits = list(fits)
        fits.clear()
        umap_cache.clear_memory()
        start = time.perf_counter()
        again = ClusteringEvaluator(n_seeds=1).evaluate(None, test, seed=0, settings=CPU)
        second = time.perf_counter() - start

    seconds = result.metrics["runtime"]["seconds"]
    umap50 = [t for c, t in cold_fits if c != 2]
    umap2 = [t for c, t in cold_fits if c == 2]
    clusterers = result.metrics["clusterers"]
    print(f"\nUMAP fits in the first evaluation: {len(umap50)} x 50-D (shared by {len(clusterers)} clusterers) "
          f"+ {len(umap2)} x 2-D layout")
    print(f"{'stage':<28}{'seconds':>10}{'x UMAP':>9}   result")
    umap_s = seconds["reduce"][0]
    print(f"{'UMAP 50-D (once)':<28}{umap_s:>10.2f}{1.0:>9.2f}")
    mean = result.metrics["mean"]
    for c in clusterers:
        t = seconds[c][0]
        what = (f"AMI {mean[f'{c}.ami']:.3f}, {mean[f'{c}.n_clusters']:.0f} clusters"
                if mean.get(f"{c}.ami") is not None else result.metrics["skipped"].get(c, "no labels"))
        print(f"{c:<28}{t:>10.2f}{t / umap_s:>9.3f}   {what}")
    print(f"{'silhouettes, UMAP space':<28}{seconds['silhouette_umap'][0]:>10.2f}")
    print(f"{'silhouettes, original space':<28}{seconds['silhouette_orig']:>10.2f}")
    print(f"{'UMAP 2-D layout for plots':<28}{seconds['umap2d']:>10.2f}")
    print(f"{'hash of the features':<28}{seconds['digest']:>10.2f}")
    cluster_total = sum(seconds[c][0] for c in clusterers)
    shared = umap_s + cluster_total
    naive = len(clusterers) * umap_s + cluster_total
    print(f"\nfive clusterers, one shared UMAP:   {shared:8.1f} s")
    print(f"five clusterers, one UMAP each:     {naive:8.1f} s   ({naive / shared:.1f}x)")
    print(f"whole evaluation, cold:             {first:8.1f} s")
    print(f"whole evaluation, UMAPs from disk:  {second:8.1f} s   (UMAP fits: {len(fits)}, sources "
          f"{again.metrics['runtime']['reduction_source']})")
    print(f"main score ward.ami = {result.main_score:.4f}")


if __name__ == "__main__":
    main()
