"""Result directories copied together from several machines: duplicates kept once, conflicts named, never merged."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from harness.errors import HarnessError
from harness.records import load_records, write_record
from harness.leaderboard import build_leaderboard
from harness_test_support.records import make_record


def machine(tmp_path, name, records):
    """One machine's results directory, copied into `merged/<name>` as a user would."""
    root = tmp_path / name
    for record in records:
        write_record(root, record)
    shutil.copytree(root, tmp_path / "merged" / name)
    return root


def test_disjoint_directories_merge_into_one_table(tmp_path):
    machine(tmp_path, "a", [make_record("enc-a", "set1", "knn", 0.8), make_record("pixels", "set1", "knn", 0.2)])
    machine(tmp_path, "b", [make_record("enc-a", "set2", "knn", 0.6)])
    board = build_leaderboard(load_records(tmp_path / "merged"))
    rows = {r["encoder"]: r for r in board.rows}
    assert rows["enc-a"]["cells"] == {"set1 knn": [0.8], "set2 knn": [0.6]}
    assert rows["pixels"]["cells"] == {"set1 knn": [0.2]}


def test_identical_duplicate_is_counted_once_with_a_note(tmp_path, caplog):
    machine(tmp_path, "a", [make_record("enc-a", "set1", "knn", 0.8)])
    machine(tmp_path, "b", [make_record("enc-a", "set1", "knn", 0.8), make_record("enc-a", "set1", "knn", 0.4, seed=1)])
    with caplog.at_level(logging.WARNING, logger="harness.records"):
        records = load_records(tmp_path / "merged")
    assert len(records) == 2 and sorted(r["seed"] for r in records) == [0, 1]
    assert "counted once" in caplog.text and "merged/a" in caplog.text and "merged/b" in caplog.text
    board = build_leaderboard(records)
    assert board.rows[0]["cells"]["set1 knn"] == [0.8, 0.4]  # not [0.8, 0.8, 0.4]


def test_same_cell_with_different_results_names_both_files(tmp_path):
    machine(tmp_path, "a", [make_record("enc-a", "set1", "knn", 0.8)])
    machine(tmp_path, "b", [make_record("enc-a", "set1", "knn", 0.7)])
    with pytest.raises(HarnessError) as error:
        load_records(tmp_path / "merged")
    message = str(error.value)
    assert "merged/a/enc-a/set1/knn" in message and "merged/b/enc-a/set1/knn" in message
    assert "0.8" in message and "0.7" in message and "same cell" in message


def test_a_failed_and_an_ok_record_of_one_cell_conflict(tmp_path):
    failed = make_record("enc-a", "set1", "knn", None)
    failed.update(status="failed", error="Traceback ...", metrics={})
    machine(tmp_path, "a", [failed])
    machine(tmp_path, "b", [make_record("enc-a", "set1", "knn", 0.7)])
    with pytest.raises(HarnessError, match=r"status failed vs ok"):
        load_records(tmp_path / "merged")


def test_two_protocols_in_one_column_name_the_files(tmp_path):
    # one cell under two protocols, copied from two machines
    machine(tmp_path, "a", [make_record("enc-a", "set1", "knn", 0.8)])
    machine(tmp_path, "b", [make_record("enc-a", "set1", "knn", 0.8, protocol="knn/dino-v2")])
    with pytest.raises(HarnessError) as error:
        load_records(tmp_path / "merged")
    message = str(error.value)
    assert "knn/dino-v1" in message and "knn/dino-v2" in message and "different protocols" in message
    assert "merged/a/" in message and "merged/b/" in message


def test_two_protocols_for_different_encoders_in_one_column_also_fail(tmp_path):
    # no cell is shared, but the table would still put both under "set1 knn"
    machine(tmp_path, "a", [make_record("enc-a", "set1", "knn", 0.8)])
    machine(tmp_path, "b", [make_record("enc-b", "set1", "knn", 0.5, protocol="knn/dino-v2")])
    with pytest.raises(HarnessError, match="different protocols"):
        load_records(tmp_path / "merged")
    # other options make another column, so a different protocol there is no conflict
    shutil.rmtree(tmp_path / "merged" / "b")
    machine(tmp_path, "c", [make_record("enc-b", "set1", "knn", 0.5, protocol="knn/dino-v2",
                                        options={"temperature": 0.1})])
    assert len(load_records(tmp_path / "merged")) == 2


def test_other_schema_version_and_malformed_file_among_copied_directories(tmp_path):
    machine(tmp_path, "a", [make_record("enc-a", "set1", "knn", 0.8)])
    path = next((tmp_path / "merged" / "a").rglob("seed-0.json"))
    record = json.loads(path.read_text())
    record["schema_version"] = 2
    path.write_text(json.dumps(record))
    with pytest.raises(HarnessError, match=r"merged/a/.*seed-0\.json.*schema_version 2"):
        load_records(tmp_path / "merged")
    record["schema_version"] = 1
    del record["metrics"]
    path.write_text(json.dumps(record))
    with pytest.raises(HarnessError, match=r"merged/a/.*seed-0\.json.*does not match the result-record schema.*metrics"):
        load_records(tmp_path / "merged")
