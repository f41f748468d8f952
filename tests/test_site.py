"""`harness publish`: the static site, opened from file:// in headless Chromium (see tests/harness_test_support/browser.py)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from harness.errors import HarnessError
from harness.records import load_records, write_record
from harness.leaderboard.compare import compare_encoders
from harness.leaderboard.site import Section, json_for_script, publish
from harness_test_support.records import make_record

SCREENSHOT = Path(__file__).parent / "artifacts" / "screenshots" / "site.png"
IMG_NAME = "<img src=x onerror=alert(1)>"
SCRIPT_NAME = "</script><script>window.pwned = 1; alert(2)</script>"
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

ROWS_JS = """() => Array.from(document.querySelectorAll('#leaderboard-table tbody tr'))
                   .map(tr => tr.querySelector('th').firstChild.textContent)"""


def header(opened, label):
    return opened.page.locator("#leaderboard-table thead th", has_text=label).first


def write_crafted(results: Path) -> dict[str, dict[str, float]]:
    """Records with hostile names, a missing cell, scores whose text order differs from their numeric order
    (9.5 < 12.0 but "12.000" < "9.500"), and a clustering record with a 2-D layout; returns encoder -> scores."""
    scores = {"alpha": {"set1 knn": 0.8, "set2 knn": 12.0},
              IMG_NAME: {"set1 knn": 0.6, "set2 knn": 9.5},
              SCRIPT_NAME: {"set1 knn": 0.7},  # no set2 record: a missing cell
              "pixels": {"set1 knn": 0.1, "set2 knn": 0.5}}
    for encoder, cells in scores.items():
        for column, score in cells.items():
            write_record(results, make_record(encoder, column.split()[0], "knn", score,
                                              pretraining="none" if encoder == "pixels" else "supervised"))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    layout = rng.normal(size=(200, 2)) + 6 * np.stack([np.cos(labels), np.sin(labels)], 1)
    record = make_record(IMG_NAME, "set1", "clustering", 0.4)
    record["dataset"]["class_names"] = [f"class <{i}>" for i in range(10)]
    write_record(results, record, predictions={"ids": np.arange(200), "label": labels},
                 artifacts={"umap2d": layout.astype(np.float32)})
    scores[IMG_NAME]["set1 clustering"] = 0.4
    return scores


LONG_ENCODERS = ["timm:vit_large_patch14_clip_224.openai_ft_in12k_in1k@checkpoints/run-2026-11-27/epoch-100.pth",
                 "open_clip:ViT-bigG-14-CLIPA-336@laion2b_s39b_b160k/finetuned-on-our-own-photos"]


def write_wide(results: Path) -> None:
    """Many columns with long names: two long-named encoders and a baseline on five long-named datasets, kNN
    (with per-item predictions, so the comparison tables fill) and linear on each, and clustering with a 2-D
    layout (a UMAP plot whose title is longer than the figure) on one."""
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 4
    for encoder in [*LONG_ENCODERS, "pixels"]:
        pretraining = "none" if encoder == "pixels" else "supervised"
        for d in range(5):
            dataset = f"imagefolder:/data/field-photos-of-birds-{d}"
            score = (rng.random(40) < 0.7).astype(np.float64)
            write_record(results, make_record(encoder, dataset, "knn", float(score.mean()), pretraining=pretraining),
                         predictions={"ids": np.array([f"t/{i}" for i in range(40)]), "label": labels,
                                      "prediction": np.where(score == 1, labels, 9), "score": score})
            write_record(results, make_record(encoder, dataset, "linear", float(rng.random()), pretraining=pretraining))
        record = make_record(encoder, "imagefolder:/data/field-photos-of-birds-0", "clustering", 0.4,
                             pretraining=pretraining)
        record["dataset"]["class_names"] = ["sparrow", "blackbird", "great crested grebe", "wren"]
        write_record(results, record, predictions={"ids": np.array([f"t/{i}" for i in range(40)]), "label": labels},
                     artifacts={"umap2d": rng.normal(size=(40, 2)) + labels[:, None]})


def expected_order(scores, column, descending):
    """Encoders by a column's value, missing last either way (the table's rule, written out independently)."""
    present = sorted((s[column], e) for e, s in scores.items() if column in s)
    if descending:
        present.reverse()
    return [e for _, e in present] + [e for e, s in scores.items() if column not in s]


def test_json_for_script_cannot_end_the_script_element():
    value = {"name": SCRIPT_NAME, "comment": "<!-- & \u2028"}
    text = json_for_script(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_hostile_names_are_escaped_in_the_page_source(tmp_path):
    write_crafted(tmp_path / "results")
    page = publish(load_records(tmp_path / "results"), tmp_path / "site")
    source = page.read_text(encoding="utf-8")
    assert IMG_NAME not in source and "<img src=x" not in source and SCRIPT_NAME not in source
    assert "&lt;img src=x onerror=alert(1)&gt;" in source
    assert source.count("</script>") == 2  # the data block and the sorting script, nothing from a name


def test_extra_sections_and_republishing_replace_only_our_files(tmp_path):
    write_crafted(tmp_path / "results")
    site = tmp_path / "site"
    publish(load_records(tmp_path / "results"), site)
    assert len(list(site.glob("assets/umap-*.png"))) == 1 and len(list(site.glob("assets/bars-*.png"))) == 2
    (site / "assets" / "logo.png").write_bytes(b"not ours")
    knn_only = [r for r in load_records(tmp_path / "results") if r["evaluator"]["name"] == "knn"]
    extra = Section("comparison", "Comparison <new>", "<p>diffs</p>")
    source = publish(knn_only, site, extra_sections=[extra]).read_text(encoding="utf-8")
    assert not list(site.glob("assets/umap-*.png")) and (site / "assets" / "logo.png").exists()
    assert '<a href="#comparison">Comparison &lt;new&gt;</a>' in source and "<p>diffs</p>" in source
    assert "No record has a 2-D UMAP layout" in source


@pytest.mark.slow  # headless Chromium
def test_sorting_escaping_and_no_network_in_chromium(tmp_path, open_page):
    scores = write_crafted(tmp_path / "results")
    page_path = publish(load_records(tmp_path / "results"), tmp_path / "site")
    opened = open_page(page_path)
    page = opened.page
    # the page opens in rank order: rows with every cell by mean, then the rows that miss a cell (no mean, no
    # rank) by name; one row per encoder, the hostile names shown as text
    columns = {column for cells in scores.values() for column in cells}
    means = {e: statistics.fmean(cells.values()) for e, cells in scores.items() if set(cells) == columns}
    unranked = sorted(e for e in scores if e not in means)
    assert page.evaluate(ROWS_JS) == sorted(means, key=means.get, reverse=True) + unranked

    header(opened, "set2 knn").click()
    assert page.evaluate(ROWS_JS) == expected_order(scores, "set2 knn", descending=True)
    header(opened, "set2 knn").click()
    ascending = page.evaluate(ROWS_JS)
    assert ascending == expected_order(scores, "set2 knn", descending=False) and ascending[-1] == SCRIPT_NAME
    header(opened, "set1 knn").click()
    assert page.evaluate(ROWS_JS) == expected_order(scores, "set1 knn", descending=True)
    assert page.locator("#leaderboard-table th[aria-sort=descending]").inner_text().startswith("set1 knn")

    # nothing a name holds became markup or ran: the only images are the plots, no handler, no script ran
    sources = page.evaluate("() => Array.from(document.images).map(i => i.getAttribute('src'))")
    assert len(sources) == 3 and all(s.startswith("assets/") and s.endswith(".png") for s in sources)
    assert page.evaluate("() => document.querySelectorAll('[onerror]').length") == 0
    assert page.evaluate("() => window.pwned") is None
    assert opened.dialogs == [] and opened.errors == []
    assert page.evaluate("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    data = page.evaluate("() => JSON.parse(document.getElementById('leaderboard-data').textContent)")
    assert {row["encoder"] for row in data["rows"]} == set(scores)
    # everything came from the page's directory: no request left file://
    assert opened.requests and all(url.startswith("file://") for url in opened.requests), opened.requests


# The page's width against the window's, and for each table in a section, its box: a table either fits its box or
# the box scrolls sideways (overflow-x auto/scroll) inside the page.
LAYOUT_JS = """() => ({
    innerWidth: window.innerWidth, clientWidth: document.documentElement.clientWidth,
    scrollWidth: document.documentElement.scrollWidth,
    tables: Array.from(document.querySelectorAll('section table')).map(table => {
        const box = table.parentElement;
        return {id: table.id || table.closest('section').id, width: table.offsetWidth, boxWidth: box.clientWidth,
                boxRight: box.getBoundingClientRect().right, overflowX: getComputedStyle(box).overflowX};
    }),
})"""


@pytest.mark.slow  # headless Chromium
def test_wide_tables_scroll_in_their_own_box_and_the_page_never_scrolls_sideways(tmp_path, open_page):
    """Issue 11: at 1,400 px the leaderboard overflowed the window; narrower windows, down to a phone's, must not."""
    write_wide(tmp_path / "results")
    opened = open_page(publish(load_records(tmp_path / "results"), tmp_path / "site"))
    for width in (1400, 1000, 800, 400):
        opened.page.set_viewport_size({"width": width, "height": 900})
        layout = opened.page.evaluate(LAYOUT_JS)
        assert layout["scrollWidth"] <= layout["clientWidth"], layout
        assert len(layout["tables"]) == 1 + 2, layout  # the leaderboard, a comparison table per long-named encoder
        # the data is wide enough that the leaderboard cannot fit, so the scrolling branch is what is tested
        assert layout["tables"][0]["id"] == "leaderboard-table" and layout["tables"][0]["width"] > width, layout
        for table in layout["tables"]:
            assert table["boxRight"] <= layout["clientWidth"], (width, table)
            assert table["width"] <= table["boxWidth"] or table["overflowX"] in ("auto", "scroll"), (width, table)
    assert opened.errors == []


