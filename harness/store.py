"""The embedding cache: each (encoder, dataset, split) is extracted once, then read memory-mapped.

Layout under the cache directory::

    entries/<key>/features.npy labels.npy ids.npy meta.json   finished entries, plain numpy files
    partial/<key>/plan.json shard-00000.npz ...                an extraction in progress (resumable)
    derived/<key>/                                             what evaluators derive (e.g. UMAP reductions)
    locks/<key>.lock                                           held while one process extracts that key

An entry becomes visible only by an atomic rename of a complete directory, and `meta.json` records each file's
size and sha256 (and its own checksum), so a truncated or edited entry is detected and recomputed, never used.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.files import atomic_file, remove_stale_temps, sha256_file, temp_path, write_json_atomic
from harness.types import Embeddings

log = logging.getLogger(__name__)

#: Bump when the on-disk format changes; part of every key, so old entries are simply misses.
STORE_FORMAT = 1
ARRAYS = ("features", "labels", "ids")
#: Entries up to this size are hash-checked on every load; larger ones by size and shape only (hashing gigabytes
#: at each run would cost more than it protects against).
HASH_CHECK_LIMIT_BYTES = 512 * 1024 * 1024


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def cache_key(encoder_fingerprint: dict[str, Any], dataset_fingerprint: dict[str, Any]) -> str:
    """The hash of everything that determines the vectors of one (encoder, dataset, split)."""
    payload = {"encoder": encoder_fingerprint, "dataset": dataset_fingerprint, "store_format": STORE_FORMAT}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]


def meta_checksum(meta: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in meta.items() if k != "meta_sha256"}).encode()).hexdigest()


@dataclass
class DamagedEntry(Exception):
    key: str
    reason: str


class EmbeddingStore:
    """Finished entries are read from here; extraction writes shards into it and finishes entries."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def entry_dir(self, key: str) -> Path:
        return self.root / "entries" / key

    def partial_dir(self, key: str) -> Path:
        return self.root / "partial" / key

    def derived_dir(self, key: str) -> Path:
        return self.root / "derived" / key

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    # -- reading -------------------------------------------------------------------------------------------------

    def load(self, key: str, check_hashes: bool = True) -> Embeddings | None:
        """The finished entry for `key`, memory-mapped; None on a miss. A damaged entry is removed (and logged).

        `check_hashes=False` skips re-hashing the files (sizes and shapes are still checked): for an entry this
        process has just written and hashed."""
        entry = self.entry_dir(key)
        if not entry.exists():
            return None
        try:
            return self._read_verified(key, entry, check_hashes)
        except DamagedEntry as damage:
            log.warning("embedding cache entry %s is damaged (%s); it will be extracted again", entry, damage.reason)
            self.discard(key)
            return None

    def _read_verified(self, key: str, entry: Path, check_hashes: bool) -> Embeddings:
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DamagedEntry(key, f"meta.json unreadable: {error}") from error
        if meta.get("meta_sha256") != meta_checksum(meta):
            raise DamagedEntry(key, "meta.json was modified after it was written")
        if meta.get("key") != key or meta.get("store_format") != STORE_FORMAT:
            raise DamagedEntry(key, "meta.json belongs to another key or format")
        arrays = {}
        check_hashes = check_hashes and sum(f["size"] for f in meta["files"].values()) <= HASH_CHECK_LIMIT_BYTES
        for name in ARRAYS:
            path = entry / f"{name}.npy"
            expected = meta["files"][f"{name}.npy"]
            if not path.is_file() or path.stat().st_size != expected["size"]:
                raise DamagedEntry(key, f"{name}.npy is missing or has the wrong size")
            if check_hashes and sha256_file(path) != expected["sha256"]:
                raise DamagedEntry(key, f"{name}.npy does not match its recorded sha256")
            try:
                arrays[name] = np.load(path, mmap_mode="r" if name == "features" else None, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise DamagedEntry(key, f"{name}.npy unreadable: {error}") from error
        if arrays["features"].shape != (meta["n"], meta["dim"]):
            raise DamagedEntry(key, f"features have shape {arrays['features'].shape}, meta says "
                                    f"({meta['n']}, {meta['dim']})")
        try:
            os.utime(entry / "meta.json")  # last use, for `harness cache` housekeeping
        except OSError:  # a read-only shared cache still serves its entries
            pass
        derived = self.derived_dir(key)
        return Embeddings(arrays["features"], arrays["labels"], arrays["ids"],
                          meta={**meta, "derived_dir": str(derived), "entry_dir": str(entry)})

    # -- writing -------------------------------------------------------------------------------------------------

    def finish_chunks(self, key: str, shape: tuple[int, int], chunks: Iterable[np.ndarray], labels: np.ndarray,
                      ids: np.ndarray, meta: dict[str, Any], dtype: Any = np.float32) -> Embeddings:
        """Write a complete entry next to its final place, then rename it into place atomically.

        The feature rows arrive as `chunks` (e.g. one extraction shard at a time) and are streamed into a `.npy`
        of `shape`, so finishing a 1.28 M x 768 entry never holds all of it in memory. The file is byte for byte
        what `np.save` of the concatenated rows writes. Every file is hashed while it is written, not read back."""
        entries = self.root / "entries"
        entries.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(entries)  # what a killed process was writing
        tmp = temp_path(entries / key)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            # Each file is hashed as it is written, never read back for it.
            files = {"features.npy": _write_rows(tmp / "features.npy", shape, chunks, np.dtype(dtype))}
            for name, array in (("labels", labels), ("ids", ids)):
                with atomic_file(tmp / f"{name}.npy") as handle:
                    hashing = _HashingWriter(handle)
                    np.save(hashing, array, allow_pickle=False)
                files[f"{name}.npy"] = hashing.summary()
            meta = {**meta, "key": key, "store_format": STORE_FORMAT, "n": int(shape[0]),
                    "dim": int(shape[1]), "dtype": str(np.dtype(dtype)), "files": files,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            meta["meta_sha256"] = meta_checksum(meta)
            write_json_atomic(tmp / "meta.json", meta)
            final = self.entry_dir(key)
            if final.exists():  # another process finished first; a damaged leftover is discarded by load()
                existing = self.load(key)
                if existing is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                    return existing
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        loaded = self.load(key, check_hashes=False)  # hashed a moment ago, while writing
        assert loaded is not None, f"entry {key} vanished right after it was written"
        return loaded

    def discard(self, key: str) -> None:
        """Remove an entry by renaming it away first, so no reader ever sees it half-deleted."""
        entry = self.entry_dir(key)
        if entry.exists():
            trash = temp_path(entry, "trash")
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)


class _HashingWriter:
    """A binary file opened for writing that hashes (sha256) and counts every byte written through it."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        data = memoryview(data)
        if not data.nbytes:  # e.g. the rows of a shard whose items were all skipped
            return 0
        data = data.cast("B")
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def summary(self) -> dict[str, Any]:
        """What meta.json records of the file: {"size", "sha256"}."""
        return {"size": self.size, "sha256": self.digest.hexdigest()}


def _write_rows(path: Path, shape: tuple[int, int], chunks: Iterable[np.ndarray],
                dtype: np.dtype) -> dict[str, Any]:
    """Stream rows into a new `.npy` file of `shape`, flushed to disk before the caller renames it; its size and
    sha256, computed from the bytes as they are written.

    The file is written in order (header, then each chunk's rows in C order, cast to `dtype`), its blocks
    reserved first, so a full disk is an error from `posix_fallocate` or `write`, never a crash."""
    shape = (int(shape[0]), int(shape[1]))
    header = io.BytesIO()  # what np.save writes before the data: the same call, on the same description
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    try:
        with open(path, "wb") as handle:
            _allocate(handle, header.tell() + shape[0] * shape[1] * dtype.itemsize)
            hashing = _HashingWriter(handle)
            hashing.write(header.getbuffer())
            filled = 0
            for chunk in chunks:
                if chunk.ndim != 2 or chunk.shape[1] != shape[1] or filled + len(chunk) > shape[0]:
                    raise ValueError(f"rows of shape {chunk.shape} do not fit rows {filled}.. of an array of "
                                     f"{shape}")
                hashing.write(np.ascontiguousarray(chunk, dtype=dtype))
                filled += len(chunk)
            if filled != shape[0]:
                raise ValueError(f"{filled} rows were given for an array of {shape[0]}")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:  # write() and fsync() name no file; writes_into needs one to say which directory
        if error.filename is None:
            error.filename = str(path)
        raise
    return hashing.summary()


def _allocate(handle: Any, size: int) -> None:
    """Reserve the disk blocks of a file about to be written, so that a full disk fails at once (ENOSPC) rather
    than after most of the rows are written."""
    if not hasattr(os, "posix_fallocate") or size == 0:  # macOS: no such call; fallocate refuses a length of 0
        return
    try:
        os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot: write as before
            return
        raise
