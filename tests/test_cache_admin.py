"""`harness cache ls|prune` and `harness export` on real small cache entries (synthetic images, pixel encoder)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cache_admin import list_entries, parse_size, prune
from harness.cli import main
from harness.errors import HarnessError
from harness.extract import ExtractionOptions, extract
from harness.store import EmbeddingStore
from harness_test_support.helpers import CountingPixels
from harness.plugins.synthetic import Synthetic

DAY = 86400


def options():
    return ExtractionOptions(device="cpu", batch_size=16, shard_size=16, progress=False)


def synthetic(per_class=10):
    data = Synthetic(classes=2, per_class=per_class)
    data.name = "synthetic"
    return data


class OtherPixels(CountingPixels):
    """Another encoder (another name and fingerprint), so the cache holds several."""

    def __init__(self, name="other-pixels", variant="other"):
        super().__init__()
        self.name, self.variant = name, variant

    def fingerprint(self):
        return {**super().fingerprint(), "variant": self.variant}


def fill(cache: Path) -> dict[str, str]:
    """Four real entries; returns {"<encoder> <split>": key}."""
    store = EmbeddingStore(cache)
    keys = {}
    for encoder in (CountingPixels(), OtherPixels()):
        for split in ("train", "test"):
            _, report = extract(encoder, synthetic(), split, store, options())
            keys[f"{encoder.name} {split}"] = report.key
    return keys


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def set_last_use(cache: Path, key: str, days_ago: float) -> None:
    stamp = time.time() - days_ago * DAY
    os.utime(cache / "entries" / key / "meta.json", (stamp, stamp))


def test_ls_shows_entries_and_a_load_records_last_use_without_changing_meta(tmp_path, capsys):
    keys = fill(tmp_path)
    key = keys["counting-pixels train"]
    set_last_use(tmp_path, key, 3)
    assert main(["cache", "ls", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(key[:12]))
    size = dir_size(tmp_path / "entries" / key)
    assert line.split()[1:6] == ["counting-pixels", "synthetic", "train", "20", "3072"]
    assert f"{size / 1024:.1f} KiB" in line and "(3 d ago)" in line
    assert "4 entries" in out
    meta = tmp_path / "entries" / key / "meta.json"
    digest = hashlib.sha256(meta.read_bytes()).hexdigest()
    assert EmbeddingStore(tmp_path).load(key) is not None
    entry = next(e for e in list_entries(EmbeddingStore(tmp_path)) if e.key == key)
    assert time.time() - entry.last_use < 60  # used just now
    assert hashlib.sha256(meta.read_bytes()).hexdigest() == digest  # touched, not rewritten


def test_prune_by_age_removes_old_entries_and_their_derived_data(tmp_path, capsys):
    keys = fill(tmp_path)
    old = keys["other-pixels test"]
    set_last_use(tmp_path, old, 10)
    derived = tmp_path / "derived" / old
    derived.mkdir(parents=True)
    np.save(derived / "umap-seed0.npy", np.zeros((20, 2), dtype=np.float32))
    assert main(["cache", "prune", "--older-than", "5", "--dry-run", "--cache-dir", str(tmp_path)]) == 0
    assert f"would remove entry {old[:12]}" in capsys.readouterr().out
    assert (tmp_path / "entries" / old).exists()
    assert main(["cache", "prune", "--older-than", "5", "--cache-dir", str(tmp_path)]) == 0
    assert f"removed entry {old[:12]}: other-pixels synthetic/test" in capsys.readouterr().out
    assert not (tmp_path / "entries" / old).exists() and not derived.exists()
    assert sorted(e.key for e in list_entries(EmbeddingStore(tmp_path))) == sorted(k for k in keys.values() if k != old)


def test_prune_to_a_size_removes_least_recently_used_first(tmp_path):
    keys = fill(tmp_path)
    order = ["other-pixels train", "counting-pixels test", "other-pixels test", "counting-pixels train"]
    for days, name in zip((4, 3, 2, 1), order):  # least recently used first
        set_last_use(tmp_path, keys[name], days)
    total = dir_size(tmp_path)
    sizes = {name: dir_size(tmp_path / "entries" / keys[name]) for name in order}
    limit = total - sizes[order[0]] - sizes[order[1]] // 2  # the oldest two must go, not the third
    report = prune(EmbeddingStore(tmp_path), max_size=limit)
    assert [r.key for r in report.removed] == [keys[order[0]], keys[order[1]]]
    assert dir_size(tmp_path) <= limit and report.size_after == dir_size(tmp_path)
    assert {e.key for e in list_entries(EmbeddingStore(tmp_path))} == {keys[order[2]], keys[order[3]]}
    assert parse_size("2G") == 2 << 30 and parse_size("1.5k") == 1536 and parse_size("100") == 100
    with pytest.raises(HarnessError, match="cannot read size '2 parsecs'"):
        parse_size("2 parsecs")


def test_prune_by_encoder_and_unknown_encoder_names(tmp_path, capsys):
    keys = fill(tmp_path)
    assert main(["cache", "prune", "--encoder", "other-pixel", "--cache-dir", str(tmp_path)]) == 2
    assert "did you mean: other-pixels" in capsys.readouterr().err
    prune(EmbeddingStore(tmp_path), encoder="other-pixels")
    assert {e.encoder for e in list_entries(EmbeddingStore(tmp_path))} == {"counting-pixels"}
    assert len(list((tmp_path / "entries").iterdir())) == 2 and keys


HOLD_LOCK = """
import sys
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