@pytest.mark.slow  # the real offline default, a subprocess, Chromium
def test_offline_default_published_through_the_cli(full_default_run, tmp_path, open_page):
    """`harness run` (the session's full default run) then `harness publish`, opened in Chromium."""
    _, results = full_default_run
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "harness", "publish", "--results-dir", str(results),
                             "--out", str(site)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    records = load_records(results)
    opened = open_page(site / "index.html")
    page = opened.page
    assert sorted(page.evaluate(ROWS_JS)) == ["efficientnet_lite0", "pixels", "random:tf_efficientnet_lite0"]

    table = page.evaluate("""() => {
        const heads = Array.from(document.querySelectorAll('#leaderboard-table thead th')).map(th => th.textContent);
        return Array.from(document.querySelectorAll('#leaderboard-table tbody tr')).map(tr =>
            Object.fromEntries(Array.from(tr.children).map((td, i) => [heads[i], td.firstChild.textContent])));
    }""")
    shown = {row["encoder"]: row for row in table}
    for record in records:
        column = f"{record['dataset']['name']} {record['evaluator']['name']}"
        per_seed = record["metrics"].get("per_seed")
        if per_seed:  # clustering: mean ± sample standard deviation over the seeds' AMI
            values = [v[record["main_metric"]] for v in per_seed.values()]
            expected = f"{statistics.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        else:
            expected = f"{record['main_score']:.3f}"
        assert shown[record["encoder"]["name"]][column] == expected, (record["encoder"]["name"], column)
    assert shown["pixels"]["cifar10-mini linear"] == "—"  # not run in the session (see full_default_run)

    header(opened, "cifar10-mini knn").click()
    knn = {r["encoder"]["name"]: r["main_score"] for r in records if r["evaluator"]["name"] == "knn"}
    assert page.evaluate(ROWS_JS) == sorted(knn, key=knn.get, reverse=True)

    images = page.evaluate("() => Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 4 and all(w > 300 and h > 200 for _, w, h in images)  # 1 bar chart + 3 UMAP scatters
    assert sum(alt.startswith("UMAP of ") for alt, _, _ in images) == 3
    assert opened.errors == [] and all(url.startswith("file://") for url in opened.requests)

    # provenance: a score links to its cell's details, which open and show the weights hash and versions
    lite = next(r for r in records if r["encoder"]["name"] == "efficientnet_lite0" and r["evaluator"]["name"] == "knn")
    page.locator("#leaderboard-table a", has_text=f"{lite['main_score']:.3f}").first.click()
    details = page.locator("details[open]")
    details.first.wait_for()  # opened by the page's hashchange handler, which runs after the click returns
    assert details.count() == 1
    text = details.inner_text()
    assert lite["encoder"]["info"]["weights"]["sha256"] in text and "knn/dino-v1" in text
    assert f"torch {lite['versions']['torch']}" in text and lite["date"] in text

    # the comparison view: the trained encoder against each baseline, the same rows `harness compare` computes
    shown_rows = page.evaluate("""() => Array.from(document.querySelectorAll('#comparison tbody tr')).map(tr =>
        Array.from(tr.children).map(td => td.textContent.trim()))""")
    expected_rows = compare_encoders(records, "efficientnet_lite0", ["pixels", "random:tf_efficientnet_lite0"])
    by_key = {(row[1], row[5]): row for row in shown_rows if row[3] == "efficientnet_lite0"}
    assert len(by_key) == len(expected_rows) >= 5  # knn, linear and clustering against each baseline (pixels: no linear)
    for row in expected_rows:
        cells = by_key[(row.column.removeprefix("cifar10-mini "), row.baseline)]
        assert cells[7] == f"{row.difference:+.3f}" and cells[8] == f"[{row.low:+.3f}, {row.high:+.3f}]"
        assert cells[9] == row.verdict
    assert by_key[("knn", "pixels")][9] == "new better"  # +0.48 kNN: far outside the noise

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)  # for a person to look at

    scatter = next(site.glob("assets/umap-efficientnet_lite0-*.png"))
    pixels = {"#%02x%02x%02x" % tuple(p[:3]) for p in np.asarray(Image.open(scatter).convert("RGB")).reshape(-1, 3)}
    assert set(TAB10) <= pixels  # ten classes, ten colours


