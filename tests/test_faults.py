"""Fault injection: each scenario injects one fault, checks that the harness survives it with results equal to an
uninterrupted run's, and measures what was lost. The session ends with "N faults injected, N survived, 0 lost"
(tests/conftest.py), each count added by a scenario only after the assertion that proves it:

- injected: the fault demonstrably landed (the kill found a shard and no entry, the OS error was raised, ...);
- survived: the rerun, or the other cells of the run, completed with arrays and records equal to a reference run;
- lost: records, cache entries or shards finished before the fault that are gone or unreadable afterwards.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError, NonFiniteEmbeddingError
from harness.extract import ExtractionOptions, extract
from harness.plugin_manager import Plugins
from harness.records import load_predictions, load_record, load_records, write_record
from harness.runner import RunConfig, run
from harness.store import EmbeddingStore
from harness.types import Evaluator
from harness_test_support.helpers import CountingPixels, EncoderPlugin, EvaluatorPlugin
from harness.plugins.pixels import Pixels
from harness.plugins.synthetic import Synthetic

WORKER = Path(__file__).with_name("harness_test_support") / "fault_worker.py"
TEMP_NAME = re.compile(r"\.(tmp|trash)-")
SPLIT_ITEMS = 80  # Synthetic(classes=4, per_class=20): 5 shards of 16, batches of 8
#: What differs between two runs of one cell by design (when and how it ran), left out of record comparisons.
VOLATILE = ("date", "timings", "command", "_path", "versions")


def options(**kw) -> ExtractionOptions:
    return ExtractionOptions(**{"device": "cpu", "batch_size": 8, "shard_size": 16, "progress": False, **kw})


def dataset(**kw) -> Synthetic:
    data = Synthetic(**{"classes": 4, "per_class": 20, **kw})
    data.name = "synthetic"
    return data


def config(tmp: Path, encoders, evaluators=("knn",), **kw) -> RunConfig:
    return RunConfig(**{"encoders": list(encoders), "datasets": ["synthetic"], "evaluators": list(evaluators),
                        "results_dir": tmp / "results", "cache_dir": tmp / "cache", "device": "cpu",
                        "batch_size": 8, "shard_size": 16, "progress": False,
                        "dataset_options": {"per_class": 20}, **kw})


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def assert_same_records(records: list[dict], reference: list[dict], rename: dict[str, str] | None = None) -> None:
    """Equal metrics, predictions and provenance, cell by cell (`rename` maps encoder names of the reference; the
    encoder's name, and the cell hash made from it, are then all that may differ)."""
    def cell(r, names):
        return (names.get(r["encoder"]["name"], r["encoder"]["name"]), r["evaluator"]["name"])

    def measurement(r):
        return {**comparable(r), "cell": None, "encoder": {**r["encoder"], "name": None}}

    ours = {cell(r, {}): r for r in records}
    theirs = {cell(r, rename or {}): r for r in reference}
    assert sorted(ours) == sorted(theirs)
    for key, record in ours.items():
        assert measurement(record) == measurement(theirs[key]), key
        mine, ref = load_predictions(record), load_predictions(theirs[key])
        assert (mine is None) == (ref is None)
        for name in ref or {}:
            np.testing.assert_array_equal(mine[name], ref[name])


def snapshot_entries(cache: Path) -> dict[str, np.ndarray]:
    """Every finished cache entry: key -> a copy of its features."""
    store = EmbeddingStore(cache)
    found = {}
    for entry in sorted((cache / "entries").glob("[!.]*")):
        loaded = store.load(entry.name)
        assert loaded is not None, f"entry {entry.name} is damaged"
        found[entry.name] = np.array(loaded.features)
    return found


def lost_entries(cache: Path, before: dict[str, np.ndarray]) -> int:
    """How many entries of `before` no longer load with the same features."""
    store = EmbeddingStore(cache)
    lost = 0
    for key, features in before.items():
        loaded = store.load(key)
        lost += loaded is None or not np.array_equal(np.asarray(loaded.features), features)
    return lost


def snapshot_records(results: Path) -> dict[str, dict]:
    return {r["_path"]: {**comparable(r), "predictions": load_predictions(r)} for r in load_records(results)}


def lost_records(before: dict[str, dict]) -> int:
    lost = 0
    for path, expected in before.items():
        try:
            record = load_record(Path(path))
        except HarnessError:
            lost += 1
            continue
        predictions = load_predictions(record)
        same_arrays = (predictions is None) == (expected["predictions"] is None) and all(
            np.array_equal(predictions[k], v) for k, v in (expected["predictions"] or {}).items())
        lost += not (same_arrays and comparable(record) == {k: v for k, v in expected.items() if k != "predictions"})
    return lost


def leftovers(root: Path) -> list[str]:
    """Temporary files or directories anywhere under `root`: what a failed write must not leave behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMP_NAME.search(p.name))


def worker(*args: str, delay: float = 0.0, **kw) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_TEST_ENCODE_DELAY": str(delay)}
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env, start_new_session=True, **kw)


def worker_run_args(tmp: Path, results: str = "results") -> list[str]:
    return ["run", "-e", "paced-pixels", "-d", "synthetic", "--eval", "knn", "--cache-dir", str(tmp / "cache"),
            "--results-dir", str(tmp / results), "--device", "cpu", "--batch-size", "8", "--shard-size", "16",
            "--no-progress"]


def items_encoded(log: str) -> int:
    """Items a `harness run` encoded, from its closing message."""
    if re.search(r"all \d+ embedding sets came from the cache", log):
        return 0
    return int(re.search(r"extracted (\d+) items in", log)[1])


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def pixel_reference(tmp_path_factory) -> tuple[list[dict], Path]:
    """An uninterrupted `pixels` kNN run on the CLI's default synthetic set (96 items per split): records, cache."""
    root = tmp_path_factory.mktemp("reference")
    report = run(config(root, ["pixels"], dataset_options={}), Plugins(entry_points=False))
    assert not report.failures
    return report.records, root / "cache"


# -- killed ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # kills or races real worker processes
def test_sigkill_during_extraction_then_rerun_resumes(tmp_path, pixel_reference, fault_ledger):
    reference_records, reference_cache = pixel_reference
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as log:
        process = worker(*worker_run_args(tmp_path), delay=0.1, stdout=subprocess.DEVNULL, stderr=log)
        shards = lambda: list((tmp_path / "cache" / "partial").glob("*/shard-*.npz"))  # noqa: E731
        wait_for(shards, process, "finished shard")  # a finished shard, not a fixed time
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not list((tmp_path / "cache" / "entries").glob("[!.]*"))  # killed before any entry was finished
    finished = len(shards())
    assert finished >= 1
    fault_ledger.injected += 1

    rerun = subprocess.run([sys.executable, str(WORKER), *worker_run_args(tmp_path)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    resumed = re.search(r"resuming paced-pixels on synthetic/train: (\d+) of 96 items", rerun.stderr)
    assert resumed, rerun.stderr
    assert items_encoded(rerun.stderr) == 2 * 96 - int(resumed[1])  # nothing finished was encoded twice
    entries = snapshot_entries(tmp_path / "cache")
    assert entries.keys() == snapshot_entries(reference_cache).keys()  # same keys: paced-pixels is pixels
    for key, features in snapshot_entries(reference_cache).items():
        np.testing.assert_array_equal(entries[key], features)
    assert_same_records(load_records(tmp_path / "results"), reference_records, {"pixels": "paced-pixels"})
    fault_ledger.survived += 1
    fault_ledger.lost += finished - int(resumed[1]) // 16  # finished shards that were not reused


@pytest.mark.slow  # kills or races real worker processes
def test_sigkill_while_writing_records_never_leaves_a_readable_torn_record(tmp_path, pixel_reference, fault_ledger):
    from harness_test_support.fault_worker import expected_predictions

    template = {k: v for k, v in pixel_reference[0][0].items() if k not in ("_path", "predictions_file")}
    (tmp_path / "template.json").write_text(json.dumps(template))
    for attempt in range(3):  # the kill is aimed at a write in flight; retried if it fell between two writes
        results = tmp_path / f"results-{attempt}"
        process = worker("records", str(tmp_path / "template.json"), str(results), stderr=subprocess.PIPE)
        finished = lambda: [p for p in results.rglob("seed-*.json") if not p.name.startswith(".")]  # noqa: E731
        temps = lambda: [p for p in results.rglob(".seed-*") if TEMP_NAME.search(p.name)]  # noqa: E731
        wait_for(lambda: len(finished()) >= 2 and temps(), process, "two records and a third one being written")
        before = {str(p) for p in finished()}
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        stray = temps()
        if stray:
            break
    else:
        pytest.fail("the kill never landed during a write in 3 attempts")
    fault_ledger.injected += 1

    records = load_records(results)  # raises on any record that is not complete and valid
    on_disk = [p for p in results.rglob("*.json") if not p.name.startswith(".")]
    assert len(records) == len(on_disk) >= len(before)
    for record in records:
        assert comparable(record) == comparable({**template, "seed": record["seed"],
                                                 "predictions_file": f"seed-{record['seed']}.predictions.npz",
                                                 "artifacts": {}})
        predictions = load_predictions(record)
        for name, array in expected_predictions(record["seed"]).items():
            np.testing.assert_array_equal(predictions[name], array)
    # The next write into that directory clears what the killed process left; nothing else changes.
    seed = max(r["seed"] for r in records) + 1
    write_record(results, {**template, "seed": seed}, predictions={"predicted": np.arange(5)})
    assert not [p for p in stray if p.exists()] and not temps()
    assert len(load_records(results)) == len(records) + 1
    fault_ledger.survived += 1
    fault_ledger.lost += len(before - {r["_path"] for r in records})


def test_ctrl_c_during_extraction_resumes_from_finished_shards(tmp_path, fault_ledger):
    store = EmbeddingStore(tmp_path)
    reference, _ = extract(CountingPixels(), dataset(), "train", EmbeddingStore(tmp_path / "ref"), options())
    with pytest.raises(KeyboardInterrupt):
        extract(CountingPixels(fail_after=5), dataset(), "train", store, options())  # 2.5 shards done
    shards = sorted((tmp_path / "partial").rglob("shard-*.npz"))
    assert len(shards) == 2
    assert not list((tmp_path / "entries").glob("*"))  # no entry, complete or partial, is visible
    fault_ledger.injected += 1
    resumed_encoder = CountingPixels()
    resumed, report = extract(resumed_encoder, dataset(), "train", store, options())
    assert report.items_resumed == 32 and report.items_encoded == 48 and resumed_encoder.calls == 6
    np.testing.assert_array_equal(resumed.features, reference.features)
    np.testing.assert_array_equal(resumed.ids, reference.ids)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    fault_ledger.survived += 1
    fault_ledger.lost += 2 - report.items_resumed // 16


def test_ctrl_c_inside_a_long_shard_keeps_the_pieces_saved_so_far(tmp_path, fault_ledger):
    """One shard holds the whole split (as the default 1,024 items hold cifar10-mini's 1,000); a piece saved
    every `piece_every_s` seconds (here after every batch) means Ctrl-C keeps the work done before it."""
    store = EmbeddingStore(tmp_path)
    one_shard = {"shard_size": 1024, "piece_every_s": 0.0}
    reference, _ = extract(CountingPixels(), dataset(), "train", EmbeddingStore(tmp_path / "ref"), options())
    with pytest.raises(KeyboardInterrupt):
        extract(CountingPixels(fail_after=5), dataset(), "train", store, options(**one_shard))  # 5 batches of 8
    assert not list((tmp_path / "partial").rglob("shard-*.npz"))  # the shard is unfinished
    pieces = sorted(p.name for p in (tmp_path / "partial").rglob("piece-*.npz"))
    assert pieces == [f"piece-00000-{8 * i:010d}-{8 * (i + 1):010d}.npz" for i in range(5)]
    fault_ledger.injected += 1
    # A torn last piece is dropped and redone; the four before it are kept.
    last = next((tmp_path / "partial").rglob(pieces[-1]))
    last.write_bytes(last.read_bytes()[:100])
    resumed_encoder = CountingPixels()
    resumed, report = extract(resumed_encoder, dataset(), "train", store, options(**one_shard))
    assert report.items_resumed == 32 and report.items_encoded == SPLIT_ITEMS - 32 and resumed_encoder.calls == 6
    np.testing.assert_array_equal(resumed.features, reference.features)
    np.testing.assert_array_equal(resumed.ids, reference.ids)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    fault_ledger.survived += 1
    fault_ledger.lost += 4 - report.items_resumed // 8


# -- damaged on disk -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate-features", "edit-meta", "delete-labels"])
def test_damaged_entry_is_detected_and_recomputed(tmp_path, damage, fault_ledger):
    store = EmbeddingStore(tmp_path)
    extract(CountingPixels(), dataset(), "train", store, options())
    original, report = extract(CountingPixels(), dataset(), "test", store, options())
    entry = tmp_path / "entries" / report.key
    expected = np.array(original.features)
    del original
    untouched = {k: v for k, v in snapshot_entries(tmp_path).items() if k != report.key}
    if damage == "truncate-features":
        data = (entry / "features.npy").read_bytes()
        (entry / "features.npy").write_bytes(data[: len(data) // 2])
    elif damage == "edit-meta":
        meta = json.loads((entry / "meta.json").read_text())
        meta["n"] = 79
        (entry / "meta.json").write_text(json.dumps(meta))
    else:
        (entry / "labels.npy").unlink()
    assert store.load(report.key) is None  # detected, never used
    fault_ledger.injected += 1
    encoder = CountingPixels()
    redone, report = extract(encoder, dataset(), "test", store, options())
    assert not report.cache_hit and encoder.calls == 10
    np.testing.assert_array_equal(redone.features, expected)
    fault_ledger.survived += 1
    fault_ledger.lost += lost_entries(tmp_path, untouched)


@pytest.mark.parametrize("damage", ["missing-shard", "truncated-shard"])
def test_damaged_shard_is_detected_and_recomputed(tmp_path, damage, fault_ledger):
    store = EmbeddingStore(tmp_path)
    reference, _ = extract(CountingPixels(), dataset(), "train", EmbeddingStore(tmp_path / "ref"), options())
    with pytest.raises(KeyboardInterrupt):
        extract(CountingPixels(fail_after=6), dataset(), "train", store, options())  # shards 0, 1, 2 done
    shards = sorted((tmp_path / "partial").rglob("shard-*.npz"))
    assert len(shards) == 3
    if damage == "missing-shard":
        shards[1].unlink()
    else:
        data = shards[1].read_bytes()
        shards[1].write_bytes(data[: len(data) * 2 // 3])
    fault_ledger.injected += 1
    encoder = CountingPixels()
    resumed, report = extract(encoder, dataset(), "train", store, options())
    assert report.items_resumed == 32 and report.items_encoded == 48  # shards 0 and 2 reused, shard 1 redone
    np.testing.assert_array_equal(resumed.features, reference.features)
    np.testing.assert_array_equal(resumed.ids, reference.ids)
    fault_ledger.survived += 1
    fault_ledger.lost += 2 - report.items_resumed // 16


# -- two runs at once ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # kills or races real worker processes
def test_two_runs_sharing_one_cache_do_the_work_once(tmp_path, pixel_reference, fault_ledger):
    reference_records, reference_cache = pixel_reference
    for attempt in range(3):  # both start together; retried in the rare case one finished before the other began
        root = tmp_path / f"attempt-{attempt}"
        logs = [root / f"run-{i}.log" for i in range(2)]
        root.mkdir()
        handles = [open(log, "wb") for log in logs]
        processes = [worker(*worker_run_args(root), delay=0.1, stdout=subprocess.DEVNULL, stderr=handle)
                     for handle in handles]
        for process, handle in zip(processes, handles):
            assert process.wait(timeout=300) == 0, [log.read_text() for log in logs]
            handle.close()
        texts = [log.read_text() for log in logs]
        if any("another process is extracting" in text for text in texts):
            break
    else:
        pytest.fail("the two runs never overlapped in 3 attempts: " + repr(texts))
    fault_ledger.injected += 1
    counts = [items_encoded(text) for text in texts]
    assert sum(counts) <= 2 * 96 + 8, counts  # at most one batch of duplicate work (here: none)
    assert sum(counts) >= 2 * 96
    entries = snapshot_entries(root / "cache")
    reference_entries = snapshot_entries(reference_cache)
    assert entries.keys() == reference_entries.keys()
    for key, features in reference_entries.items():
        np.testing.assert_array_equal(entries[key], features)
    assert not leftovers(root)
    assert_same_records(load_records(root / "results"), reference_records, {"pixels": "paced-pixels"})
    fault_ledger.survived += 1
    fault_ledger.lost += len(reference_entries) - len(entries)


# -- the OS refuses to write ---------------------------------------------------------------------------------------


class FailingDisk:
    """The OS refusing writes under one directory, injected at the lowest calls the harness (and filelock) use.

    EACCES: every creation there fails (open for writing, os.open with O_CREAT, mkdir, rename into it), as in a
    directory one may not write. ENOSPC: the data of a file there fails to reach the disk (fsync) after `allow`
    files succeeded, as on a disk that fills up during a run. CI runs as root, so permission bits prove nothing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path, code: int, allow: int = 0) -> None:
        self.directory, self.code, self.allow, self.raised = os.path.abspath(directory), code, allow, 0
        real_open, real_os_open, real_mkdir, real_replace, real_rename, real_fsync = (
            builtins.open, os.open, os.mkdir, os.replace, os.rename, os.fsync)

        def refuse(path) -> None:
            self.raised += 1
            raise OSError(self.code, os.strerror(self.code), os.fsdecode(path))

        def fake_open(file, mode="r", *args, **kwargs):
            if self.code == errno.EACCES and isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") \
                    and self.covers(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if self.code == errno.EACCES and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and self.covers(path):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if self.code == errno.EACCES and self.covers(path):
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def renamer(real):
            def fake(src, dst, *args, **kwargs):
                if self.code == errno.EACCES and (self.covers(src) or self.covers(dst)):
                    refuse(dst)
                return real(src, dst, *args, **kwargs)
            return fake

        def fake_fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if self.code == errno.ENOSPC and self.covers(path):
                if self.allow > 0:
                    self.allow -= 1
                else:
                    self.raised += 1
                    raise OSError(self.code, os.strerror(self.code))  # as the kernel says it: no file name
            return real_fsync(fd)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", renamer(real_replace))
        monkeypatch.setattr(os, "rename", renamer(real_rename))
        monkeypatch.setattr(os, "fsync", fake_fsync)

    def covers(self, path) -> bool:
        return os.path.abspath(os.fsdecode(path)).startswith(self.directory + os.sep) or \
            os.path.abspath(os.fsdecode(path)) == self.directory


def assert_nothing_half_written(cache: Path, results: Path) -> None:
    assert not leftovers(cache) and not leftovers(results)
    snapshot_entries(cache)  # every finished entry loads (it asserts so)
    for shard in cache.glob("partial/*/shard-*.npz"):  # every shard on disk is complete
        with np.load(shard) as data:
            assert len(data["indices"]) + len(data["skipped"]) == 16
    load_records(results)  # every record loads


@pytest.mark.parametrize("where", ["cache", "results"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
def test_disk_full_or_not_writable_is_a_clear_error_and_loses_nothing(tmp_path, monkeypatch, where, code,
                                                                      fault_ledger):
    plugins = Plugins(entry_points=False)
    cache, results = tmp_path / "cache", tmp_path / "results"
    # Earlier work in the same directories: a finished run on another variant of the data set (same record path).
    earlier = run(config(tmp_path, ["pixels"], dataset_options={"per_class": 12}), plugins)
    assert not earlier.failures
    entries_before, records_before = snapshot_entries(cache), snapshot_records(results)
    reference = run(config(tmp_path / "reference", ["pixels"]), plugins).records

    with monkeypatch.context() as patch:
        # ENOSPC in the cache after plan.json and one shard reached the disk, so the failure lands mid-extraction.
        disk = FailingDisk(patch, cache if where == "cache" else results, code, allow=2 if where == "cache" else 0)
        if where == "cache":  # a full disk mid-extraction, or a cache that is read-only (it may still serve the
            # entries it holds, so the run only warns): the extraction fails, that cell with it
            failed = run(config(tmp_path, ["pixels"]), plugins)
            [failure] = failed.failures
            message = failure.error
        else:  # results: a refused directory is found before any work, a full disk at the write
            with pytest.raises(HarnessError) as raised:
                run(config(tmp_path, ["pixels"]), plugins)
            message = str(raised.value)
            if code == errno.EACCES:  # refused before the extraction of this variant of the data set
                assert sorted(snapshot_entries(cache)) == sorted(entries_before)
    assert disk.raised >= 1
    what, option = ("embedding cache", "--cache-dir") if where == "cache" else ("results directory", "--results-dir")
    assert f"cannot write to the {what} {str(tmp_path / where)!r}: {os.strerror(code)}" in message
    assert ("free some space there" if code == errno.ENOSPC else "make it writable") in message
    assert option in message
    assert_nothing_half_written(cache, results)
    fault_ledger.injected += 1
    lost = lost_entries(cache, entries_before) + lost_records(records_before)

    rerun = run(config(tmp_path, ["pixels"]), plugins)  # the fault gone: the same command completes
    assert not rerun.failures
    if where == "cache" and code == errno.ENOSPC:
        assert rerun.extractions[0].items_resumed == 16  # the shard that reached the disk was kept and reused
    assert_same_records(rerun.records, reference)
    fault_ledger.survived += 1
    fault_ledger.lost += lost


# -- broken encoders and plugins -----------------------------------------------------------------------------------


class NonFinitePixels(Pixels):
    """Pixels, except that from the third batch on the fourth item of each batch is NaN or inf."""

    name = "nonfinite-pixels"

    def __init__(self, value: float) -> None:
        self.value, self.calls = value, 0

    def fingerprint(self):
        return {**super().fingerprint(), "emits": str(self.value)}

    def encode(self, batch):
        self.calls += 1
        out = super().encode(batch)
        if self.calls >= 3:
            out[3] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_output_names_encoder_and_item_and_caches_nothing(tmp_path, harness_plugins, value,
                                                                     fault_ledger):
    broken = NonFinitePixels(value)
    plugins = harness_plugins(EncoderPlugin("nonfinite-pixels", lambda: broken))
    report = run(config(tmp_path, ["nonfinite-pixels", "pixels"]), plugins)
    [failure] = report.failures
    # Batches 1 and 2 (items 0-15) were fine and made shard 0; batch 3 holds items 16-23, the 4th bad.
    assert failure.encoder == "nonfinite-pixels"
    assert "'nonfinite-pixels' produced NaN or inf for item 'train/19' of synthetic/train" in failure.error
    with pytest.raises(NonFiniteEmbeddingError):  # the same error from the extraction itself
        extract(NonFinitePixels(value), dataset(), "train", EmbeddingStore(tmp_path / "alone"), options())
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "entries").glob("*/meta.json")]
    assert sorted(m["encoder"] for m in metas) == ["pixels", "pixels"]  # nothing of the broken encoder
    assert not list((tmp_path / "cache" / "partial").glob("*/shard-*"))  # not even its good first shard
    [marker] = [r for r in load_records(tmp_path / "results") if r["status"] == "failed"]
    assert marker["encoder"]["name"] == "nonfinite-pixels" and "train/19" in marker["error"]
    fault_ledger.injected += 1
    reference = run(config(tmp_path / "reference", ["pixels"]), Plugins(entry_points=False)).records
    assert_same_records(report.records, reference)
    fault_ledger.survived += 1
    fault_ledger.lost += 2 - len(metas)


class ExplodingPixels(Pixels):
    def encode(self, batch):
        raise RuntimeError("bug inside a third-party encoder")


class ExplodingEvaluator(Evaluator):
    name = "exploding"
    protocol = "exploding/v1"

    def evaluate(self, train, test, *, seed, device):
        raise RuntimeError("bug inside a third-party evaluator")


@pytest.mark.parametrize("where", ["encode", "evaluate"])
def test_a_plugin_raising_fails_its_cells_and_the_others_complete(tmp_path, harness_plugins, caplog, where,
                                                                   fault_ledger):
    if where == "encode":
        plugins = harness_plugins(EncoderPlugin("exploding", ExplodingPixels))
        cfg = config(tmp_path, ["exploding", "pixels"])
        failed_cell, reference_config = ("exploding", "knn"), config(tmp_path / "reference", ["pixels"])
    else:
        plugins = harness_plugins(EvaluatorPlugin("exploding", ExplodingEvaluator))
        cfg = config(tmp_path, ["pixels"], evaluators=["exploding", "knn"])
        failed_cell, reference_config = ("pixels", "exploding"), config(tmp_path / "reference", ["pixels"])
    report = run(cfg, plugins)
    [failure] = report.failures
    assert (failure.encoder, failure.evaluator or "knn") == failed_cell
    broken = "encoder" if where == "encode" else "evaluator"
    assert failure.error == f"RuntimeError: bug inside a third-party {broken}"
    assert "Traceback" in caplog.text and f"bug inside a third-party {broken}" in caplog.text
    on_disk = load_records(tmp_path / "results")
    [marker] = [r for r in on_disk if r["status"] == "failed"]
    assert (marker["encoder"]["name"], marker["evaluator"]["name"]) == failed_cell
    assert "Traceback" in marker["error"] and "bug inside a third-party" in marker["error"]
    fault_ledger.injected += 1
    reference = run(reference_config, Plugins(entry_points=False)).records
    assert_same_records(report.records, reference)
    assert_same_records([r for r in on_disk if r["status"] == "ok"], reference)
    cached = sorted(json.loads(p.read_text())["encoder"] for p in (tmp_path / "cache" / "entries").glob("*/meta.json"))
    assert cached == ["pixels", "pixels"]  # train and test; nothing of a failed encoder
    fault_ledger.survived += 1
    fault_ledger.lost += 2 - len(cached)
