"""The command line's own errors: one line for a user's mistake, the traceback with -v (before or after the
command), and argument orders that argparse alone would answer with a bare "required" (issue 11)."""

from __future__ import annotations


def test_verbose_after_the_command_shows_the_traceback_of_an_error(capsys):
    from harness.cli import main

    assert main(["datasets", "--path", "no-such-set"]) == 2
    quiet = capsys.readouterr().err
    assert "unknown dataset 'no-such-set'" in quiet and "Traceback" not in quiet  # one line for a user's mistake
    assert main(["datasets", "-v", "--path", "no-such-set"]) == 2
    verbose = capsys.readouterr().err
    assert "Traceback (most recent call last)" in verbose and "unknown dataset 'no-such-set'" in verbose
    assert main(["-v", "cache", "ls", "--cache-dir", "/nonexistent-harness-cache"]) in (0, 2)  # before: still works


def test_compare_with_the_encoder_after_against_says_how_to_order_them(capsys, tmp_path):
    from harness.cli import main

    assert main(["compare", "--against", "pixels", "lite0", "--results-dir", str(tmp_path)]) == 2
    assert "harness compare NEW --against pixels (here NEW may be 'lite0')" in capsys.readouterr().err


def test_knn_main_k_above_the_train_split_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.chdir(tmp_path)  # where the default ./results and ./.harness-cache would go
    # synthetic with 2 classes x 6 items: 12 train items, fewer than the default main_k of 20
    suite = tmp_path / "s.toml"
    suite.write_text('[[encoders]]\nname = "pixels"\n[[datasets]]\nname = "synthetic"\n'
                     'options = { classes = 2, per_class = 6 }\n[[evaluators]]\nname = "knn"\n')
    assert main(["run", "--suite", str(suite), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "knn: main_k=20 neighbours, but the train split has 12 items" in err
    assert "--eval-option knn.main_k=10" in err
    assert not (tmp_path / ".harness-cache").exists() and not (tmp_path / "results").exists()  # nothing done


def test_a_cell_without_a_main_score_says_why_on_the_terminal(tmp_path, capsys, monkeypatch):
    import numpy as np

    from harness import hookimpl, plugin_manager
    from harness.cli import main
    from harness.types import EvaluationResult, Evaluator

    class Undecided(Evaluator):
        name, protocol = "undecided", "undecided/v1"

        def evaluate(self, train, test, *, seed, settings):
            reason = f"needs more than {len(test.ids)} test items"
            return EvaluationResult({"score": None, "null_reasons": {"score": reason}}, None, "score",
                                    predictions={"ids": np.asarray(test.ids)})

    class Plugin:
        @hookimpl
        def register_evaluators(self, register):
            register("undecided", Undecided, "an evaluator whose main score is None (test plugin)")

    monkeypatch.setattr(plugin_manager, "_default", plugin_manager.Plugins(entry_points=False,
                                                                           extra=[("undecided", Plugin())]))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-e", "pixels", "-d", "synthetic", "--eval", "undecided", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "—" in captured.out  # the empty cell in the table...
    assert "note: pixels on synthetic (undecided): no score: needs more than 96 test items" in captured.err  # ...why


def test_a_transform_that_returns_an_image_is_an_error_naming_the_encoder(tmp_path, harness_plugins, caplog):
    from harness.plugins.pixels import Pixels
    from harness.runner import RunConfig, run

    class Unfinished(Pixels):
        name = "unfinished"

        @property
        def transform(self):
            return lambda image: image.resize((8, 8))  # a PIL image: the ToTensor step is missing

    report = run(RunConfig(encoders=[Unfinished()], datasets=["synthetic"], evaluators=["knn"], device="cpu",
                           workers=0, results_dir=tmp_path / "r", cache_dir=tmp_path / "c", progress=False),
                 harness_plugins())
    [failure] = report.failures
    assert "the transform of encoder 'unfinished' returned PIL.Image.Image, not a tensor" in failure.error
    assert "ToTensor" in failure.error and "Traceback" not in caplog.text  # one clear line, no traceback