@pytest.mark.slow  # a `harness` subprocess
def test_publish_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "harness", "publish", "--results-dir", str(tmp_path / "empty"),
                             "--out", str(tmp_path / "site")], capture_output=True, text=True)
    assert result.returncode != 0 and "no result records found" in result.stderr
    assert not (tmp_path / "site").exists()
    write_record(tmp_path / "results", make_record("a", "set1", "knn", 0.5))
    (tmp_path / "file").write_text("x")
    with pytest.raises(HarnessError, match="is a file"):
        publish(load_records(tmp_path / "results"), tmp_path / "file")


def test_publish_reads_each_predictions_file_once_and_survives_records_without_their_npz(tmp_path, monkeypatch):
    import harness.leaderboard.compare as compare_module

    results = tmp_path / "results"
    rng = np.random.default_rng(0)
    for encoder, pretraining in (("new-a", "ssl"), ("new-b", "ssl"), ("base-1", "none"), ("base-2", "random")):
        score = (rng.random(40) < 0.7).astype(np.float64)
        record = make_record(encoder, "set1", "knn", float(score.mean()), pretraining=pretraining)
        write_record(results, record, artifacts={"umap2d": rng.random((40, 2))},
                     predictions={"ids": np.array([f"t/{i}" for i in range(40)]), "label": np.arange(40) % 4,
                                  "prediction": np.where(score == 1, np.arange(40) % 4, 9), "score": score})
    opened: list[str] = []
    real = compare_module.load_predictions

    def counting(record):
        opened.append(record["predictions_file"] + " of " + record["encoder"]["name"])
        return real(record)

    monkeypatch.setattr(compare_module, "load_predictions", counting)
    page = publish(load_records(results), tmp_path / "site").read_text()
    # 2 new x 2 baselines compared, plus 4 UMAP plots coloured by label: still one read per file
    assert sorted(opened) == sorted(f"seed-0.predictions.npz of {e}" for e in ("new-a", "new-b", "base-1", "base-2"))
    assert page.count("paired bootstrap, 40 items") == 4
    for npz in results.rglob("*.npz"):
        npz.unlink()
    page = publish(load_records(results), tmp_path / "site").read_text()
    assert "No UMAP plot for" in page and "is missing (records shared without their .npz files?)" in page


