"""The extraction loop: the only place a model runs.

Items are decoded and transformed in DataLoader workers, encoded on the device in `inference_mode` (bf16
autocast on CUDA), and written in shards of `shard_size` items, so an interrupted run resumes from the shards
already on disk. When every shard is there, the store finishes the entry with one atomic rename.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from harness import distributed
from harness.distributed import Ranks, together
from harness.errors import BadItemError, HarnessError, NonFiniteEmbeddingError
from harness.device import default_workers, precision_for, resolve_device
from harness.files import writes_into
from harness.progress import Progress
from harness.shards import ShardedExtraction
from harness.store import EmbeddingStore
from harness.store import cache_key as store_key  # `cache_key` is extract()'s argument
from harness.types import Dataset, DatasetSplit, Embeddings, Encoder

__all__ = ["DEFAULT_SHARD_SIZE", "LOCK_POLL_S", "STORAGE_DTYPES", "ExtractionOptions", "ExtractionReport",
           "ShardedExtraction", "SplitJob", "check_storage_dtype", "dataset_fingerprint", "default_workers",
           "encoder_fingerprint", "extract", "precision_for", "resolve_device", "split_cache_key"]

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1024
DEFAULT_PIECE_EVERY_S = 15.0
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
    #: A shard still unfinished after this many seconds is saved in pieces (`harness.shards`, checked after each
    #: batch), so that Ctrl-C loses about this much work and a batch or two (those in flight), on a slow CPU as on
    #: a fast GPU (where shards finish first).
    piece_every_s: float = DEFAULT_PIECE_EVERY_S
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


def check_storage_dtype(dtype: str) -> None:
    """Raise a HarnessError unless `dtype` is one of STORAGE_DTYPES."""
    if dtype not in STORAGE_DTYPES:
        raise HarnessError(f"storage dtype {dtype!r}: use one of {', '.join(STORAGE_DTYPES)}")


@dataclass
class SplitJob:
    """One (encoder, dataset, split) being extracted into `store` under `key`, by this process among `ranks`.

    `fingerprints` are what the key hashes (recorded in the entry's meta); None when a key was given whose
    fingerprints this process does not remember, until `entry_fingerprints` computes them."""

    encoder: Encoder
    dataset: Dataset
    split_name: str
    split: DatasetSplit
    key: str
    fingerprints: dict[str, Any] | None
    store: EmbeddingStore
    options: ExtractionOptions
    ranks: Ranks

    @property
    def what(self) -> str:
        return f"{self.encoder.name} on {self.dataset.name}/{self.split_name}"


def dataset_fingerprint(dataset: Dataset, split_name: str, split: DatasetSplit, skip_bad_images: bool) -> dict:
    info = dataset.info()
    return {"name": dataset.name, "revision": info.get("revision"), "split": split_name, "n": len(split),
            "items": split.fingerprint(), "skip_bad_images": skip_bad_images}


def encoder_fingerprint(encoder: Encoder, device: str) -> dict:
    # bf16 autocast changes the vectors slightly, so precision is part of the key.
    return {**encoder.fingerprint(), "precision": precision_for(device)}


#: The fingerprints of the keys `split_cache_key` computed lately in this process, by key, so that `extract`
#: given such a key (`cache_key=`) records them in the entry without fingerprinting the split again.
_RECENT_FINGERPRINTS: OrderedDict[str, dict[str, Any]] = OrderedDict()
_RECENT_LIMIT = 256


def split_cache_key(encoder: Encoder, dataset: Dataset, split_name: str, split: DatasetSplit,
                    options: ExtractionOptions) -> tuple[str, dict[str, Any]]:
    """The store key of one (encoder, dataset, split) and the fingerprints it hashes, without loading the model or
    running it: what `extract` looks up, and what a resumed run compares with the keys in existing records."""
    # Computed once per extraction: the dataset's may hash every file, the encoder's its weights.
    fingerprints = {"encoder_fingerprint": encoder_fingerprint(encoder, options.device),
                    "dataset_fingerprint": dataset_fingerprint(dataset, split_name, split, options.skip_bad_images)}
    check_storage_dtype(options.storage_dtype)
    if options.storage_dtype != "float32":  # only when asked, so that float32 entries keep their keys
        fingerprints["encoder_fingerprint"]["storage_dtype"] = options.storage_dtype
    key = store_key(fingerprints["encoder_fingerprint"], fingerprints["dataset_fingerprint"])
    _RECENT_FINGERPRINTS[key] = copy.deepcopy(fingerprints)
    _RECENT_FINGERPRINTS.move_to_end(key)
    while len(_RECENT_FINGERPRINTS) > _RECENT_LIMIT:
        _RECENT_FINGERPRINTS.popitem(last=False)
    return key, fingerprints


def _remembered_fingerprints(job: SplitJob) -> dict[str, Any] | None:
    """The fingerprints `split_cache_key` gave `job.key` in this process, if it did; a HarnessError when what can
    be checked without fingerprinting the split again (dataset, split, size, options) says they are another's."""
    remembered = _RECENT_FINGERPRINTS.get(job.key)
    if remembered is None:
        return None
    dataset, encoder = remembered["dataset_fingerprint"], remembered["encoder_fingerprint"]
    expected = {"name": job.dataset.name, "split": job.split_name, "n": len(job.split),
                "skip_bad_images": job.options.skip_bad_images}
    if {k: dataset.get(k) for k in expected} != expected or \
            encoder.get("precision") != precision_for(job.options.device) or \
            encoder.get("storage_dtype", "float32") != job.options.storage_dtype:
        raise HarnessError(f"{job.what}: the cache key given ({job.key}) was computed for other arguments "
                           f"(dataset {dataset.get('name')}/{dataset.get('split')})")
    return copy.deepcopy(remembered)


def entry_fingerprints(job: SplitJob) -> dict[str, Any]:
    """The fingerprints `job.key` hashes, for the entry's meta: remembered from `split_cache_key` in this process,
    else computed (once, and then they must give that key)."""
    if job.fingerprints is None:
        key, job.fingerprints = split_cache_key(job.encoder, job.dataset, job.split_name, job.split, job.options)
        if key != job.key:
            raise HarnessError(f"{job.what}: the cache key given ({job.key}) is not the one its fingerprints give "
                               f"now ({key}); the data or the encoder changed since it was computed")
    return job.fingerprints


def extract(encoder: Encoder, dataset: Dataset, split_name: str, store: EmbeddingStore,
            options: ExtractionOptions, ranks: Ranks | None = None, *,
            cache_key: str | None = None) -> tuple[Embeddings, ExtractionReport]:
    """The embeddings of one (encoder, dataset, split): from the cache, or extracted (resuming) and cached.

    Under torchrun every rank calls this with the same arguments: each encodes its own shards, rank 0 finishes
    the entry, and every rank returns it. `ranks` defaults to the process group this process belongs to.
    `cache_key` is the key `split_cache_key` already gave for these arguments: the split is then not
    fingerprinted again (that may hash every file)."""
    ranks = ranks or distributed.current()
    what = f"{encoder.name} on {dataset.name}/{split_name}"

    def fingerprint() -> SplitJob:
        split = dataset.split(split_name)
        check_storage_dtype(options.storage_dtype)
        if cache_key is None:
            return SplitJob(encoder, dataset, split_name, split, *split_cache_key(
                encoder, dataset, split_name, split, options), store=store, options=options, ranks=ranks)
        job = SplitJob(encoder, dataset, split_name, split, cache_key, None, store, options, ranks)
        job.fingerprints = _remembered_fingerprints(job)  # else computed if the entry must be written
        return job

    job = together(ranks, f"fingerprinting {what}", fingerprint)
    if ranks.distributed:
        keys = ranks.gather(job.key)
        if len(set(keys)) > 1:  # another model version, device type or file mtimes on some node
            raise HarnessError(f"the ranks disagree on what {what} is (cache keys by rank: {keys}); every node "
                               f"needs the same data (same files, sizes and mtimes), the same library versions "
                               f"and the same kind of device")
    # A full disk or a refused write anywhere in the cache is one clear error, not a numpy traceback.
    with writes_into(store.root, "embedding cache", "--cache-dir"):
        return _cached_or_extracted(job)


def _cached_or_extracted(job: SplitJob) -> tuple[Embeddings, ExtractionReport]:
    cached = _load_everywhere(job.store, job.key, job.ranks)
    if cached is not None:
        return cached, ExtractionReport(job.key, cache_hit=True)
    # One run extracts a key at a time; another one waiting for the lock then finds the finished entry.
    lock = _acquire(job.store, job.key, job.ranks, job.what)
    try:
        cached = _load_everywhere(job.store, job.key, job.ranks)
        if cached is not None:
            return cached, ExtractionReport(job.key, cache_hit=True)
        return _extract_locked(job)
    finally:
        if lock is not None:
            lock.release()


class _Items:
    """Dataset adapter for the DataLoader: (index, tensor or None, label, error) so bad items reach the main
    process as data, where they are either reported or skipped."""

    def __init__(self, split: DatasetSplit, transform: Any, encoder: str = "the encoder") -> None:
        self.split = split
        self.transform = transform
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[int, Any, int, str | None]:
        try:
            raw, label = self.split[index]
        except BadItemError as error:
            return index, None, -1, str(error)
        item = self.transform(raw)
        if not hasattr(item, "shape") or not hasattr(item, "dtype"):  # a plugin's transform that stops too early
            raise HarnessError(f"the transform of encoder {self.encoder!r} returned {type(item).__module__}."
                               f"{type(item).__qualname__}, not a tensor: end it with a step that makes one (e.g. "
                               f"torchvision.transforms.ToTensor()), as the encoder's encode() gets a stacked batch")
        return index, item, int(label), None


def _collate(samples: list[tuple[int, Any, int, str | None]]) -> tuple[list[int], Any, list[int], list[tuple]]:
    import torch

    good = [s for s in samples if s[1] is not None]
    bad = [(s[0], s[3]) for s in samples if s[1] is None]
    batch = torch.stack([s[1] for s in good]) if good else None
    return [s[0] for s in good], batch, [s[2] for s in good], bad


def _batches(extraction: ShardedExtraction, todo: list[tuple[int, int]], batch_size: int) -> Iterator[list[int]]:
    """Index batches of the (shard, first item still to do) of `todo` that never straddle a shard boundary, so
    every shard closes on a batch end."""
    for shard, start in todo:
        stop = extraction.bounds(shard)[1]
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


def _extract_locked(job: SplitJob) -> tuple[Embeddings, ExtractionReport]:
    started = time.perf_counter()
    report = ExtractionReport(job.key, cache_hit=False)
    n = len(job.split)
    if n == 0:
        raise HarnessError(f"dataset {job.dataset.name!r} split {job.split_name!r} has no items")
    extraction, todo = _plan(job, n)
    report.items_resumed = n - _items(extraction, todo)
    if report.items_resumed and job.ranks.leader:
        log.info("resuming %s: %d of %d items already extracted", job.what, report.items_resumed, n)
    work = _encode_in_rounds(job, extraction, todo)
    report.items_encoded = sum(w["items"] for w in work)
    report.forward_passes = sum(w["forward_passes"] for w in work)

    def finish() -> Embeddings | None:
        if not job.ranks.leader:
            return None
        report.seconds = time.perf_counter() - started
        by_rank = {str(rank): w["shards"] for rank, w in enumerate(work)}
        return _finish_entry(job, extraction, report,
                             {"world_size": job.ranks.world_size, "shards_written_by_rank": by_rank})

    embeddings = _share_entry(job.store, job.key, job.ranks,
                              together(job.ranks, f"finishing {job.what}", finish))
    if job.ranks.leader:
        shutil.rmtree(extraction.directory, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    if report.items_encoded and job.ranks.leader:
        log.info("extracted %s: %d items in %.1f s (%.1f items/s)", job.what, report.items_encoded, report.seconds,
                 report.items_encoded / max(report.seconds, 1e-9))
    return embeddings, report


def _items(extraction: ShardedExtraction, todo: list[tuple[int, int]]) -> int:
    return sum(extraction.bounds(shard)[1] - start for shard, start in todo)


def _plan(job: SplitJob, n: int) -> tuple[ShardedExtraction, list[tuple[int, int]]]:
    """The partial directory of `job` and the shards still to do, each with its first item not saved in pieces, on
    every rank. Rank 0 prepares the directory (writing the plan) and lists what is missing, once; the others then
    open it, checking the plan they see."""
    ranks, directory, shard_size = job.ranks, job.store.partial_dir(job.key), job.options.shard_size

    def prepare() -> tuple[ShardedExtraction | None, list[tuple[int, int]] | None]:
        if not ranks.leader:
            return None, None
        extraction = ShardedExtraction(directory, n, shard_size)
        return extraction, [(shard, extraction.resume_point(shard)) for shard in extraction.missing()]

    leaders, todo = together(ranks, "planning the extraction", prepare)
    todo = ranks.broadcast(todo)
    extraction = together(ranks, "checking the extraction plan", lambda: leaders if ranks.leader else
                          ShardedExtraction(directory, n, shard_size, create=False))
    return extraction, todo


def _encode_in_rounds(job: SplitJob, extraction: ShardedExtraction,
                      todo: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Encode this rank's share of `todo`; what every rank did ({"shards", "items", "forward_passes"}), by rank."""
    ranks = job.ranks
    # Shard i of those still to do goes to rank i % world_size: every shard has exactly one writer, the ranks get
    # equal shares even when a rerun finds an uneven set of shards done, and no item is padded or repeated.
    mine = todo[ranks.rank::ranks.world_size]
    written: list[int] = []
    counts = {"items": 0, "forward_passes": 0}
    shards = _encode_shards(job, extraction, mine, counts)

    def discard_if_non_finite(kinds: set[str]) -> None:
        # Shards already written came from the same broken encoder: keep none of them. Rank 0 removes them once
        # every rank has stopped writing (after the round), never while another rank is writing into them.
        if ranks.leader and NonFiniteEmbeddingError.__name__ in kinds:
            shutil.rmtree(extraction.directory, ignore_errors=True)

    try:
        # One shard per rank per round, then the ranks compare notes: a rank that fails stops every rank within
        # one shard, and one that hangs is named by the barrier's timeout.
        for round_ in range(-(-len(todo) // ranks.world_size)):
            step = (lambda: written.append(next(shards))) if round_ < len(mine) else (lambda: None)
            together(ranks, f"extracting {job.what}", step, on_failure=discard_if_non_finite)
    finally:
        shards.close()
    if written:
        log.debug("rank %d of %d wrote shards %s of %s", ranks.rank, ranks.world_size, written, job.key)
    return ranks.gather({"shards": written, **counts})


def _loader(job: SplitJob, extraction: ShardedExtraction, todo: list[tuple[int, int]]) -> Any:
    """The DataLoader of the items still to do, in order, in batches that end on shard boundaries."""
    from torch.utils.data import DataLoader

    options = job.options
    workers = default_workers(options.device) if options.workers is None else options.workers
    return DataLoader(_Items(job.split, job.encoder.transform, job.encoder.name),
                      batch_sampler=list(_batches(extraction, todo, options.batch_size)), num_workers=workers,
                      collate_fn=_collate, pin_memory=options.device.startswith("cuda"), persistent_workers=False)


def _progress(job: SplitJob, total: int) -> Progress:
    """A bar on a terminal, a line every 30 s elsewhere; rank 0 speaks for every rank (`_extract_locked` logs
    the end, with every rank's items)."""
    ranks = job.ranks
    what = f"extracting {job.encoder.name} on {job.dataset.name}/{job.split_name}" + (
        f" (rank 0 of {ranks.world_size})" if ranks.distributed else "")
    return Progress(total, what, unit="img", enabled=job.options.progress and ranks.leader, summary=False)


def _encode_shards(job: SplitJob, extraction: ShardedExtraction, todo: list[tuple[int, int]],
                   counts: dict[str, int]) -> Iterator[int]:
    """Encode the (shard, first item) of `todo` in order, writing each shard as soon as its last batch is done (and
    a piece of it every `piece_every_s` seconds before that); yields each shard written."""
    import torch

    if not todo:
        return
    encoder, device = job.encoder, job.options.device
    if getattr(encoder, "_loaded_on", None) != device:  # train and test share one loaded model
        encoder.load(device)
        encoder._loaded_on = device  # type: ignore[attr-defined]
    loader = _loader(job, extraction, todo)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext())
    buffer = _Buffer(*todo[0])
    with torch.inference_mode(), autocast, _progress(job, _items(extraction, todo)) as bar:
        for indices, batch, labels, bad in loader:
            shard = (indices or [bad[0][0]])[0] // extraction.shard_size
            if shard != buffer.shard:  # batches come in order: the previous shard was written at its end
                buffer = _Buffer(shard, (indices or [bad[0][0]])[0])
            for index, reason in bad:
                if not job.options.skip_bad_images:
                    raise BadItemError(job.split.item_id(index), f"{reason} (pass --skip-bad-images to skip and "
                                                                 f"count such items instead)")
                buffer.skipped.append((index, reason))
            if batch is not None:
                buffer.features.append(_encode_batch(job, batch, indices))
                buffer.labels.extend(labels)
                buffer.indices.extend(indices)
                counts["items"] += len(indices)
                counts["forward_passes"] += 1
            bar.update(len(indices) + len(bad))
            buffer.end = max(indices + [i for i, _ in bad]) + 1
            if buffer.end == extraction.bounds(shard)[1]:
                extraction.write(shard, buffer.arrays())
                yield shard
            elif time.monotonic() - buffer.since >= job.options.piece_every_s:
                extraction.write_piece(shard, buffer.begin, buffer.end, buffer.arrays())
                buffer = _Buffer(shard, buffer.end)


def _encode_batch(job: SplitJob, batch: Any, indices: list[int]) -> np.ndarray:
    """One forward pass: the batch's vectors as float32, checked for shape and finiteness."""
    import torch

    encoder, device = job.encoder, job.options.device
    batch = batch.to(device, non_blocking=True)
    if encoder.channels_last and device.startswith("cuda") and batch.ndim == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    output = encoder.encode(batch).float()
    if output.ndim != 2 or output.shape[0] != len(indices):
        raise HarnessError(f"encoder {encoder.name!r} returned shape {tuple(output.shape)} for a "
                           f"batch of {len(indices)}; encode() must return (batch, dim)")
    finite = torch.isfinite(output).all(dim=1)
    if not bool(finite.all()):
        first = indices[int((~finite).nonzero()[0, 0])]
        # The shards written so far are removed too (`_encode_in_rounds`, once every rank has stopped).
        raise NonFiniteEmbeddingError(
            f"encoder {encoder.name!r} produced NaN or inf for item {job.split.item_id(first)!r} of "
            f"{job.dataset.name}/{job.split_name}; nothing of this extraction was cached")
    return output.cpu().numpy()


@dataclass
class _Buffer:
    """The items of one shard encoded since its last piece (or its start): items `begin` to `end`."""

    shard: int
    begin: int
    end: int = -1
    features: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)

    def arrays(self) -> dict[str, np.ndarray]:
        features = np.concatenate(self.features) if self.features else np.zeros((0, 0), dtype=np.float32)
        return {"features": features, "labels": np.asarray(self.labels, dtype=np.int64),
                "indices": np.asarray(self.indices, dtype=np.int64),
                "skipped": np.array([i for i, _ in self.skipped], dtype=np.int64),
                "skip_reasons": np.array([r for _, r in self.skipped], dtype=str)}


def _finish_entry(job: SplitJob, extraction: ShardedExtraction, report: ExtractionReport,
                  ranks_meta: dict[str, Any]) -> Embeddings:
    """Stream every shard, in order, into the finished entry: one shard's vectors in memory at a time."""
    summaries = []
    for shard in range(extraction.count):
        summary = extraction.read(shard, features=False)
        if summary is None:
            raise HarnessError(f"shard {shard} of {job.key} is missing or unreadable; the extraction did not "
                               f"finish (rerun to redo it)")
        summaries.append(summary)
    kept = [s for s in range(extraction.count) if len(summaries[s]["indices"])]
    dims = {int(summaries[s]["shape"][1]) for s in kept}
    if len(dims) != 1:
        raise HarnessError(f"encoder {job.encoder.name!r} gave no vectors, or vectors of different sizes "
                           f"{sorted(dims)}, for {job.dataset.name}/{job.split_name}")
    indices = np.concatenate([summaries[s]["indices"] for s in kept])
    labels = np.concatenate([summaries[s]["labels"] for s in kept])
    ids = np.array([job.split.item_id(int(i)) for i in indices], dtype=str)
    report.skipped = [{"id": job.split.item_id(int(i)), "reason": str(r)}
                      for a in summaries for i, r in zip(a["skipped"], a["skip_reasons"])]
    return job.store.finish_chunks(job.key, (len(indices), dims.pop()), _stored_rows(job, extraction, kept),
                                   labels, ids, _entry_meta(job, report, ranks_meta),
                                   dtype=np.dtype(job.options.storage_dtype))


def _stored_rows(job: SplitJob, extraction: ShardedExtraction, shards: list[int]) -> Iterator[np.ndarray]:
    """The vectors of `shards`, one shard at a time, in the storage dtype."""
    for shard in shards:
        arrays = extraction.read(shard)
        if arrays is None:
            raise HarnessError(f"shard {shard} of {job.key} became unreadable while finishing; rerun to redo it")
        features = np.asarray(arrays["features"], dtype=np.float32)
        if job.options.storage_dtype != "float32":
            features = _narrowed(features, job.options.storage_dtype, job.what)
        yield features


def _entry_meta(job: SplitJob, report: ExtractionReport, ranks_meta: dict[str, Any]) -> dict[str, Any]:
    encoder, options = job.encoder, job.options
    return {"encoder": encoder.name, **entry_fingerprints(job), "dataset": job.dataset.name,
            "split": job.split_name, "class_names": job.dataset.info().get("class_names", []),
            "skipped": report.skipped, "device": options.device, "precision": precision_for(options.device),
            "extract_seconds": round(report.seconds, 3), "items_encoded_this_run": report.items_encoded,
            "ranks": ranks_meta,
            # Provenance known only once the model is loaded, kept so that cache hits can still report it.
            "encoder_info": encoder.info(), "parameters": encoder.parameter_count()}
