"""The extraction loop: the only place a model runs.

Items are decoded and transformed in DataLoader workers, encoded on the device in `inference_mode` (bf16
autocast on CUDA), and written in shards of `shard_size` items, so an interrupted run resumes from the shards
already on disk. When every shard is there, the store finishes the entry with one atomic rename.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from harness import distributed
from harness.distributed import Ranks, together
from harness.errors import BadItemError, HarnessError, NonFiniteEmbeddingError
from harness.device import default_workers, precision_for, resolve_device
from harness.files import writes_into
from harness.shards import ShardedExtraction
from harness.store import EmbeddingStore, cache_key
from harness.types import Dataset, DatasetSplit, Embeddings, Encoder

__all__ = ["DEFAULT_SHARD_SIZE", "LOCK_POLL_S", "STORAGE_DTYPES", "ExtractionOptions", "ExtractionReport",
           "ShardedExtraction", "dataset_fingerprint", "default_workers", "encoder_fingerprint", "extract",
           "precision_for", "resolve_device", "split_cache_key"]

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1024
#: How often (s) rank 0 retries the lock of a key another run is extracting, telling the other ranks each time.
LOCK_POLL_S = 10.0
#: How features may be stored in the cache: float16 halves the disk and page-cache size (evaluators compute in
#: float32 either way); the choice is part of the cache key.
STORAGE_DTYPES = ("float32", "float16")


@dataclass
class ExtractionOptions:
    device: str = "cpu"
    batch_size: int = 64
    workers: int | None = None  # None: chosen for the machine
    skip_bad_images: bool = False
    shard_size: int = DEFAULT_SHARD_SIZE
    progress: bool = True
    storage_dtype: str = "float32"


@dataclass
class ExtractionReport:
    """What getting one split's embeddings cost: zero `items_encoded` means a pure cache hit."""

    key: str
    cache_hit: bool
    items_encoded: int = 0
    items_resumed: int = 0
    forward_passes: int = 0
    seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)


def dataset_fingerprint(dataset: Dataset, split_name: str, split: DatasetSplit, skip_bad_images: bool) -> dict:
    info = dataset.info()
    return {"name": dataset.name, "revision": info.get("revision"), "split": split_name, "n": len(split),
            "items": split.fingerprint(), "skip_bad_images": skip_bad_images}


def encoder_fingerprint(encoder: Encoder, device: str) -> dict:
    # bf16 autocast changes the vectors slightly, so precision is part of the key.
    return {**encoder.fingerprint(), "precision": precision_for(device)}


class _Items:
    """Dataset adapter for the DataLoader: (index, tensor or None, label, error) so bad items reach the main
    process as data, where they are either reported or skipped."""

    def __init__(self, split: DatasetSplit, transform: Any) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[int, Any, int, str | None]:
        try:
            raw, label = self.split[index]
        except BadItemError as error:
            return index, None, -1, str(error)
        return index, self.transform(raw), int(label), None


def _collate(samples: list[tuple[int, Any, int, str | None]]) -> tuple[list[int], Any, list[int], list[tuple]]:
    import torch

    good = [s for s in samples if s[1] is not None]
    bad = [(s[0], s[3]) for s in samples if s[1] is None]
    batch = torch.stack([s[1] for s in good]) if good else None
    return [s[0] for s in good], batch, [s[2] for s in good], bad


def _batches(extraction: ShardedExtraction, shards: list[int], batch_size: int) -> Iterator[list[int]]:
    """Index batches that never straddle a shard boundary, so every shard closes on a batch end."""
    for shard in shards:
        start, stop = extraction.bounds(shard)
        for begin in range(start, stop, batch_size):
            yield list(range(begin, min(begin + batch_size, stop)))


def _share_entry(store: EmbeddingStore, key: str, ranks: Ranks, leaders_copy: Embeddings) -> Embeddings:
    """The entry rank 0 holds, opened on every rank."""
    def load() -> Embeddings:
        if ranks.leader:
            return leaders_copy
        # Rank 0 has just verified the files; the others check sizes and shapes only.
        loaded = store.load(key, check_hashes=False)
        if loaded is None:
            raise HarnessError(f"rank 0 has {store.entry_dir(key)} but this rank does not see it; "
                               f"--cache-dir must be one directory shared by every node")
        return loaded

    return together(ranks, "reading the finished entry", load)