def test_long_plot_titles_and_legends_stay_inside_their_figures(tmp_path, monkeypatch):
    """Issue 11: a UMAP title longer than the figure was cut off at its edges; long names are wrapped instead."""
    import harness.leaderboard.plots as plots

    figures = []
    real_png = plots._png

    def keep(figure):
        png = real_png(figure)  # saving lays the figure out; the text is measured where it was drawn
        figures.append(figure)
        return png

    monkeypatch.setattr(plots, "_png", keep)
    write_wide(tmp_path / "results")
    publish(load_records(tmp_path / "results"), tmp_path / "site")
    assert len(figures) == 3 + 5  # a UMAP scatter per encoder on the clustered dataset, a bar chart per dataset
    titles = []
    for figure in figures:
        axes = figure.axes[0]
        titles.append(axes.get_title())
        # everything the axes drew (title, legend, tick labels; not the labels of ticks outside the view, which
        # matplotlib keeps but does not draw), in pixels of the saved image
        box = axes.get_tightbbox(figure.canvas.get_renderer())
        inside = box.x0 >= 0 and box.y0 >= 0 and box.x1 <= figure.bbox.width and box.y1 <= figure.bbox.height
        assert inside, (f"{titles[-1]!r}: drawn over x {box.x0:.0f}..{box.x1:.0f}, y {box.y0:.0f}..{box.y1:.0f} "
                        f"of a {figure.bbox.width:.0f} x {figure.bbox.height:.0f} px image")
    # wrapping drops no character of a name: the long encoder's title, its line breaks taken out
    expected = f"{LONG_ENCODERS[0]} on imagefolder:/data/field-photos-of-birds-0"
    assert any("".join(title.split()) == "".join(expected.split()) for title in titles), titles


