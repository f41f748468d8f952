"""Housekeeping of the embedding cache: list entries, prune them, export one for use elsewhere.

"Last use" is the modification time of an entry's `meta.json`, which `EmbeddingStore.load` touches (`os.utime`)
on every load: the file's bytes, and so its checksum, never change.

An extraction holds `locks/<key>.lock` while it works on a key. Prune takes that same lock (without waiting)
before it removes anything of a key, and skips the key when another process holds it: a running extraction never
loses its entry, its shards or its derived data, and no extraction can start on a key while prune removes it.

Besides entries, prune removes leftovers: `derived/` data whose entry is gone, temporary and trash directories
that a killed process left in `entries/`, and `partial/` directories of interrupted extractions that no running
process holds (with `--older-than`, only those untouched for that long; with `--encoder` alone, none, since a
partial extraction does not record its encoder). Lock files stay: removing one while another process waits on it
would let two processes hold "the" lock at once.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError
from harness.files import stale_temp_target
from harness.store import EmbeddingStore, meta_checksum

DAY_SECONDS = 86400.0
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass
class CacheEntry:
    """One finished entry, described from its `meta.json` (read, not verified: listing must stay cheap)."""

    key: str
    encoder: str | None
    dataset: str | None
    split: str | None
    n: int | None
    dim: int | None
    size: int  # bytes of entries/<key> plus derived/<key>
    last_use: float  # seconds since the epoch
    created: str | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)
    damaged: str | None = None  # why meta.json cannot be trusted, if it cannot


@dataclass
class Removal:
    key: str
    what: str  # "entry", "derived", "partial", "leftover"
    path: Path
    size: int
    description: str


@dataclass
class PruneReport:
    removed: list[Removal] = field(default_factory=list)
    skipped: list[tuple[Removal, str]] = field(default_factory=list)  # (what, why)
    size_before: int = 0
    size_after: int = 0
    dry_run: bool = False


def parse_size(text: str) -> int:
    """"2G", "500M", "1.5GiB", "100k", "123" (bytes) -> bytes; K/M/G/T are powers of 1024."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise HarnessError(f"cannot read size {text!r}; write it as a number with an optional unit: 500M, 2G, 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we walked: nothing to count
                pass
    return total


