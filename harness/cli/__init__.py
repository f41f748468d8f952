"""The `harness` command, the top layer: it may import everything, and nothing below imports it. One module per
group of subcommands (run, board: leaderboard/publish/compare, cache, results, listing). Errors meant for the user
print as one message (exit 2); bugs keep their traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Sequence

from harness.cli.board import add_board_parsers, cmd_compare, cmd_leaderboard, cmd_publish
from harness.cli.cache import add_cache_parsers, cmd_cache, cmd_export
from harness.cli.listing import LISTINGS, add_listing_parsers
from harness.cli.results import add_results_parsers, cmd_results
from harness.cli.run import add_run_parser, cmd_run, run_config
from harness.errors import HarnessError

log = logging.getLogger("harness")

__all__ = ["COMMANDS", "build_parser", "main", "run_config"]


def build_parser() -> argparse.ArgumentParser:
    from harness import __version__

    parser = argparse.ArgumentParser(prog="harness", description="Evaluate frozen encoders: kNN, linear probe and "
                                     "clustering from one extraction, as leaderboard rows.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug details, and show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run_parser(sub)
    add_board_parsers(sub)
    add_cache_parsers(sub)  # `harness cache ls|prune`, `harness export`
    add_results_parsers(sub)  # `harness results ls|prune`
    add_listing_parsers(sub)
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """`-v` after the command too (`harness run -v`), not only before it. SUPPRESS: a subcommand that does not see
    it keeps the value given before the command."""
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for subparser in action.choices.values():
                subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="log debug details, and show the traceback of an error")
                _verbose_everywhere(subparser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except HarnessError as error:
        if args.verbose:  # a user's mistake is one line; -v shows where it was found
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the finished records and what was extracted are kept: rerun the same command to resume",
              file=sys.stderr)
        return 130


def _configure_logging(verbose: bool) -> None:
    from harness.distributed import launched_by_torchrun

    level, prefix = logging.DEBUG if verbose else logging.INFO, ""
    if launched_by_torchrun():  # rank 0 tells the story; the other ranks only warn, each line saying whose it is
        rank = os.environ["RANK"]
        prefix = f"[rank {rank}] "
        level = level if rank == "0" else max(level, logging.WARNING)
    logging.basicConfig(level=level, format=f"%(levelname)s {prefix}%(message)s", stream=sys.stderr)


COMMANDS = {
    "run": cmd_run,
    "leaderboard": cmd_leaderboard,
    "publish": cmd_publish,
    "compare": cmd_compare,
    "cache": cmd_cache,
    "export": cmd_export,
    "results": cmd_results,
    **LISTINGS,
}