@pytest.mark.slow  # holds a lock from another process
def test_prune_never_touches_a_key_that_a_running_extraction_holds(tmp_path, capsys):
    keys = fill(tmp_path)
    store = EmbeddingStore(tmp_path)
    held = keys["counting-pixels test"]
    # an interrupted extraction of another split size leaves shards; nobody holds its lock: an orphan
    with pytest.raises(KeyboardInterrupt):
        extract(CountingPixels(fail_after=1), synthetic(per_class=20), "test", store, options())
    orphan = next((tmp_path / "partial").iterdir())
    # a "running" extraction of `held`: its partial shards exist and another process holds its lock
    (tmp_path / "partial" / held).mkdir()
    (tmp_path / "partial" / held / "shard-00000.npz").write_bytes(b"in progress")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.lock_path(held))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["cache", "prune", "--encoder", "counting-pixels", "--cache-dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert f"skipped entry {held[:12]}" in out and "held by a running extraction" in out
        assert (tmp_path / "entries" / held).exists()
        assert not (tmp_path / "entries" / keys["counting-pixels train"]).exists()
        assert main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0  # leftovers only
        out = capsys.readouterr().out
        assert f"removed partial {orphan.name[:12]}" in out and f"skipped partial {held[:12]}" in out
        assert not orphan.exists() and (tmp_path / "partial" / held / "shard-00000.npz").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert main(["cache", "prune", "--encoder", "counting-pixels", "--cache-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "entries" / held).exists() and not (tmp_path / "partial" / held).exists()
    assert {e.encoder for e in list_entries(store)} == {"other-pixels"}


def test_export_npz_and_npy_hold_the_cached_arrays(tmp_path, capsys):
    keys = fill(tmp_path)
    cached = EmbeddingStore(tmp_path).load(keys["other-pixels test"])
    assert main(["export", "-e", "other-pixels", "-d", "synthetic", "-s", "test", "--out", str(tmp_path / "x.npz"),
                 "--cache-dir", str(tmp_path)]) == 0
    with np.load(tmp_path / "x.npz") as data:
        assert set(data.files) == {"features", "labels", "ids"}
        np.testing.assert_array_equal(data["features"], cached.features)
        np.testing.assert_array_equal(data["labels"], cached.labels)
        np.testing.assert_array_equal(data["ids"], cached.ids)
    assert main(["export", "-e", "other-pixels", "-d", "synthetic", "-s", "test", "--out", str(tmp_path / "o/y.npy"),
                 "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "o/y.labels.npy" in out and "o/y.ids.npy" in out
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "y.npy"), cached.features)
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "y.labels.npy"), cached.labels)
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "y.ids.npy"), cached.ids)
    assert main(["export", "-e", "other-pixels", "-d", "synthetic", "-s", "val", "--out", str(tmp_path / "z.npz"),
                 "--cache-dir", str(tmp_path)]) == 2
    assert "no cache entry" in capsys.readouterr().err and not (tmp_path / "z.npz").exists()


