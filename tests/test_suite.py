"""`harness run --suite FILE.toml`: validated before any work, per-encoder options, seeds, resumable reruns."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import build_parser, main, run_config
from harness.errors import HarnessError
from harness.records import load_records
from harness.runner import plan_cells, run
from harness.suite import load_suite
from harness_test_support.helpers import CountingPixels, EncoderPlugin, EvaluatorPlugin
from harness.plugins.knn import KNN

EXAMPLES = Path(__file__).parent.parent / "examples" / "suites"
SYNTHETIC = '''
[[datasets]]
name = "synthetic"
options = { classes = 3, per_class = 8 }
'''


class CountingKNN(KNN):
    """The real kNN evaluator, counting its calls (and failing the first `fail_first` of them on purpose)."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__()
        self.calls = 0
        self.fail_first = fail_first

    def evaluate(self, train, test, *, seed, settings):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("evaluator failed on purpose")
        return super().evaluate(train, test, seed=seed, settings=settings)


def write_suite(folder: Path, text: str, name: str = "suite.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def run_suite(path: Path, plugins, *flags: str):
    args = build_parser().parse_args(["run", "--suite", str(path), "--no-progress", *flags])
    config = run_config(args, plugins)
    return config, run(config, plugins)


def save_test_vit_weights(path: Path, seed: int) -> None:
    import timm
    import torch

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), path)