def _load_everywhere(store: EmbeddingStore, key: str, ranks: Ranks) -> Embeddings | None:
    """The finished entry on every rank, or None on every rank. Rank 0 decides, so all ranks take the same path
    (and an error there, such as a cache it may not write to, stops every rank)."""
    cached = together(ranks, "opening the cache entry", lambda: store.load(key) if ranks.leader else None)
    if not ranks.broadcast(cached is not None):
        return None
    return _share_entry(store, key, ranks, cached)


def _acquire(store: EmbeddingStore, key: str, ranks: Ranks, what: str) -> Any:
    """Rank 0 takes the key's lock for the whole run (the other ranks write distinct shards under it), so an
    independent run extracting the same key waits, saying so; the lock on rank 0, None elsewhere. Polled, so
    that the other ranks never wait longer than one poll in a collective."""
    from filelock import FileLock, Timeout

    lock = None
    timeout = 0.0  # a first plain try, so that a wait is announced as soon as it begins
    while True:
        state: bool | str = False
        error: Exception | None = None
        if ranks.leader:
            try:
                if lock is None:
                    store.lock_path(key).parent.mkdir(parents=True, exist_ok=True)
                    lock = FileLock(str(store.lock_path(key)))
                lock.acquire(timeout=timeout)
                state = True
            except Timeout:
                state = False
            except Exception as exc:  # noqa: BLE001 - e.g. a read-only cache: raised here, told to the others
                error, state = exc, f"rank 0 cannot lock {store.lock_path(key)}: {exc}"
        state = ranks.broadcast(state)
        if error is not None:
            raise error  # as it is, so that writes_into can say what to do about it
        if isinstance(state, str):
            raise HarnessError(state)
        if state:
            return lock
        if ranks.leader and timeout == 0:
            log.info("another process is extracting %s into this cache (lock %s); waiting for it to finish", what,
                     store.lock_path(key))
        timeout = LOCK_POLL_S


