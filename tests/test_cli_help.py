"""`--help` says what every flag does and what it defaults to, and `harness run --help` says how to name an encoder
(issue 11)."""

from __future__ import annotations

import argparse

import pytest

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return action.choices
    return {}


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command that takes options, as the words typed after `harness`: ("run",), ("cache", "prune"), ..."""
    children = _subparsers(parser)
    if not children:
        return [words]
    return [command for word, child in children.items() for command in _commands(child, words + (word,))]


def _subparser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    from harness.cli import build_parser

    parser = build_parser()
    for word in words:
        parser = _subparsers(parser)[word]
    return parser


def _flat(text: str) -> str:
    return " ".join(text.split())


def _all_commands() -> list[tuple[str, ...]]:
    from harness.cli import build_parser

    return _commands(build_parser())


@pytest.mark.parametrize("words", _all_commands(), ids=" ".join)
def test_every_option_has_help_and_shows_its_default(words, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each help text on one line
    parser = _subparser(words)
    rendered = _flat(parser.format_help())
    formatter = parser._get_formatter()  # noqa: SLF001 - the help text of one action, as format_help() writes it
    for action in parser._actions:  # noqa: SLF001
        if {"-h", "-v"} & set(action.option_strings) or action.help == argparse.SUPPRESS:
            continue  # -h and -v are argparse's and the top parser's; SUPPRESS hides a flag on purpose
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"harness {' '.join(words)} {name} has no help"
        text = _flat(formatter._expand_help(action))  # noqa: SLF001
        assert text in rendered
        if action.default is not None and action.default is not False:  # `not in (None, False)` would skip 0
            assert str(action.default) in text, f"harness {' '.join(words)} {name}: its default is not shown"
        assert text.count("(default") <= 1, f"harness {' '.join(words)} {name} states its default twice: {text}"


def test_run_help_says_how_to_name_an_encoder_and_its_weights(capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = _flat(capsys.readouterr().out)
    assert "timm:<model>@" in help_text  # a weights file after '@'
    assert "timm:resnet50@/path/weights.safetensors" in help_text  # an example of it
    assert "open_clip:<architecture>@" in help_text  # a pretrained tag or a weights file
    assert "harness encoders" in help_text  # where the rest, plugins' included, is listed


def test_run_help_names_every_built_in_encoder_prefix(capsys, monkeypatch):
    """timm:, open_clip:, random: today; a built-in prefix added later must be added to the help too."""
    from harness.cli import main
    from harness.plugin_manager import get_plugins

    monkeypatch.setenv("COLUMNS", "1000")
    plugins = get_plugins()
    prefixes = {e.name for e in plugins.encoders if e.prefix and plugins.infos[e.plugin].builtin}
    assert prefixes  # timm, random, open_clip
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = _flat(capsys.readouterr().out)
    assert [p for p in sorted(prefixes) if f"{p}:" not in help_text] == []


def test_compare_help_states_the_bootstrap_count_it_uses(monkeypatch):
    from harness.leaderboard.compare import DEFAULT_N_BOOT

    monkeypatch.setenv("COLUMNS", "1000")
    assert f"bootstrap resamples (default: {DEFAULT_N_BOOT})" in _subparser(("compare",)).format_help()