@pytest.mark.slow  # three real encoders, two seeds, a resume: ~25 s of CPU
def test_suite_with_per_encoder_options_and_two_seeds_is_resumable(tmp_path, harness_plugins):
    import timm
    import torch

    pixels, knn = CountingPixels(), CountingKNN()
    plugins = harness_plugins(EncoderPlugin("counting-pixels", lambda: pixels),
                              EvaluatorPlugin("counting-knn", lambda: knn))
    folder = tmp_path / "project"
    save_test_vit_weights(folder / "ckpt" / "w.pth", seed=1)
    suite = '''
[suite]
seeds = [0, 1]
results_dir = "results"
cache_dir = "cache"
device = "cpu"
baselines = ["random:test_efficientnet"]
[[encoders]]
name = "timm:test_vit"
weights = "ckpt/w.pth"
pooling = "cls"
batch_size = 10
[[encoders]]
name = "random:test_efficientnet"
[[encoders]]
name = "counting-pixels"
''' + SYNTHETIC + '''
[[evaluators]]
name = "counting-knn"
'''
    path = write_suite(folder, suite)
    config, report = run_suite(path, plugins)
    assert not report.failures, report.failures
    assert config.results_dir == folder / "results" and config.cache_dir == folder / "cache"
    rows = {(r["encoder"]["name"], r["seed"]): r for r in report.records}
    vit = "timm:test_vit@ckpt/w.pth[pooling=cls]"
    assert set(rows) == {(e, s) for e in (vit, "random:test_efficientnet", "counting-pixels") for s in (0, 1)}
    assert knn.calls == 6 and pixels.items == 24 + 24
    # batch_size reached only the ViT: 24 items per split in batches of 10 -> 3 passes; the others 1 batch of 64
    assert [e.forward_passes for e in report.extractions] == [3, 3, 1, 1, 1, 1]
    # the suite's baselines list decides, not the pretraining kind (pixels would otherwise be a baseline)
    assert {name: r["encoder"]["baseline"] for (name, _), r in rows.items()} == {
        vit: False, "random:test_efficientnet": True, "counting-pixels": False}
    assert rows[vit, 0]["encoder"]["info"]["weights"]["path"] == str(folder / "ckpt" / "w.pth")
    assert rows[vit, 0]["dataset"]["name"] == "synthetic[classes=3,per_class=8]"

    # pooling=cls reached the ViT: its cached test features are the class token of the weights in the file
    from harness.store import EmbeddingStore
    from harness.plugins.synthetic import Synthetic

    cached = EmbeddingStore(folder / "cache").load(rows[vit, 0]["cache_keys"]["test"])
    model = timm.create_model("test_vit", num_classes=0)
    model.load_state_dict(torch.load(folder / "ckpt" / "w.pth", weights_only=True))
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model), is_training=False)
    split = Synthetic(classes=3, per_class=8).split("test")
    with torch.no_grad():
        expected = model.eval().forward_features(torch.stack([transform(split[i][0]) for i in range(4)]))[:, 0]
    np.testing.assert_allclose(np.asarray(cached.features[:4]), expected.numpy(), rtol=1e-4, atol=1e-5)

    # two seed records make one leaderboard cell: mean ± spread over the seeds
    from harness.leaderboard import build_leaderboard, render

    board = build_leaderboard(load_records(folder / "results"))
    cells = {row["encoder"]: row["cells"]["synthetic[classes=3,per_class=8] counting-knn"] for row in board.rows}
    assert cells["counting-pixels"] == [rows["counting-pixels", 0]["main_score"],
                                        rows["counting-pixels", 1]["main_score"]]
    assert " ± " in render(board)

    # the rerun: every cell is done with the same cache keys, so no forward pass, no evaluation, no extraction
    pixels.items, knn.calls = 0, 0
    _, again = run_suite(path, plugins)
    assert (again.forward_passes, len(again.extractions), knn.calls, pixels.items, again.records) == (0, 0, 0, 0, [])
    assert len(again.already_done) == 6

    # an encoder added to the suite: only its cells run
    path.write_text(suite.replace("[[evaluators]]", '[[encoders]]\nname = "random:test_vit"\n\n[[evaluators]]'))
    _, added = run_suite(path, plugins)
    assert {(r["encoder"]["name"], r["seed"]) for r in added.records} == {("random:test_vit", s) for s in (0, 1)}
    assert len(added.extractions) == 2 and knn.calls == 2 and pixels.items == 0 and len(added.already_done) == 6

    # other weights under the same file name, so under the same row name: refused before any work, naming what
    # differs; --force measures again (only the ViT is extracted again, the rest comes from the cache)
    save_test_vit_weights(folder / "ckpt" / "w.pth", seed=2)
    knn.calls = 0
    with pytest.raises(HarnessError, match=r"a row named 'timm:test_vit@ckpt/w.pth\[pooling=cls\]' from another "
                                           r"encoder \(it differs in: weights;"):
        run_suite(path, plugins)
    assert knn.calls == 0
    _, changed = run_suite(path, plugins, "--force")
    assert {(vit, 0), (vit, 1)} <= {(r["encoder"]["name"], r["seed"]) for r in changed.records}
    assert changed.forward_passes == 6 and not changed.already_done
    vit_record = next(r for r in changed.records if r["encoder"]["name"] == vit)
    assert vit_record["cache_keys"] != rows[vit, 0]["cache_keys"]


def test_a_failed_cell_is_retried_by_a_resumed_run(tmp_path, harness_plugins):
    knn = CountingKNN(fail_first=1)
    plugins = harness_plugins(EvaluatorPlugin("counting-knn", lambda: knn))
    path = write_suite(tmp_path, '''
[suite]
seeds = [0, 1]
results_dir = "r"
cache_dir = "c"
device = "cpu"
[[encoders]]
name = "pixels"
''' + SYNTHETIC + '''
[[evaluators]]
name = "counting-knn"
''')
    _, first = run_suite(path, plugins)
    assert [f.evaluator for f in first.failures] == ["counting-knn"] and len(first.records) == 1
    assert sorted(r["status"] for r in load_records(tmp_path / "r")) == ["failed", "ok"]
    _, second = run_suite(path, plugins)
    assert not second.failures and len(second.already_done) == 1 and knn.calls == 3
    failed_seed = ({0, 1} - {first.records[0]["seed"]}).pop()
    assert [r["seed"] for r in second.records] == [failed_seed]
    assert sorted(r["status"] for r in load_records(tmp_path / "r")) == ["ok", "ok"]
    assert second.forward_passes == 0  # the embeddings came from the cache