def _narrowed(features: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """`features` rounded to `dtype` for storage; an error where a value does not fit (float16 ends at 65504)."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, which is reported below
        narrowed = features.astype(dtype)
    if not np.isfinite(narrowed).all():
        largest = float(np.abs(features).max())
        raise HarnessError(f"{what}: features up to {largest:.4g} do not fit {dtype} storage "
                           f"(largest {float(np.finfo(dtype).max):.4g}); use --storage-dtype float32")
    return narrowed


def split_cache_key(encoder: Encoder, dataset: Dataset, split_name: str, split: DatasetSplit,
                    options: ExtractionOptions) -> tuple[str, dict[str, Any]]:
    """The store key of one (encoder, dataset, split) and the fingerprints it hashes, without loading the model or
    running it: what `extract` looks up, and what a resumed run compares with the keys in existing records."""
    # Computed once per extraction: the dataset's may hash every file, the encoder's its weights.
    fingerprints = {"encoder_fingerprint": encoder_fingerprint(encoder, options.device),
                    "dataset_fingerprint": dataset_fingerprint(dataset, split_name, split, options.skip_bad_images)}
    if options.storage_dtype not in STORAGE_DTYPES:
        raise HarnessError(f"storage dtype {options.storage_dtype!r}: use one of {', '.join(STORAGE_DTYPES)}")
    if options.storage_dtype != "float32":  # only when asked, so that float32 entries keep their keys
        fingerprints["encoder_fingerprint"]["storage_dtype"] = options.storage_dtype
    return cache_key(fingerprints["encoder_fingerprint"], fingerprints["dataset_fingerprint"]), fingerprints


def extract(encoder: Encoder, dataset: Dataset, split_name: str, store: EmbeddingStore,
            options: ExtractionOptions, ranks: Ranks | None = None) -> tuple[Embeddings, ExtractionReport]:
    """The embeddings of one (encoder, dataset, split): from the cache, or extracted (resuming) and cached.

    Under torchrun every rank calls this with the same arguments: each encodes its own shards, rank 0 finishes
    the entry, and every rank returns it. `ranks` defaults to the process group this process belongs to."""
    ranks = ranks or distributed.current()
    what = f"{encoder.name} on {dataset.name}/{split_name}"

    def fingerprint() -> tuple[DatasetSplit, str, dict[str, Any]]:
        split = dataset.split(split_name)
        return (split, *split_cache_key(encoder, dataset, split_name, split, options))

    split, key, fingerprints = together(ranks, f"fingerprinting {what}", fingerprint)
    if ranks.distributed:
        keys = ranks.gather(key)
        if len(set(keys)) > 1:  # another model version, device type or file mtimes on some node
            raise HarnessError(f"the ranks disagree on what {what} is (cache keys by rank: {keys}); every node "
                               f"needs the same data (same files, sizes and mtimes), the same library versions "
                               f"and the same kind of device")
    # A full disk or a refused write anywhere in the cache is one clear error, not a numpy traceback.
    with writes_into(store.root, "embedding cache", "--cache-dir"):
        cached = _load_everywhere(store, key, ranks)
        if cached is not None:
            return cached, ExtractionReport(key, cache_hit=True)
        # One run extracts a key at a time; another one waiting for the lock then finds the finished entry.
        lock = _acquire(store, key, ranks, what)
        try:
            cached = _load_everywhere(store, key, ranks)
            if cached is not None:
                return cached, ExtractionReport(key, cache_hit=True)
            return _extract_locked(encoder, dataset, split_name, split, key, fingerprints, store, options, ranks)
        finally:
            if lock is not None:
                lock.release()


def _extract_locked(encoder: Encoder, dataset: Dataset, split_name: str, split: DatasetSplit, key: str,
                    fingerprints: dict[str, Any], store: EmbeddingStore, options: ExtractionOptions,
                    ranks: Ranks) -> tuple[Embeddings, ExtractionReport]:
    started = time.perf_counter()
    report = ExtractionReport(key, cache_hit=False)
    n = len(split)
    if n == 0:
        raise HarnessError(f"dataset {dataset.name!r} split {split_name!r} has no items")

    def plan() -> list[int] | None:
        # Rank 0 writes the plan and lists what is missing; the others then check the plan they see.
        if ranks.leader:
            extraction = ShardedExtraction(store.partial_dir(key), n, options.shard_size)
            return [s for s in range(extraction.count) if extraction.read(s, features=False) is None]
        return None

    todo = ranks.broadcast(together(ranks, "planning the extraction", plan))
    extraction = together(ranks, "checking the extraction plan", lambda: ShardedExtraction(
        store.partial_dir(key), n, options.shard_size, create=ranks.leader))
    report.items_resumed = n - sum(extraction.bounds(s)[1] - extraction.bounds(s)[0] for s in todo)
    if report.items_resumed and ranks.leader:
        log.info("resuming %s on %s/%s: %d of %d items already extracted", encoder.name, dataset.name, split_name,
                 report.items_resumed, n)

    # Shard i of those still to do goes to rank i % world_size: every shard has exactly one writer, the ranks get
    # equal shares even when a rerun finds an uneven set of shards done, and no item is padded or repeated.
    mine = todo[ranks.rank::ranks.world_size]
    written: list[int] = []
    counts = {"items": 0, "forward_passes": 0}
    shards = _encode_shards(encoder, dataset, split_name, split, extraction, mine, options, ranks, counts)

    def discard_if_non_finite(kinds: set[str]) -> None:
        # Shards already written came from the same broken encoder: keep none of them. Rank 0 removes them once
        # every rank has stopped writing (after the round), never while another rank is writing into them.
        if ranks.leader and NonFiniteEmbeddingError.__name__ in kinds:
            shutil.rmtree(extraction.directory, ignore_errors=True)

    what = f"extracting {encoder.name} on {dataset.name}/{split_name}"
    try:
        # One shard per rank per round, then the ranks compare notes: a rank that fails stops every rank within
        # one shard, and one that hangs is named by the barrier's timeout.
        for round_ in range(-(-len(todo) // ranks.world_size)):
            step = (lambda: written.append(next(shards))) if round_ < len(mine) else (lambda: None)
            together(ranks, what, step, on_failure=discard_if_non_finite)
    finally:
        shards.close()
    work = ranks.gather({"shards": written, **counts})
    report.items_encoded = sum(w["items"] for w in work)
    report.forward_passes = sum(w["forward_passes"] for w in work)
    if written:
        log.debug("rank %d of %d wrote shards %s of %s", ranks.rank, ranks.world_size, written, key)

    def finish() -> Embeddings | None:
        if not ranks.leader:
            return None
        report.seconds = time.perf_counter() - started
        by_rank = {str(rank): w["shards"] for rank, w in enumerate(work)}
        return _finish_entry(encoder, dataset, split_name, split, key, fingerprints, store, options, extraction,
                             report, {"world_size": ranks.world_size, "shards_written_by_rank": by_rank})

    embeddings = _share_entry(store, key, ranks, together(
        ranks, f"finishing {encoder.name} on {dataset.name}/{split_name}", finish))
    if ranks.leader:
        shutil.rmtree(extraction.directory, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    if report.items_encoded and ranks.leader:
        log.info("extracted %s on %s/%s: %d items in %.1f s (%.1f items/s)", encoder.name, dataset.name, split_name,
                 report.items_encoded, report.seconds, report.items_encoded / max(report.seconds, 1e-9))
    return embeddings, report


def _encode_shards(encoder: Encoder, dataset: Dataset, split_name: str, split: DatasetSplit,
                   extraction: ShardedExtraction, shards: list[int], options: ExtractionOptions, ranks: Ranks,
                   counts: dict[str, int]) -> Iterator[int]:
    """Encode `shards` in order, writing each one as soon as its last batch is done; yields each shard written."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if not shards:
        return
    if getattr(encoder, "_loaded_on", None) != options.device:  # train and test share one loaded model
        encoder.load(options.device)
        encoder._loaded_on = options.device  # type: ignore[attr-defined]
    device = options.device
    workers = default_workers(device) if options.workers is None else options.workers
    loader = DataLoader(_Items(split, encoder.transform), batch_sampler=list(_batches(extraction, shards,
                        options.batch_size)), num_workers=workers, collate_fn=_collate,
                        pin_memory=device.startswith("cuda"), persistent_workers=False)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext())
    memory_format = torch.channels_last if (encoder.channels_last and device.startswith("cuda")) else None
    total = sum(extraction.bounds(s)[1] - extraction.bounds(s)[0] for s in shards)
    desc = f"{encoder.name} | {dataset.name}/{split_name}" + (f" | rank 0 of {ranks.world_size}"
                                                              if ranks.distributed else "")
    bar = tqdm(total=total, unit="img", desc=desc, disable=not (options.progress and ranks.leader) or None,
               file=sys.stderr, dynamic_ncols=True)
    buffers: dict[int, dict[str, list]] = {}
    with torch.inference_mode(), autocast, bar:
        for indices, batch, labels, bad in loader:
            shard = (indices or [bad[0][0]])[0] // extraction.shard_size
            buffer = buffers.setdefault(shard, {"features": [], "labels": [], "indices": [], "skipped": []})
            for index, reason in bad:
                if not options.skip_bad_images:
                    raise BadItemError(split.item_id(index), f"{reason} (pass --skip-bad-images to skip and "
                                                             f"count such items instead)")
                buffer["skipped"].append((index, reason))
            if batch is not None:
                batch = batch.to(device, non_blocking=True)
                if memory_format is not None and batch.ndim == 4:
                    batch = batch.contiguous(memory_format=memory_format)
                output = encoder.encode(batch)
                counts["forward_passes"] += 1
                output = output.float()
                if output.ndim != 2 or output.shape[0] != len(indices):
                    raise HarnessError(f"encoder {encoder.name!r} returned shape {tuple(output.shape)} for a "
                                       f"batch of {len(indices)}; encode() must return (batch, dim)")
                finite = torch.isfinite(output).all(dim=1)
                if not bool(finite.all()):
                    first = indices[int((~finite).nonzero()[0, 0])]
                    # The shards written so far are removed too (`_extract_locked`, once every rank has stopped).
                    raise NonFiniteEmbeddingError(
                        f"encoder {encoder.name!r} produced NaN or inf for item {split.item_id(first)!r} of "
                        f"{dataset.name}/{split_name}; nothing of this extraction was cached")
                buffer["features"].append(output.cpu().numpy())
                buffer["labels"].extend(labels)
                buffer["indices"].extend(indices)
                counts["items"] += len(indices)
            bar.update(len(indices) + len(bad))
            start, stop = extraction.bounds(shard)
            if len(buffer["indices"]) + len(buffer["skipped"]) == stop - start:
                feats = (np.concatenate(buffer["features"]) if buffer["features"]
                         else np.zeros((0, 0), dtype=np.float32))
                extraction.write(shard, feats, np.asarray(buffer["labels"], dtype=np.int64),
                                 np.asarray(buffer["indices"], dtype=np.int64), buffer["skipped"])
                del buffers[shard]
                yield shard


