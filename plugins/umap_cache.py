"""Dimensionality reductions of one set of embeddings, computed once per (embeddings, method, seed, parameters).

A UMAP of a few thousand items costs far more than any clusterer run on it (see `benchmarks/bench_clustering.py`),
and every clusterer of `clustering/umap-v2` reads the same reduction; the 2-D layout for plots is another one.
`reduce()` therefore keeps each result

- in memory, for the life of the process (a small LRU bounded in bytes), and
- on disk, when the caller gives a directory: the harness passes `Embeddings.meta["derived_dir"]`, a directory
  keyed by the embedding cache key. Files are written through `harness.files` (a temporary name, flushed, then
  renamed), so a reader never sees half a file and a killed writer's leftover is recognised as stale like any
  other; a file that does not load, or whose shape or values are wrong, is recomputed and replaced, never used.

Both caches are keyed by the reduction's parameters, the library version (whose change alters the numbers) and a
hash of the feature bytes. The hash costs a few seconds per GB, little beside a UMAP of as many vectors (0.1 s
for 5,000 x 1,280 here, against 90 s for the UMAP), and it means that a derived directory which outlived a
re-extraction of its entry (the store's `discard` leaves `derived/<key>` in place) can never serve a stale
reduction; it also lets two `Embeddings` with the same vectors (the same set with shuffled labels, say) share one
reduction.

`stats` counts what happened (computed / memory hits / disk hits) so that tests and benchmarks can check that a
reduction was computed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import AtomicWrites, remove_stale_temps

#: Bump when the on-disk format or the meaning of a cached file changes.
CACHE_FORMAT = 1
#: The in-memory cache keeps at most this many bytes of reductions (least recently used go first).
MEMORY_BUDGET_BYTES = 512 * 2**20
#: Rows hashed per step (bounded memory for memory-mapped features).
_HASH_ROWS = 8192

METHODS = ("umap", "pca", "none")

_memory: OrderedDict[str, np.ndarray] = OrderedDict()
stats: dict[str, int] = {"computed": 0, "memory_hits": 0, "disk_hits": 0}


def clear_memory() -> None:
    """Forget the in-memory reductions (the disk cache stays); tests use it to force a disk read."""
    _memory.clear()


def reset_stats() -> None:
    for key in stats:
        stats[key] = 0


def features_digest(features: np.ndarray) -> str:
    """A content hash of (shape, dtype, bytes), read in row blocks so that a memory map is not copied whole."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((features.shape, str(features.dtype))).encode())
    for start in range(0, features.shape[0], _HASH_ROWS):
        h.update(np.ascontiguousarray(features[start:start + _HASH_ROWS]).tobytes())
    return h.hexdigest()