@pytest.mark.slow  # two `harness` subprocesses
def test_a_plain_rerun_reuses_finished_cells_and_says_how_many(tmp_path):
    command = [sys.executable, "-m", "harness", "run", "-e", "pixels", "-d", "synthetic", "--eval", "knn",
               "--seed", "3", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
               "--device", "cpu", "--no-progress"]  # no --resume: reusing finished cells is the default
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "skipped" not in first.stderr and "extracted 192 items" in first.stderr
    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "1 cell(s) skipped: already done" in second.stderr and "extracted" not in second.stderr
    assert "pixels (baseline)" in second.stdout  # the leaderboard still shows the cells kept
    [record] = load_records(tmp_path / "r")
    assert record["seed"] == 3
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True)  # measured again, from the cache
    assert forced.returncode == 0, forced.stderr
    assert "skipped" not in forced.stderr and "all 2 embedding sets came from the cache" in forced.stderr
    [again] = load_records(tmp_path / "r")
    assert again["main_score"] == record["main_score"] and again["date"] >= record["date"]


@pytest.mark.slow  # the real offline default (`default_run`)
def test_default_suite_measures_the_cells_of_a_plain_harness_run(default_run):
    from harness.plugin_manager import Plugins

    plugins = Plugins(entry_points=False)
    plain = run_config(build_parser().parse_args(["run"]), plugins)
    suite = run_config(build_parser().parse_args(["run", "--suite", str(EXAMPLES / "default.toml")]), plugins)
    assert sorted(plan_cells(suite, plugins)) == sorted(plan_cells(plain, plugins))
    assert len(plan_cells(suite, plugins)) == 3 * 5  # 3 encoders x (knn, linear, clustering, fewshot, retrieval), 1 seed
    assert (suite.results_dir, suite.cache_dir, suite.device, suite.batch_size) == \
           (plain.results_dir, plain.cache_dir, plain.device, plain.batch_size) == \
           ("results", ".harness-cache", "auto", 64)
    assert suite.resume and plain.resume  # finished cells are reused by default, with or without a suite
    forced = [run_config(build_parser().parse_args(["run", *flags, "--force"]), plugins)
              for flags in ([], ["--suite", str(EXAMPLES / "default.toml")])]
    assert not any(config.resume for config in forced)
    # the cells the real default run wrote are cells of the suite
    report, _, _ = default_run
    assert {r["cell"] for r in report.records} <= set(plan_cells(suite, plugins))


def test_user_checkpoint_example_validates_and_points_at_a_missing_weights_file(tmp_path):
    from harness.plugin_manager import Plugins

    plugins = Plugins(entry_points=False)
    example = shutil.copy(EXAMPLES / "my-checkpoint.toml", tmp_path / "my-checkpoint.toml")
    with pytest.raises(HarnessError) as error:
        load_suite(example, plugins, ["knn"])
    message = str(error.value)
    assert str(example) in message and "encoders[0].weights" in message
    assert str(tmp_path / "checkpoints" / "dino_vits16.pth") in message and "does not exist" in message

    save_test_vit_weights(tmp_path / "checkpoints" / "dino_vits16.pth", seed=0)  # any file: validation only
    suite = load_suite(example, plugins, ["knn"])
    config = suite.config
    assert suite.name == "dino-vits16-vs-baselines" and config.seeds == [0, 1, 2] and config.resume
    assert config.results_dir == tmp_path / "results" and config.cache_dir == tmp_path / ".harness-cache"
    assert config.dataset_options == {"data_root": str(tmp_path / "data" / "torchvision")}
    ours = config.encoders[0]
    assert ours.name == f"timm:vit_small_patch16_224@{tmp_path / 'checkpoints' / 'dino_vits16.pth'}"
    assert (ours.label, ours.options, ours.batch_size, ours.baseline) == ("dino-vits16 (ours)", {"pooling": "cls"},
                                                                           32, False)
    assert [e.baseline for e in config.encoders] == [False, True, True, True]
    assert [d.name for d in config.datasets] == [f"imagefolder:{tmp_path / 'data' / 'my-set'}", "cifar10", "stl10"]
    assert config.evaluators == ["knn", "linear", "clustering"]
    assert config.evaluator_options["clustering"] == {"n_seeds": 3}