def _finish_entry(encoder: Encoder, dataset: Dataset, split_name: str, split: DatasetSplit, key: str,
                  fingerprints: dict[str, Any], store: EmbeddingStore, options: ExtractionOptions,
                  extraction: ShardedExtraction, report: ExtractionReport, ranks_meta: dict[str, Any]) -> Embeddings:
    """Stream every shard, in order, into the finished entry: one shard's vectors in memory at a time."""
    summaries = []
    for shard in range(extraction.count):
        summary = extraction.read(shard, features=False)
        if summary is None:
            raise HarnessError(f"shard {shard} of {key} is missing or unreadable; the extraction did not finish "
                               f"(rerun to redo it)")
        summaries.append(summary)
    kept = [s for s in range(extraction.count) if len(summaries[s]["indices"])]
    dims = {int(summaries[s]["shape"][1]) for s in kept}
    if len(dims) != 1:
        raise HarnessError(f"encoder {encoder.name!r} gave no vectors, or vectors of different sizes {sorted(dims)}, "
                           f"for {dataset.name}/{split_name}")
    indices = np.concatenate([summaries[s]["indices"] for s in kept])
    labels = np.concatenate([summaries[s]["labels"] for s in kept])
    ids = np.array([split.item_id(int(i)) for i in indices], dtype=str)
    report.skipped = [{"id": split.item_id(int(i)), "reason": str(r)}
                      for a in summaries for i, r in zip(a["skipped"], a["skip_reasons"])]

    def rows() -> Iterator[np.ndarray]:
        for shard in kept:
            arrays = extraction.read(shard)
            if arrays is None:
                raise HarnessError(f"shard {shard} of {key} became unreadable while finishing; rerun to redo it")
            features = np.asarray(arrays["features"], dtype=np.float32)
            if options.storage_dtype != "float32":
                features = _narrowed(features, options.storage_dtype, f"{encoder.name} on {dataset.name}/{split_name}")
            yield features

    info = dataset.info()
    meta = {"encoder": encoder.name, **fingerprints, "dataset": dataset.name, "split": split_name,
            "class_names": info.get("class_names", []), "skipped": report.skipped,
            "device": options.device, "precision": precision_for(options.device),
            "extract_seconds": round(report.seconds, 3), "items_encoded_this_run": report.items_encoded,
            "ranks": ranks_meta,
            # Provenance known only once the model is loaded, kept so that cache hits can still report it.
            "encoder_info": encoder.info(), "parameters": encoder.parameter_count()}
    return store.finish_chunks(key, (len(indices), dims.pop()), rows(), labels, ids, meta,
                               dtype=np.dtype(options.storage_dtype))