def fewshot_record(encoder: str, dataset: str, seed: int, draws: dict[int, list[tuple[float, float]]],
                   pretraining: str = "ssl") -> dict:
    """A few-shot record laid out as the evaluator writes it: {shots: [(logistic, centroid) per draw]}."""
    from harness.plugins.fewshot import PROTOCOL
    from harness.plugins.fewshot.interval import summarise

    per_shots = {}
    for shots, values in draws.items():
        per_shots[str(shots)] = {
            "logistic": summarise([v[0] for v in values]), "centroid": summarise([v[1] for v in values]),
            "draws": [{"draw": d, "logistic_top1": v[0], "centroid_top1": v[1]} for d, v in enumerate(values)]}
    metrics = {"per_shots": per_shots, **{f"{c}_{s}shot": per_shots[str(s)][c]["mean"]
                                          for s in draws for c in ("logistic", "centroid")}}
    record = make_record(encoder, dataset, "fewshot", metrics["logistic_5shot"], seed=seed, pretraining=pretraining,
                         metrics=metrics, protocol=PROTOCOL)
    record["main_metric"] = "logistic_5shot"
    return record


def test_fewshot_plot_draws_accuracy_against_shots_per_encoder(tmp_path, monkeypatch):
    import harness.leaderboard.plots as plots

    figures = []
    real_png = plots._png
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or real_png(figure))
    rng = np.random.default_rng(0)
    results = tmp_path / "results"
    draws = {}
    for encoder, seeds, pretraining in (("new-ssl", [0], "ssl"), ("pixels", [0, 1], "none")):
        for seed in seeds:
            draws[encoder, seed] = {s: [tuple(rng.random(2)) for _ in range(3)] for s in (1, 2, 5, 10)}
            write_record(results, fewshot_record(encoder, "set1", seed, draws[encoder, seed], pretraining))
    write_record(results, make_record("new-ssl", "set2", "knn", 0.5))  # a dataset without few-shot records
    records = load_records(results)
    source = publish(records, tmp_path / "site").read_text(encoding="utf-8")

    [png] = (tmp_path / "site" / "assets").glob("fewshot-set1-*.png")
    assert f'<img src="assets/{png.name}"' in source and png.read_bytes().startswith(b"\x89PNG")
    assert '<a href="#fewshot">Few-shot accuracy against shots</a>' in source
    [figure] = [f for f in figures if f.axes[0].get_title().startswith("set1: few-shot")]
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")}
    assert sorted(lines) == ["new-ssl (centroid)", "new-ssl (logistic)", "pixels (centroid)", "pixels (logistic)"]
    # pixels has two seeds: the plot shows seed 0's record, as the UMAP plots choose theirs
    shown = {r["encoder"]["name"]: r for r in records if r["evaluator"]["name"] == "fewshot" and r["seed"] == 0}
    for encoder, record in shown.items():
        for classifier in ("logistic", "centroid"):
            line = lines[f"{encoder} ({classifier})"]
            assert list(line.get_xdata()) == [1, 2, 5, 10]
            assert list(line.get_ydata()) == [record["metrics"]["per_shots"][s][classifier]["mean"]
                                              for s in ("1", "2", "5", "10")]
    # ... and the means are those of the draws (seed 0's), the error bars their 95 % Student-t interval
    for c, classifier in enumerate(("logistic", "centroid")):
        means = [np.mean([v[c] for v in draws["pixels", 0][s]]) for s in (1, 2, 5, 10)]
        assert np.allclose(lines[f"pixels ({classifier})"].get_ydata(), means, atol=1e-12)
    segments = [seg for collection in axes.collections for seg in collection.get_segments()]
    for s in (1, 2, 5, 10):
        values = [v[0] for v in draws["new-ssl", 0][s]]
        low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=np.std(values, ddof=1) / np.sqrt(3))
        assert any(np.allclose(seg[:, 0], s) and np.allclose(sorted(seg[:, 1]), [low, high]) for seg in segments)
    assert not list((tmp_path / "site" / "assets").glob("fewshot-set2-*.png"))


def test_no_fewshot_record_says_how_to_get_the_plot(tmp_path):
    write_record(tmp_path / "results", make_record("a", "set1", "knn", 0.5))
    source = publish(load_records(tmp_path / "results"), tmp_path / "site").read_text(encoding="utf-8")
    assert "No few-shot record" in source and "harness run --eval fewshot" in source