def test_export_of_an_ambiguous_name_lists_the_entries_and_how_to_pick(tmp_path, capsys):
    store = EmbeddingStore(tmp_path)
    _, first = extract(OtherPixels(variant="a"), synthetic(), "test", store, options())
    _, second = extract(OtherPixels(variant="b"), synthetic(), "test", store, options())
    assert main(["export", "-e", "other-pixels", "-d", "synthetic", "-s", "test", "--out", str(tmp_path / "x.npz"),
                 "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "2 cache entries match" in err and f"--key {first.key[:12]}" in err and f"--key {second.key[:12]}" in err
    assert 'encoder_fingerprint.variant="a"' in err and 'encoder_fingerprint.variant="b"' in err
    assert main(["export", "--key", second.key[:12], "--out", str(tmp_path / "x.npz"), "--cache-dir",
                 str(tmp_path)]) == 0
    with np.load(tmp_path / "x.npz") as data:
        np.testing.assert_array_equal(data["features"], store.load(second.key).features)


@pytest.mark.slow  # starts a process for a dead pid
def test_prune_removes_a_killed_writers_temporary_entry_but_not_a_live_ones(tmp_path, capsys):
    from harness.files import temp_path

    keys = fill(tmp_path)
    key = keys["other-pixels test"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    # what a process killed while finishing an entry leaves: `.<key>.tmp-<host>-<pid>` with a dead pid
    left = temp_path(tmp_path / "entries" / key).with_name(
        temp_path(tmp_path / "entries" / key).name.rsplit("-", 1)[0] + f"-{dead.stdout.strip()}")
    live = temp_path(tmp_path / "entries" / key)  # this very process: a writer still at work
    for path in (left, live):
        path.mkdir()
        (path / "features.npy").write_bytes(b"x" * 1000)
    assert main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"removed leftover {key[:12]}" in out, out
    assert not left.exists() and live.exists()
    assert {e.key for e in list_entries(EmbeddingStore(tmp_path))} == set(keys.values())  # no entry touched


@pytest.mark.slow  # starts a process for a dead pid
def test_prune_removes_a_killed_writers_temporary_derived_file_but_not_a_live_ones(tmp_path, capsys):
    """The UMAP reductions of a live entry are written through harness.files (plugins/umap_cache.py): what a killed
    writer leaves there is found by the same parser and removed; the entry and its finished reductions stay."""
    from harness.files import temp_path

    keys = fill(tmp_path)
    key = keys["other-pixels test"]
    reductions = EmbeddingStore(tmp_path).derived_dir(key) / "reductions"
    reductions.mkdir(parents=True)
    finished = reductions / "umap-50d-seed0-abc.npy"
    finished.write_bytes(b"finished")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    live = temp_path(reductions / "umap-50d-seed1-abc.npy")  # this very process: a writer still at work
    left = live.with_name(live.name.rsplit("-", 1)[0] + f"-{dead.stdout.strip()}")
    for path in (left, live):
        path.write_bytes(b"x" * 1000)
    assert main(["cache", "prune", "--dry-run", "--cache-dir", str(tmp_path)]) == 0
    assert left.exists()  # a dry run says, and removes nothing
    assert main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"removed leftover {key[:12]}" in out, out
    assert not left.exists() and live.exists() and finished.read_bytes() == b"finished"
    assert {e.key for e in list_entries(EmbeddingStore(tmp_path))} == set(keys.values())