@pytest.mark.parametrize("text, where, expected", [
    ('[[encoders]]\nname = "pixels"\npoolng = "cls"\n', "encoders[0].poolng", "did you mean 'pooling'"),
    ('[suite]\nseed = [0]\n', "suite.seed", "did you mean 'seeds'"),
    ('[[encoders]]\nname = "pixels"\nbatch_size = "big"\n', "encoders[0].batch_size", "must be an integer"),
    ('[[encoders]]\nname = "pixels"\nbatch_size = true\n', "encoders[0].batch_size", "must be an integer"),
    ('[[encoders]]\nname = "pixels"\nbatch_size = 0\n', "encoders[0].batch_size", "at least 1"),
    ('[[encoders]]\nname = "efficientnet_lite"\n', "encoders[0].name", "Did you mean: efficientnet_lite0"),
    ('[[encoders]]\nname = "pixels"\npooling = "cls"\n', "encoders[0].options", "takes no option(s) 'pooling'"),
    ('[[encoders]]\nname = "pixels"\nweights = "suite.toml"\n', "encoders[0].weights", "takes no weights file"),
    ('[[evaluators]]\nname = "knm"\n', "evaluators[0].name", "Did you mean: knn"),
    ('[[evaluators]]\nname = "clustering"\noptions = { reduce = "../x" }\n', "evaluators[0].options", "reduce="),
    ('[suite]\nseeds = [0, 0]\n', "suite.seeds", "twice"),
    ('[suite]\nseeds = "0"\n', "suite.seeds", "must be a list"),
    ('[suite]\nbaselines = ["pixel"]\n', "suite.baselines", "did you mean 'pixels'"),
    ('[suite]\nresults_dir = "../outside"\n', "suite.results_dir", "leads outside the suite's folder"),
    ('[suite]\ncache_dir = "/tmp/elsewhere"\n', "suite.cache_dir", "not a path relative"),
    ('[suite]\ndata_root = "~/data"\n', "suite.data_root", "not a path relative"),
    ('[suite]\nresults_dir = "r\\u0000x"\n', "suite.results_dir", "NUL character"),
    ('[suite]\nname = "' + "n" * 2000 + '"\n', "suite.name", "at most 1024"),
    ('[[encoders]]\nname = "pixels"\n[[encoders]]\nname = "pixels"\n', "encoders", "same row 'pixels'"),
])
def test_bad_suites_are_refused_before_any_work_naming_file_and_key(tmp_path, text, where, expected):
    from harness.plugin_manager import Plugins

    base = '[[encoders]]\nname = "pixels"\n' if "[[encoders]]" not in text else ""
    if "[[datasets]]" not in text:
        base += '[[datasets]]\nname = "synthetic"\n'
    if text.startswith("[suite]"):  # a table must come before the arrays of tables that follow it in the file
        text, base = text + base, ""
    path = write_suite(tmp_path / "s", base + text)
    with pytest.raises(HarnessError) as error:
        load_suite(path, Plugins(entry_points=False), ["knn"])
    message = str(error.value)
    assert f"suite {str(path)!r}: {where}" in message and expected in message, message
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["suite.toml"]  # nothing was written


