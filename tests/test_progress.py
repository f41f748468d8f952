"""Progress where no terminal shows a bar (a CI log, nohup, a pipe): a line per stage and per cell with its elapsed
time, the linear probe's C search and the clustering steps included (issue 11: nothing was printed for minutes)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from harness.progress import Progress


def test_a_run_into_a_pipe_logs_every_stage_and_cell_with_its_time(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "-e", "pixels", "-d", "synthetic", "--eval", "knn,linear,clustering",
         "--eval-option", "clustering.reduce=pca", "--results-dir", str(tmp_path / "r"), "--cache-dir",
         str(tmp_path / "c")], capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()

    def line(pattern: str) -> str:
        found = [text for text in lines if re.search(pattern, text)]
        assert found, f"no line matches {pattern!r} in:\n{done.stderr}"
        return found[0]

    for split in ("train", "test"):
        line(rf"^INFO extracting pixels on synthetic/{split}: 96 img\(s\) to do$")
        line(rf"^INFO extracted pixels on synthetic/{split}: 96 items in [0-9.]+ s")
    for evaluator, metric in (("knn", "top1_k20"), ("linear", "top1"), ("clustering", "ward.ami")):
        line(rf"^INFO pixels on synthetic, {evaluator}: evaluating$")
        line(rf"^INFO pixels on synthetic, {evaluator}: {metric} [01]\.\d{{3}}, [0-9.]+ s$")
    line(r"^INFO linear: C search \(86 train, 10 validation items\): \d+ fit\(s\) done, [0-9.]+ s; chose C=")
    line(r"^INFO clustering: 3 seed\(s\) x \(pca \+ kmeans, ward, hdbscan, spectral, affinity\) on 96 items: "
         r"20 step\(s\) done, [0-9.]+ s")
    # Each stage's lines come in the order the work happens.
    order = [lines.index(line(p)) for p in (r"extracted pixels on synthetic/test", r"synthetic, knn: evaluating",
                                            r"linear: C search .* done", r"synthetic, linear: top1",
                                            r"clustering: 3 seed.* done", r"synthetic, clustering: ward")]
    assert order == sorted(order)


def test_a_long_stage_logs_where_it_is_and_grows_its_total(caplog):
    caplog.set_level(logging.INFO, logger="harness.progress")
    with Progress(2, "searching", unit="fit", every_s=0.0) as progress:  # every update is due for a line
        progress.update(1, "C=1")
        progress.update(1, "C=10")
        progress.update(1, "C=100")  # a refinement finds a third fit to do
    assert [r.getMessage().split(", ")[0] for r in caplog.records] == [
        "searching: 2 fit(s) to do", "searching: 1 of 2 fit(s)", "searching: 2 of 2 fit(s)",
        "searching: 3 of 3 fit(s)", "searching: 3 fit(s) done"]
    assert caplog.records[-1].getMessage().endswith("; C=100")


def test_no_progress_keeps_only_the_summary_and_a_failed_stage_claims_nothing(caplog):
    caplog.set_level(logging.INFO, logger="harness.progress")
    with Progress(3, "quiet", enabled=False, every_s=0.0) as progress:
        progress.update(3)
    try:
        with Progress(3, "broken", enabled=False) as progress:
            progress.update(1)
            raise RuntimeError("stopped")
    except RuntimeError:
        pass
    assert [r.getMessage().split(", ")[0] for r in caplog.records] == ["quiet: 3 step(s) done"]
