"""`harness leaderboard --sort COLUMN`: rows ordered by any column, missing cells last, unknown columns helped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import HarnessError
from harness.records import load_records, write_record
from harness.leaderboard import build_leaderboard, sort_board
from harness_test_support.records import make_record

SCORES = {"enc-a": {"set1": 0.5, "set2": 0.9}, "enc-b": {"set1": 0.7}, "enc-c": {"set1": 0.6, "set2": 0.2},
          "Zed": {"set1": 0.1, "set2": 0.95}}


@pytest.fixture
def board(tmp_path):
    for encoder, cells in SCORES.items():
        for dataset, score in cells.items():
            write_record(tmp_path, make_record(encoder, dataset, "knn", score))
    return build_leaderboard(load_records(tmp_path))


def names(board):
    return [row["encoder"] for row in board.rows]


def test_sort_by_each_kind_of_column(board):
    # rank: best mean first; enc-b has no set2 cell, so no mean and no rank: last
    means = {e: sum(c.values()) / len(c) for e, c in SCORES.items() if len(c) == 2}
    assert names(sort_board(board)) == [*sorted(means, key=means.get, reverse=True), "enc-b"]
    assert names(sort_board(board, "set2 knn")) == ["Zed", "enc-a", "enc-c", "enc-b"]  # enc-b has no set2: last
    assert names(sort_board(board, "set1 knn")) == ["enc-b", "enc-c", "enc-a", "Zed"]
    assert names(sort_board(board, "encoder")) == ["Zed", "enc-a", "enc-b", "enc-c"]  # code-point order
    assert names(sort_board(board, "MEAN")) == names(sort_board(board, "rank"))  # case does not matter


def test_unknown_column_suggests_close_matches(board):
    with pytest.raises(HarnessError, match=r"did you mean: 'set1 knn', 'set2 knn'\?"):
        sort_board(board, "knn")
    with pytest.raises(HarnessError, match=r"did you mean: 'mean'\?.*the columns are: 'rank', 'encoder'"):
        sort_board(board, "maen")


@pytest.mark.slow  # `harness` subprocesses
def test_cli_sort(tmp_path):
    write_record(tmp_path, make_record("low", "set1", "knn", 0.2))
    write_record(tmp_path, make_record("high", "set1", "knn", 0.8))
    write_record(tmp_path, make_record("high", "set2", "knn", 0.1))
    out = subprocess.run([sys.executable, "-m", "harness", "leaderboard", "--results-dir", str(tmp_path),
                          "--sort", "set1 knn", "--format", "csv"], capture_output=True, text=True, check=True).stdout
    assert [line.split(",")[1] for line in out.splitlines()[1:] if line] == ["high", "low"]  # by set1, not by rank
    bad = subprocess.run([sys.executable, "-m", "harness", "leaderboard", "--results-dir", str(tmp_path),
                          "--sort", "set3 knn"], capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean: 'set2 knn', 'set1 knn'?" in bad.stderr


def test_a_metric_where_smaller_is_better_ranks_and_sorts_smallest_first(tmp_path):
    """`--metric ece` (the linear probe's calibration error): the best-calibrated encoder is rank 1, and sorting by
    its column puts it first; a main score (larger is better) still ranks largest first."""
    ece = {"calibrated": 0.02, "middling": 0.07, "overconfident": 0.20}
    for encoder, value in ece.items():
        write_record(tmp_path, make_record(encoder, "set1", "linear", 1 - value, metrics={"ece": value,
                                                                                        "top1_k20": 1 - value}))
    by_ece = build_leaderboard(load_records(tmp_path), metric="ece")
    assert by_ece.lower_is_better
    assert [(row["encoder"], row["rank"]) for row in by_ece.rows] == \
        [("calibrated", 1), ("middling", 2), ("overconfident", 3)]
    assert names(sort_board(by_ece, "set1 linear")) == ["calibrated", "middling", "overconfident"]
    assert any("ece: smaller is better" in note for note in by_ece.notes)
    by_accuracy = build_leaderboard(load_records(tmp_path))
    assert not by_accuracy.lower_is_better and by_accuracy.rows[0]["encoder"] == "calibrated"
    assert names(sort_board(by_accuracy, "set1 linear"))[0] == "calibrated"
    # a clusterer's noise fraction counts by its last part
    from harness.metric_names import lower_is_better
    assert lower_is_better("hdbscan.noise_fraction") and not lower_is_better("top1_k20")