def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime]
    for root, _, files in os.walk(path):
        for name in files:
            try:
                times.append(os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return max(times)


def _is_key(name: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{32}", name) is not None


def list_entries(store: EmbeddingStore) -> list[CacheEntry]:
    """Every finished entry (damaged ones too, marked), sorted by encoder, dataset and split."""
    entries = []
    root = store.root / "entries"
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not path.is_dir() or not _is_key(path.name):
            continue  # hidden .<key>.tmp-<host>-<pid> and .trash- names are leftovers, not entries
        key = path.name
        size = tree_size(path) + (tree_size(store.derived_dir(key)) if store.derived_dir(key).exists() else 0)
        meta_path = path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            last_use = meta_path.stat().st_mtime
        except (OSError, ValueError) as error:
            entries.append(CacheEntry(key, None, None, None, None, None, size, path.stat().st_mtime,
                                      damaged=f"meta.json unreadable ({error})"))
            continue
        damaged = None if meta.get("meta_sha256") == meta_checksum(meta) else "meta.json was modified"
        entries.append(CacheEntry(key, meta.get("encoder"), meta.get("dataset"), meta.get("split"), meta.get("n"),
                                  meta.get("dim"), size, last_use, meta.get("created"),
                                  {k: meta.get(k) for k in ("encoder_fingerprint", "dataset_fingerprint")},
                                  damaged))
    return sorted(entries, key=lambda e: (e.encoder or "", e.dataset or "", e.split or "", e.key))


def lock_is_held(store: EmbeddingStore, key: str) -> bool:
    with hold_lock(store, key) as acquired:
        return not acquired


@contextmanager
def hold_lock(store: EmbeddingStore, key: str) -> Iterator[bool]:
    """Hold the extraction lock of `key` for the block if no other process holds it; yields whether it did."""
    from filelock import FileLock, Timeout

    path = store.lock_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _leftovers(store: EmbeddingStore, entries: list[CacheEntry], older_than: float | None,
               encoder_only: bool, now: float) -> list[Removal]:
    """What prune removes besides entries; see the module docstring for the rule."""
    found = []
    keys = {e.key for e in entries}
    for entry in entries:
        if entry.damaged:  # load() would discard it anyway
            found.append(Removal(entry.key, "entry", store.entry_dir(entry.key), entry.size,
                                 f"damaged entry ({entry.damaged})"))
    derived_root = store.root / "derived"
    for path in sorted(derived_root.iterdir()) if derived_root.is_dir() else []:
        if path.name not in keys:
            found.append(Removal(path.name, "derived", path, tree_size(path), "derived data of a removed entry"))
            continue
        # Derived data of a live entry (the UMAP reductions) is written through harness.files too: a killed writer
        # leaves a temporary there, found by the same parser (which never names a live writer's file).
        for leftover in sorted(p for p in path.rglob("*") if stale_temp_target(p.name) is not None):
            found.append(Removal(path.name, "leftover", leftover, tree_size(leftover),
                                 "temporary file of derived data left by a killed process"))
    entries_root = store.root / "entries"
    for path in sorted(entries_root.iterdir()) if entries_root.is_dir() else []:
        key = stale_temp_target(path.name)  # a live writer's temporary directory is not a leftover
        if key is not None and _is_key(key):
            found.append(Removal(key, "leftover", path, tree_size(path),
                                 "temporary directory left by a killed process"))
    partial_root = store.root / "partial"
    if not (encoder_only and older_than is None):
        for path in sorted(partial_root.iterdir()) if partial_root.is_dir() else []:
            if older_than is not None and now - _newest_mtime(path) <= older_than:
                continue
            found.append(Removal(path.name, "partial", path, tree_size(path),
                                 "shards of an interrupted extraction"))
    return found


def _entry_removal(entry: CacheEntry, store: EmbeddingStore, now: float) -> Removal:
    days = (now - entry.last_use) / DAY_SECONDS
    return Removal(entry.key, "entry", store.entry_dir(entry.key), entry.size,
                   f"{entry.encoder} {entry.dataset}/{entry.split}, last used {days:.1f} days ago")


def check_encoder_name(entries: list[CacheEntry], encoder: str) -> None:
    names = sorted({e.encoder for e in entries if e.encoder})
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=3, cutoff=0.5)
        hint = (f"did you mean: {', '.join(close)}?" if close else
                f"it holds: {', '.join(names)}" if names else "it is empty")
        raise HarnessError(f"the cache has no entries of encoder {encoder!r}; {hint}")


def prune(store: EmbeddingStore, *, older_than_days: float | None = None, max_size: int | None = None,
          encoder: str | None = None, dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Remove entries unused for `older_than_days`, then the least recently used until the cache holds at most
    `max_size` bytes; `encoder` restricts both to that encoder's entries (alone, it removes all of them).
    Leftovers go too (module docstring). Keys held by a running extraction are skipped and reported."""
    now = time.time() if now is None else now
    if older_than_days is not None and older_than_days < 0:
        raise HarnessError(f"--older-than must be a number of days, 0 or more, not {older_than_days}")
    entries = list_entries(store)
    if encoder is not None:
        check_encoder_name(entries, encoder)
    older_than = None if older_than_days is None else older_than_days * DAY_SECONDS
    report = PruneReport(dry_run=dry_run)
    report.size_before = report.size_after = tree_size(store.root) if store.root.exists() else 0

    def remove(item: Removal) -> bool:
        with hold_lock(store, item.key) as acquired:
            if not acquired:
                report.skipped.append((item, "held by a running extraction"))
                return False
            if not dry_run:
                if item.what == "entry":
                    store.discard(item.key)  # renamed away first: no reader sees half an entry
                    for path in (store.derived_dir(item.key), store.partial_dir(item.key)):  # all of the key
                        shutil.rmtree(path, ignore_errors=True)
                elif item.path.is_dir() and not item.path.is_symlink():
                    shutil.rmtree(item.path, ignore_errors=True)
                else:  # a temporary file of derived data
                    item.path.unlink(missing_ok=True)
        report.removed.append(item)
        report.size_after -= item.size
        return True

    for item in _leftovers(store, entries, older_than, encoder is not None and max_size is None, now):
        remove(item)
    healthy = [e for e in entries if not e.damaged and (encoder is None or e.encoder == encoder)]
    kept = []
    for entry in sorted(healthy, key=lambda e: e.last_use):  # least recently used first
        if (older_than is not None and now - entry.last_use > older_than) or (
                encoder is not None and older_than is None and max_size is None):
            remove(_entry_removal(entry, store, now))  # a held one is reported once, and not retried below
        else:
            kept.append(entry)
    if max_size is not None:
        for entry in kept:
            if report.size_after <= max_size:
                break
            remove(_entry_removal(entry, store, now))
    return report


# -- export ------------------------------------------------------------------------------------------------------

def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def find_entry(store: EmbeddingStore, *, encoder: str | None = None, dataset: str | None = None,
               split: str | None = None, key: str | None = None) -> CacheEntry:
    """The one entry matching the given fields (and key prefix); an error listing the candidates otherwise."""
    entries = [e for e in list_entries(store) if not e.damaged]
    if key is None and None in (encoder, dataset, split):
        raise HarnessError("name the embeddings: --encoder, --dataset and --split (or --key KEY)")
    matches = [e for e in entries if (key is None or e.key.startswith(key)) and
               all(want is None or have == want for want, have in
                   ((encoder, e.encoder), (dataset, e.dataset), (split, e.split)))]
    if not matches:
        if encoder is not None:
            check_encoder_name(entries, encoder)
        have = sorted({f"{e.encoder} {e.dataset}/{e.split}" for e in entries if e.encoder == encoder} or
                      {f"{e.encoder} {e.dataset}/{e.split}" for e in entries})
        raise HarnessError(f"no cache entry in {str(store.root)!r} matches"
                           + (f" key {key!r}" if key else f" {encoder} {dataset}/{split}")
                           + (f"; the cache holds: {', '.join(have)}" if have else "; the cache is empty")
                           + ". `harness cache ls` lists them")
    if len(matches) > 1:
        flat = [_flatten(e.fingerprints) for e in matches]
        differing = sorted(k for k in set().union(*flat) if len({json.dumps(f.get(k), sort_keys=True, default=str)
                                                                 for f in flat}) > 1)
        lines = []
        for entry, values in zip(matches, flat):
            shown = ", ".join(f"{k}={json.dumps(values.get(k), default=str)[:60]}" for k in differing[:4])
            lines.append(f"  --key {entry.key[:12]}  {entry.encoder} {entry.dataset}/{entry.split}, created "
                         f"{entry.created}: {shown}")
        raise HarnessError(f"{len(matches)} cache entries match {encoder} {dataset}/{split} (extracted with different "
                           f"settings); pick one with --key:\n" + "\n".join(lines))
    return matches[0]


def export_embeddings(store: EmbeddingStore, entry: CacheEntry, out: str | os.PathLike) -> list[Path]:
    """Write one entry's arrays to `out`: `.npz` holds features, labels and ids; `.npy` holds the features, with
    the labels and ids beside it as `<stem>.labels.npy` and `<stem>.ids.npy`. Returns the files written."""
    import numpy as np

    from harness.files import atomic_file

    out = Path(out)
    if out.suffix not in (".npy", ".npz"):
        raise HarnessError(f"export to {str(out)!r}: the file name must end in .npy (features; labels and ids beside "
                           f"it) or .npz (features, labels and ids in one file)")
    embeddings = store.load(entry.key)  # verified against its recorded hashes, as any use of the cache
    if embeddings is None:
        raise HarnessError(f"cache entry {entry.key} was damaged and has been removed; rerun `harness run` to "
                           f"extract it again")
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"features": np.asarray(embeddings.features), "labels": np.asarray(embeddings.labels),
              "ids": np.asarray(embeddings.ids)}
    if out.suffix == ".npz":
        with atomic_file(out) as handle:
            np.savez(handle, **arrays)
        return [out]
    written = []
    for name, path in (("features", out), ("labels", out.with_suffix(".labels.npy")),
                       ("ids", out.with_suffix(".ids.npy"))):
        with atomic_file(path) as handle:
            np.save(handle, arrays[name], allow_pickle=False)
        written.append(path)
    return written
