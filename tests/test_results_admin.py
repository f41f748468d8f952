"""`harness results ls|prune` and the leaderboard's one-line summary of failed cells, end to end through
`harness.cli.main` on real record files (crafted, schema-valid records written by `write_record`)."""

from __future__ import annotations

import shutil

import numpy as np

from harness.cli import main
from harness.leaderboard import build_leaderboard
from harness.records import load_records, write_record
from harness_test_support.records import make_record

TRACEBACK = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in evaluate\n"
             "RuntimeError: evaluator failed on purpose\n")


def failed_record(encoder, dataset, evaluator, seed=0, error=TRACEBACK):
    record = make_record(encoder, dataset, evaluator, None, seed=seed)
    record.update(status="failed", error=error, metrics={}, date="2026-11-28T14:05:00+0000")
    return record


def fill(results):
    """Two ok records with per-item predictions and a UMAP layout beside them, five failed records: one with a
    (hand-made) artifact named in it, one with a stray predictions file of its cell beside it."""
    arrays = {"ids": np.arange(3), "score": np.ones(3)}
    ok = [write_record(results, make_record(name, "set1", "knn", score), predictions=arrays,
                       artifacts={"umap2d": np.zeros((3, 2))}) for name, score in (("enc-a", 0.8), ("enc-b", 0.6))]
    failed = [
        write_record(results, failed_record("enc-a", "set1", "clustering", seed=0),
                     artifacts={"umap2d": np.zeros((3, 2))}),
        write_record(results, failed_record("enc-a", "set1", "clustering", seed=1)),
        write_record(results, failed_record("enc-b", "set1", "clustering", seed=0,
                                            error="extraction failed: cannot read image x.png")),
        write_record(results, failed_record("enc-c", "set1", "knn")),
        write_record(results, failed_record("enc-c", "set2", "knn")),
    ]
    stray = failed[1].with_name("seed-1.predictions.npz")
    stray.write_bytes(b"left by an earlier record of this cell")
    return ok, failed, stray


def files_under(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_leaderboard_sums_up_failed_cells_in_one_note(tmp_path, capsys):
    results = tmp_path / "results"
    fill(results)
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    err = capsys.readouterr().err
    failure_lines = [line for line in err.splitlines() if "failed" in line]
    assert len(failure_lines) == 1, err  # not one line per failed cell
    assert failure_lines[0] == (
        f"note: 5 failed cell(s) not shown; list them: harness results ls --failed --results-dir {results}; "
        f"remove them: harness results prune --failed --results-dir {results} (a dry run; --yes removes)")
    # the notes the site shows are the same: one for the failures, beside the others
    notes = build_leaderboard(load_records(results)).notes
    assert [n for n in notes if "failed" in n] == [
        "5 failed cell(s) not shown; list them: harness results ls --failed; "
        "remove them: harness results prune --failed (a dry run; --yes removes)"]


def test_results_ls_failed_lists_each_failed_record_and_no_ok_one(tmp_path, capsys):
    results = tmp_path / "results"
    ok, failed, _ = fill(results)
    assert main(["results", "ls", "--failed", "--results-dir", str(results)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    for path in failed:
        [line] = [line for line in lines if str(path) in line]
        assert "2026-11-28 14:05" in line
    line = next(line for line in lines if str(failed[1]) in line)
    # the error's summary: a traceback's last line says what went wrong, its first line never does
    assert all(word in line.split() for word in ("enc-a", "set1", "clustering", "1"))
    assert "RuntimeError: evaluator failed on purpose" in line and "Traceback" not in captured.out
    assert "extraction failed: cannot read image x.png" in next(line for line in lines if str(failed[2]) in line)
    assert not any(str(path) in captured.out for path in ok)
    assert "5 failed record(s)" in captured.err and "harness results prune --failed" in captured.err

    assert main(["results", "ls", "--results-dir", str(results)]) == 0  # every record, ok ones with their score
    out = capsys.readouterr().out
    assert all(str(path) in out for path in ok + failed)
    assert "0.800" in next(line for line in out.splitlines() if str(ok[0]) in line)


def test_results_prune_is_a_dry_run_until_yes(tmp_path, capsys):
    results = tmp_path / "results"
    _, failed, stray = fill(results)
    before = files_under(results)
    for dry_run in (["results", "prune", "--failed"], ["results", "prune", "--failed", "--dry-run"]):
        assert main([*dry_run, "--results-dir", str(results)]) == 0
        captured = capsys.readouterr()
        assert files_under(results) == before  # nothing removed
        for path in failed:
            assert f"would remove {path}" in captured.out
        assert f"  and {stray.name}" in captured.out and "  and seed-0.umap2d.npz" in captured.out
        assert "would remove 5 failed record(s) and 2 file(s) beside them" in captured.err
        assert "--yes" in captured.err


def test_results_prune_yes_removes_failed_records_and_their_files_and_keeps_ok_ones(tmp_path, capsys):
    results = tmp_path / "results"
    ok, failed, stray = fill(results)
    ok_files = {p: b for p, b in files_under(results).items() if (results / p).parent in {o.parent for o in ok}}
    assert len(ok_files) == 6  # two records, each with predictions and a UMAP layout
    assert main(["results", "prune", "--failed", "--yes", "--results-dir", str(results)]) == 0
    captured = capsys.readouterr()
    assert all(f"removed {path}" in captured.out for path in failed)
    assert "removed 5 failed record(s) and 2 file(s) beside them" in captured.err
    assert files_under(results) == ok_files  # the ok records and their files, byte for byte; nothing else
    assert not (results / "enc-c").exists()  # folders left empty go too
    assert [r["status"] for r in load_records(results)] == ["ok", "ok"]

    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    assert "failed" not in capsys.readouterr().err
    assert main(["results", "ls", "--failed", "--results-dir", str(results)]) == 0
    assert "no failed records" in capsys.readouterr().err
    assert main(["results", "prune", "--failed", "--yes", "--results-dir", str(results)]) == 0  # nothing to do
    assert files_under(results) == ok_files


def test_results_prune_says_what_it_needs(tmp_path, capsys):
    results = tmp_path / "results"
    fill(results)
    before = files_under(results)
    assert main(["results", "prune", "--results-dir", str(results)]) == 2  # ok records are never pruned
    assert "--failed" in capsys.readouterr().err
    assert main(["results", "prune", "--failed", "--dry-run", "--yes", "--results-dir", str(results)]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert main(["results", "ls", "--results-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert files_under(results) == before


def test_a_failed_record_superseded_by_an_ok_one_from_another_machine_is_pointed_out_and_pruned(tmp_path, capsys):
    # Copied together, a failed and an ok record of one cell conflict (test_merge_records): the leaderboard refuses
    # the directory, and prune is the way out.
    write_record(tmp_path / "a", failed_record("enc-a", "set1", "knn"))
    write_record(tmp_path / "b", make_record("enc-a", "set1", "knn", 0.7))
    for name in ("a", "b"):
        shutil.copytree(tmp_path / name, tmp_path / "merged" / name)
    merged = tmp_path / "merged"
    assert main(["leaderboard", "--results-dir", str(merged)]) == 2
    assert "harness results prune --failed" in capsys.readouterr().err
    assert main(["results", "ls", "--failed", "--results-dir", str(merged)]) == 0
    assert f"superseded by {merged / 'b'}" in capsys.readouterr().err  # the ok record of the same cell
    assert main(["results", "prune", "--failed", "--yes", "--results-dir", str(merged)]) == 0
    capsys.readouterr()
    assert [r["main_score"] for r in load_records(merged)] == [0.7]
