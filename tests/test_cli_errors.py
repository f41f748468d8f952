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
