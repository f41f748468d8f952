"""Leaderboard tables and the label-free view, from crafted (schema-valid) records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from harness.errors import HarnessError
from harness.records import load_records, write_record
from harness.leaderboard import build_leaderboard, render
from harness.leaderboard.label_free import label_free_rows, render_label_free
from harness_test_support.records import make_record


def test_table_missing_cells_seeds_options_rank_and_baselines(tmp_path):
    for record in [
        make_record("enc-a", "set1", "knn", 0.8),
        make_record("enc-a", "set2", "knn", 0.6),
        make_record("enc-b", "set1", "knn", 0.9),  # no set2: missing, not zero
        make_record("pixels", "set1", "knn", 0.2, pretraining="none"),
        make_record("pixels", "set2", "knn", 0.1, pretraining="none"),
        make_record("enc-a", "set1", "clustering", 0.30, seed=0),
        make_record("enc-a", "set1", "clustering", 0.40, seed=1),
        make_record("enc-a", "set1", "knn", 0.7, options={"temperature": 0.1}),
    ]:
        write_record(tmp_path, record)
    board = build_leaderboard(load_records(tmp_path))
    assert board.columns == ["set1 clustering", "set1 knn", "set1 knn [temperature=0.1]", "set2 knn"]
    rows = {r["encoder"]: r for r in board.rows}
    assert rows["enc-b"]["cells"].get("set2 knn") is None
    assert rows["enc-a"]["mean"] == pytest.approx((0.35 + 0.8 + 0.7 + 0.6) / 4) and rows["enc-a"]["rank"] == 1
    # a row missing a cell has no mean and no rank: enc-b's 0.9 over one column must not outrank enc-a's four
    assert rows["enc-b"]["mean"] is None and rows["enc-b"]["rank"] is None and rows["pixels"]["rank"] is None
    assert [r["encoder"] for r in board.rows] == ["enc-a", "enc-b", "pixels"]
    assert any(note.startswith("enc-b has no score for set1 clustering, set1 knn [temperature=0.1], set2 knn")
               for note in board.notes)
    text = render(board, "plain")
    assert "0.350 ± 0.071" in text and "pixels (baseline)" in text
    enc_b_line = next(line for line in text.splitlines() if "enc-b" in line)
    assert enc_b_line.count("—") == 5  # rank, clustering, knn [temperature], set2, mean
    csv_text = render(board, "csv")
    assert csv_text.splitlines()[0].startswith("rank,encoder,set1 clustering")


def test_hostile_names_are_escaped_in_html(tmp_path):
    write_record(tmp_path, make_record("<img src=x onerror=alert(1)>", "set1", "knn", 0.5))
    html = render(build_leaderboard(load_records(tmp_path)), "html")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_unknown_metric_suggests_close_matches(tmp_path):
    write_record(tmp_path, make_record("enc-a", "set1", "knn", 0.5, metrics={"top1_k20": 0.5, "top5_k20": 0.9}))
    assert build_leaderboard(load_records(tmp_path), metric="top5_k20").rows[0]["cells"]["set1 knn"] == [0.9]
    with pytest.raises(HarnessError, match="did you mean: top5_k20"):
        build_leaderboard(load_records(tmp_path), metric="top5_k2")


def test_empty_results_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(HarnessError, match="no result records"):
        build_leaderboard(load_records(tmp_path))
    path = write_record(tmp_path, make_record("enc-a", "set1", "knn", 0.5))
    path.write_text(path.read_text()[:50])  # truncated
    with pytest.raises(HarnessError, match=r"seed-0\.json.*not valid JSON"):
        load_records(tmp_path)
    record = make_record("enc-a", "set1", "knn", 0.5)
    record["schema_version"] = 2
    path.write_text(json.dumps(record))
    with pytest.raises(HarnessError, match="schema_version 2"):
        load_records(tmp_path)


def clustering_record(name, silhouette, ami, pretraining="ssl"):
    metrics = {"labelled": True, "mean": {"ward.silhouette_umap": silhouette, "ward.ami": ami}}
    return make_record(name, "set1", "clustering", ami, pretraining=pretraining, metrics=metrics)


def test_label_free_correlation_excludes_untrained_and_pixels(tmp_path):
    pretrained = [("a", 0.50, 0.60), ("b", 0.45, 0.62), ("c", 0.40, 0.40), ("d", 0.30, 0.35), ("e", 0.20, 0.10)]
    for name, silhouette, ami in pretrained:
        write_record(tmp_path, clustering_record(name, silhouette, ami))
    write_record(tmp_path, clustering_record("random:net", 0.90, 0.05, pretraining="random"))
    records = load_records(tmp_path)
    rows = label_free_rows(records, "set1")
    assert rows[0].encoder == "random:net" and rows[0].excluded  # highest silhouette, shown, not correlated
    text = render_label_free(records)
    expected = spearmanr([s for _, s, _ in pretrained], [a for _, _, a in pretrained]).statistic
    assert f"over 5 pretrained encoders: {expected:+.3f}" in text
    assert "left out of the correlation" in text


def test_label_free_ties_share_a_rank(tmp_path):
    for name, silhouette, ami in (("a", 0.5, 0.6), ("b", 0.5, 0.4), ("c", 0.3, 0.6), ("d", 0.2, None)):
        write_record(tmp_path, clustering_record(name, silhouette, ami))
    rows = {r.encoder: r for r in label_free_rows(load_records(tmp_path), "set1")}
    assert {n: r.silhouette_rank for n, r in rows.items()} == {"a": 1, "b": 1, "c": 3, "d": 4}
    assert {n: r.ami_rank for n, r in rows.items()} == {"a": 1, "b": 3, "c": 1, "d": None}


def test_label_free_with_few_encoders_gives_a_caveat_and_no_correlation(tmp_path):
    write_record(tmp_path, clustering_record("lite0", 0.3, 0.35, pretraining="supervised"))
    write_record(tmp_path, clustering_record("pixels", 0.4, 0.1, pretraining="none"))
    write_record(tmp_path, clustering_record("random:lite0", 0.6, 0.05, pretraining="random"))
    text = render_label_free(load_records(tmp_path))
    assert "Caveat: only 1 pretrained encoder" in text and "Spearman" not in text


def test_overlapping_clustering_seeds_count_once_as_in_compare(tmp_path):
    """Run seeds 0 and 1 cluster with seeds 0-2 and 1-3: the cell holds seeds 0, 1, 2, 3 once each."""
    from harness.leaderboard.compare import _per_seed_values

    ami = {0: 0.30, 1: 0.34, 2: 0.38, 3: 0.42}
    for run_seed in (0, 1):
        per_seed = {str(s): {"top1_k20": ami[s]} for s in range(run_seed, run_seed + 3)}
        write_record(tmp_path, make_record("enc", "set1", "clustering", 0.0, seed=run_seed,
                                           metrics={"per_seed": per_seed}))
    records = load_records(tmp_path)
    board = build_leaderboard(records)
    assert sorted(board.rows[0]["cells"]["set1 clustering"]) == sorted(ami.values())
    assert sorted(_per_seed_values(records, "top1_k20").values()) == sorted(ami.values())  # the same four values


def test_metric_only_some_columns_have_shows_a_dash_and_a_note(tmp_path, capsys):
    from harness.cli import main

    for encoder, (knn, retrieval, recall) in {"enc-a": (0.8, 0.5, 0.7), "enc-b": (0.6, 0.4, 0.9),
                                              "pixels": (0.2, 0.1, 0.3)}.items():
        write_record(tmp_path, make_record(encoder, "set1", "knn", knn,
                                           pretraining="none" if encoder == "pixels" else "ssl"))
        write_record(tmp_path, make_record(encoder, "set1", "retrieval", retrieval,
                                           pretraining="none" if encoder == "pixels" else "ssl",
                                           metrics={"map": retrieval, "recall_at_1": recall}))
    board = build_leaderboard(load_records(tmp_path), metric="recall_at_1")
    assert board.columns == ["set1 knn", "set1 retrieval"]
    rows = {r["encoder"]: r for r in board.rows}
    assert rows["enc-b"]["cells"] == {"set1 retrieval": [0.9]} and "set1 knn" not in rows["enc-a"]["cells"]
    # the column without the metric is not in the mean, so every row still has one, and a rank
    assert [(r["encoder"], r["mean"], r["rank"]) for r in board.rows] == [("enc-b", 0.9, 1), ("enc-a", 0.7, 2),
                                                                          ("pixels", 0.3, 3)]
    assert board.notes == ["set1 knn has no metric 'recall_at_1': shown as —, not in the mean"]
    assert main(["leaderboard", "--metric", "recall_at_1", "--results-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    enc_b = next(line for line in captured.out.splitlines() if "enc-b" in line).split()
    assert enc_b == ["1", "enc-b", "—", "0.900", "0.900"]
    assert "note: set1 knn has no metric 'recall_at_1': shown as —, not in the mean" in captured.err
    # a metric no column has is still an error with close matches
    assert main(["leaderboard", "--metric", "recall_at_2", "--results-dir", str(tmp_path)]) == 2
    assert "did you mean: recall_at_1" in capsys.readouterr().err


def test_ranks_and_rank_correlation_agree_with_scipy(tmp_path):
    from scipy.stats import rankdata

    from harness.leaderboard.label_free import spearman

    means = {"a": 0.5, "b": 0.7, "c": 0.5, "d": 0.9, "e": 0.1}
    for encoder, score in means.items():
        write_record(tmp_path, make_record(encoder, "set1", "knn", score))
    board = build_leaderboard(load_records(tmp_path))
    expected = dict(zip(means, rankdata([-v for v in means.values()], method="min").astype(int).tolist()))
    assert {r["encoder"]: r["rank"] for r in board.rows} == expected == {"a": 3, "b": 2, "c": 3, "d": 1, "e": 5}
    x, y = [0.1, 0.4, 0.4, 0.9, 0.3, 0.2], [1.0, 3.0, 2.0, 5.0, 2.0, 0.0]
    # Spearman's rho written out: the Pearson correlation of the average ranks (ties share the mean of their ranks)
    x_ranks, y_ranks = [1, 4.5, 4.5, 6, 3, 2], [2, 5, 3.5, 6, 3.5, 1]
    assert spearman(x, y) == pytest.approx(float(np.corrcoef(x_ranks, y_ranks)[0, 1]), abs=1e-12)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0  # no rank order on one side


def test_the_leaderboard_imports_only_records_files_errors_and_names_from_the_core():
    import ast
    from pathlib import Path

    allowed = {"harness.records", "harness.files", "harness.errors", "harness.metric_names"}
    folder = Path(__file__).resolve().parents[1] / "leaderboard"
    seen = set()
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + ([f"harness.{a.name}" for a in node.names] if node.module == "harness"
                                           else [])
                modules = modules[1:] if node.module == "harness" else modules
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "harness" and not module.startswith("harness.leaderboard"):
                    seen.add(module)
                    assert module in allowed, f"{path.name} imports {module}"
    assert "harness.records" in seen and "harness.metric_names" in seen
