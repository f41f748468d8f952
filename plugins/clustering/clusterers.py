"""The clusterers of `clustering/umap-v2` (or a preset's `ClustererParams`) on one reduction and one clustering
seed, and their memory limits.

Each run returns labels or the reason there are none (skipped over the size or memory limit, or failed), with its
warnings and time, so that one clusterer failing never loses the others' numbers.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness.memory import format_bytes

from .protocol import DEFAULT_CLUSTERERS, QUADRATIC_CLUSTERERS, ClustererParams
from .ward_threshold import ward_by_silhouette

#: Bytes per N^2 that the quadratic clusterers need, so that a set too large is refused before it exhausts memory:
#: ward, scipy's N(N-1)/2 float64 distances and the working copy its nn-chain makes (8 N^2); affinity
#: propagation, its dense N x N float64 similarity, availability, responsibility and temporary matrices (32 N^2);
#: spectral (k-NN affinity, shift-invert ARPACK), as measured here (8.5 and 10.3 N^2 at N = 2,000 and 4,000).
QUADRATIC_BYTES_PER_PAIR = {"ward": 8, "spectral": 10, "affinity": 32}


@dataclass
class ClustererRun:
    """One clusterer on one seed: labels or why there are none, with its warnings and time."""

    labels: np.ndarray | None
    reason: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterJob:
    """What every clusterer of one clustering seed works on, and the limits it runs under."""

    reduced: np.ndarray  # the reduction of this seed
    k: int | None  # the number of classes (None: unlabelled)
    seed: int  # the clustering seed
    labelled: bool
    sample: np.ndarray | None  # the rows the silhouettes use (None: all)
    device: str
    budget: int  # memory budget in bytes
    max_n_quadratic: int
    params: ClustererParams = DEFAULT_CLUSTERERS  # the protocol's clusterer parameters


def capture(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, list[str], float]:
    """Run `fn`, recording its warnings (distinct messages) instead of letting them through, and its time."""
    start = time.perf_counter()
    error: BaseException | None = None
    result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a clusterer that fails is reported, the others still count
            error = exc
    messages: list[str] = []
    for w in caught:
        message = f"{w.category.__name__}: {w.message}"
        if message not in messages:
            messages.append(message)
    return result, error, messages, time.perf_counter() - start


def quadratic_memory_bytes(clusterer: str, n: int) -> int:
    """About how much memory `clusterer` needs on n items (0 for the clusterers that are not quadratic)."""
    return QUADRATIC_BYTES_PER_PAIR.get(clusterer, 0) * n * n


def largest_fitting_n(clusterer: str, budget: int) -> int:
    """The largest N (rounded down to a thousand where that leaves one) whose quadratic memory fits `budget`."""
    n = int(math.isqrt(budget // QUADRATIC_BYTES_PER_PAIR[clusterer]))
    return n // 1000 * 1000 if n >= 1000 else n


def _skip_reason(name: str, job: ClusterJob) -> str | None:
    """Why a quadratic clusterer does not run on this many items, or None."""
    n = job.reduced.shape[0]
    if name in QUADRATIC_CLUSTERERS and n > job.max_n_quadratic:
        return f"skipped: N={n} > max_n_quadratic={job.max_n_quadratic} (O(N^2) memory and time)"
    if name in QUADRATIC_CLUSTERERS and quadratic_memory_bytes(name, n) > job.budget:
        return (f"skipped: {name} needs about {format_bytes(quadratic_memory_bytes(name, n))} for "
                f"N={n} (O(N^2) memory), over the memory budget of {format_bytes(job.budget)}; "
                f"the option subsample={largest_fitting_n(name, job.budget)} or a larger "
                f"--memory-budget-mb would let it run")
    return None


def _fit_predict(name: str, job: ClusterJob, extra: dict[str, Any]) -> np.ndarray:
    """Cluster labels of `job.reduced` by clusterer `name` (-1: noise); unlabelled ward adds its cut to `extra`."""
    import sklearn.cluster

    reduced, k, seed, params = job.reduced, job.k, job.seed, job.params
    if name == "kmeans":
        return sklearn.cluster.KMeans(n_clusters=k, random_state=seed, **params.kmeans).fit_predict(reduced)
    if name == "ward" and job.labelled:
        return sklearn.cluster.AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(reduced)
    if name == "ward":
        labels, info = ward_by_silhouette(reduced, job.sample, job.device)
        extra.update(info)
        return labels
    if name == "hdbscan" and params.hdbscan_library == "sklearn":
        model = sklearn.cluster.HDBSCAN(max_cluster_size=params.hdbscan_max_cluster_size(reduced.shape[0]),
                                        **params.hdbscan)
        return model.fit_predict(reduced)
    if name == "hdbscan":
        import hdbscan

        return hdbscan.HDBSCAN(**params.hdbscan).fit_predict(np.asarray(reduced, dtype=np.float64))
    if name == "spectral":
        model = sklearn.cluster.SpectralClustering(
            n_clusters=k, random_state=seed,
            **{**params.spectral, "n_neighbors": min(params.spectral["n_neighbors"], reduced.shape[0] - 1)})
        return model.fit_predict(reduced)
    if name == "affinity":
        model = sklearn.cluster.AffinityPropagation(random_state=seed, **params.affinity)
        labels = model.fit_predict(reduced)
        if len(model.cluster_centers_indices_) == 0 or (labels < 0).all():
            raise RuntimeError(f"did not converge in {params.affinity['max_iter']} iterations")
        return labels
    raise AssertionError(name)


def run_clusterer(name: str, job: ClusterJob) -> ClustererRun:
    """Clusterer `name` on the job: its labels, or why there are none (skipped, failed)."""
    reason = _skip_reason(name, job)
    if reason is not None:
        return ClustererRun(None, reason)
    extra: dict[str, Any] = {}
    labels, error, messages, seconds = capture(lambda: _fit_predict(name, job, extra))
    if error is not None:
        return ClustererRun(None, f"failed: {type(error).__name__}: {error}", seconds, messages, extra)
    return ClustererRun(np.asarray(labels, dtype=np.int64), None, seconds, messages, extra)