def test_a_suite_is_data_never_code(tmp_path, capsys):
    marker = tmp_path / "executed"
    path = write_suite(tmp_path, f'import pathlib\npathlib.Path("{marker}").touch()\n', name="evil.toml")
    assert main(["run", "--suite", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"suite {str(path)!r} is not valid TOML" in err and "line 1" in err
    assert not marker.exists()


def test_flags_that_choose_what_is_measured_conflict_with_a_suite(tmp_path, capsys):
    path = write_suite(tmp_path, '[[encoders]]\nname = "pixels"\n' + SYNTHETIC)
    assert main(["run", "--suite", str(path), "-e", "pixels", "--seed", "1"]) == 2
    assert "--encoder, --seed cannot be combined with --suite" in capsys.readouterr().err
    from harness.plugin_manager import Plugins

    args = build_parser().parse_args(["run", "--suite", str(path), "--results-dir", str(tmp_path / "elsewhere"),
                                      "--batch-size", "7", "--no-resume"])
    config = run_config(args, Plugins(entry_points=False))
    assert (config.results_dir, config.batch_size, config.resume) == (str(tmp_path / "elsewhere"), 7, False)


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under `root`: files with their size and mtime, directories as None (their mtime changes when
    an entry is added below them, which the new entry itself shows)."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def test_a_hostile_suite_writes_only_inside_its_results_and_cache_directories(tmp_path, monkeypatch):
    from PIL import Image

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # so that a `~` anywhere would land here, inside the snapshot
    images = tmp_path / "outside-data"  # read through a `../` path; must stay untouched
    for split in ("train", "test"):
        for label, colour in (("red", (200, 20, 20)), ("blue", (20, 20, 200))):
            (images / split / label).mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (8, 8), (colour[0], 20 + i, colour[2])).save(images / split / label / f"{i}.png")
    absolute = tmp_path / "absolute-target"
    long_label = "../" * 20 + "x" * 900
    suite_dir = tmp_path / "suite"
    path = write_suite(suite_dir, f'''
[suite]
results_dir = "out/results"
cache_dir = "out/../out/cache"
device = "cpu"
seeds = [0]
[[encoders]]
name = "pixels"
label = "../../outside-data/train/red/evil"
[[encoders]]
name = "pixels"
label = "{absolute}/evil"
[[encoders]]
name = "pixels"
label = "~/evil"
[[encoders]]
name = "pixels"
label = "{long_label}"
[[encoders]]
name = "pixels"
label = ".."
[[datasets]]
name = "imagefolder"
path = "../outside-data"
[[evaluators]]
name = "knn"
options = {{ ks = [10, 20], main_k = 20 }}
''')
    before = snapshot(tmp_path)
    assert main(["run", "--suite", str(path), "--no-progress"]) == 0
    after = snapshot(tmp_path)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed and all(p.startswith(("suite/out/results", "suite/out/cache")) or p == "suite/out"
                           for p in changed), sorted(changed)[:5]
    assert not absolute.exists() and list(home.iterdir()) == []
    records = load_records(suite_dir / "out" / "results")
    assert sorted(r["encoder"]["name"] for r in records) == sorted(
        ["../../outside-data/train/red/evil", f"{absolute}/evil", "~/evil", long_label, ".."])
    assert {r["dataset"]["name"] for r in records} == {"imagefolder:../outside-data"}
    assert all(math.isclose(r["main_score"], 1.0) for r in records)  # two flat colours: kNN gets them all
    deepest = max(len(Path(r["_path"]).relative_to(suite_dir).parts[-1]) for r in records)
    assert deepest < 255  # every path part stays short, whatever the label's length

    # a NUL byte in a name never reaches the file system: the suite is refused, nothing written
    nul = write_suite(tmp_path / "nul", '[[encoders]]\nname = "pixels"\nlabel = "a\\u0000b"\n' + SYNTHETIC)
    assert main(["run", "--suite", str(nul)]) == 2
    assert sorted(p.name for p in nul.parent.iterdir()) == ["suite.toml"]