def import_umap() -> Any:
    """`import umap`, without its notice that TensorFlow (for ParametricUMAP, unused here) is missing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Tensorflow not installed", category=ImportWarning)
        import umap

    return umap


def effective_params(method: str, n_items: int, n_dims: int, n_components: int, seed: int,
                     n_neighbors: int = 30, min_dist: float = 0.0, metric: str = "euclidean") -> dict[str, Any]:
    """The parameters actually used, after clamping to what a set of `n_items` × `n_dims` allows.

    UMAP needs n_neighbors < N (it would clamp with a warning itself) and, for its spectral initialisation,
    n_components < N - 1; PCA cannot give more components than min(N, D). Recording the clamped values keeps the
    record honest for tiny sets.
    """
    if method not in METHODS:
        raise ValueError(f"unknown reduction {method!r}; one of {METHODS}")
    params: dict[str, Any] = {"method": method, "n_items": int(n_items), "n_dims": int(n_dims)}
    if method == "umap":
        umap = import_umap()
        params.update(n_components=int(max(1, min(n_components, n_items - 2))),
                      n_neighbors=int(min(n_neighbors, n_items - 1)), min_dist=float(min_dist), metric=metric,
                      seed=int(seed), umap_version=umap.__version__)
    elif method == "pca":
        import sklearn

        params.update(n_components=int(min(n_components, n_items, n_dims)), seed=int(seed),
                      sklearn_version=sklearn.__version__)
    else:
        params.update(n_components=int(n_dims))
    return params


def _file_name(params: dict[str, Any]) -> str:
    blob = json.dumps({**params, "format": CACHE_FORMAT}, sort_keys=True).encode()
    digest = hashlib.blake2b(blob, digest_size=8).hexdigest()
    seed = f"-seed{params['seed']}" if "seed" in params else ""
    return f"{params['method']}-{params['n_components']}d{seed}-{digest}.npy"


def _compute(features: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    method = params["method"]
    if method == "pca":
        from sklearn.decomposition import PCA

        # The full SVD is deterministic; `random_state` only matters to the randomized solver.
        pca = PCA(n_components=params["n_components"], svd_solver="full", random_state=params["seed"])
        return pca.fit_transform(np.asarray(features, dtype=np.float32)).astype(np.float32)
    with warnings.catch_warnings():
        # A fixed random_state makes UMAP single-threaded, as the protocol wants, and it says so every time.
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
        umap = import_umap()

        reducer = umap.UMAP(n_neighbors=params["n_neighbors"], n_components=params["n_components"],
                            min_dist=params["min_dist"], metric=params["metric"], random_state=params["seed"])
        return np.asarray(reducer.fit_transform(np.asarray(features, dtype=np.float32)), dtype=np.float32)


def _valid(array: Any, params: dict[str, Any]) -> bool:
    return (isinstance(array, np.ndarray) and array.dtype == np.float32
            and array.shape == (params["n_items"], params["n_components"]) and bool(np.isfinite(array).all()))


def _load(path: Path, params: dict[str, Any]) -> np.ndarray | None:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return array if _valid(array, params) else None


def _save_atomic(path: Path, array: np.ndarray, params: dict[str, Any]) -> None:
    """The reduction and its parameters, through the files module: temporary names that the stale-file cleanup
    (`harness.files.stale_temp_target`, used by `harness cache prune`) recognises, flushed, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)  # what a killed process was writing here
    with AtomicWrites() as writes:
        with writes.file(path) as handle:
            np.save(handle, array, allow_pickle=False)
        with writes.file(path.with_suffix(".json")) as handle:
            handle.write(json.dumps({**params, "format": CACHE_FORMAT}, indent=1, sort_keys=True).encode())


def _remember(key: str, array: np.ndarray) -> None:
    _memory[key] = array
    _memory.move_to_end(key)
    total = sum(a.nbytes for a in _memory.values())
    while total > MEMORY_BUDGET_BYTES and len(_memory) > 1:
        _, dropped = _memory.popitem(last=False)
        total -= dropped.nbytes


def reduce(features: np.ndarray, *, method: str = "umap", n_components: int = 50, seed: int = 0,
           cache_dir: str | os.PathLike[str] | None = None, n_neighbors: int = 30, min_dist: float = 0.0,
           metric: str = "euclidean", digest: str | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """`features` (N, D) -> (reduced (N, n) float32 read-only array, parameters used, where it came from).

    The source is "computed", "memory", "disk", or "identity" for `method="none"` (the features themselves).
    `cache_dir` is where reductions are kept on disk (None: in memory only). Pass `digest` (from
    `features_digest`) when reducing the same features several times, so that they are hashed once.
    """
    n_items, n_dims = features.shape
    params = effective_params(method, n_items, n_dims, n_components, seed, n_neighbors, min_dist, metric)
    if method == "none":
        # Nothing to compute, and caching would only duplicate the features.
        array = np.asarray(features, dtype=np.float32).view()
        array.setflags(write=False)
        return array, params, "identity"
    params["features_digest"] = digest or features_digest(features)
    name = _file_name(params)

    if name in _memory:
        _memory.move_to_end(name)
        stats["memory_hits"] += 1
        return _memory[name], params, "memory"

    path = Path(cache_dir, "reductions", name) if cache_dir is not None else None
    if path is not None and path.exists():
        array = _load(path, params)
        if array is not None:
            array.setflags(write=False)
            _remember(name, array)
            stats["disk_hits"] += 1
            return array, params, "disk"

    array = np.ascontiguousarray(_compute(features, params))
    if not _valid(array, params):
        raise FloatingPointError(f"{method} reduction gave non-finite values or a wrong shape {array.shape}")
    stats["computed"] += 1
    if path is not None:
        _save_atomic(path, array, params)
    array.setflags(write=False)
    _remember(name, array)
    return array, params, "computed"
