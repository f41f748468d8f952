"""`harness leaderboard`, `harness publish` and `harness compare`: views of the result records alone."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.defaults import DEFAULT_RESULTS_DIR

RESULTS_DIR_HELP = "where the result records are (default: ./%(default)s)"
FORMAT_HELP = "how the table is written (default: %(default)s)"


def add_board_parsers(sub: Any) -> None:
    from harness.leaderboard import FORMATS

    board = sub.add_parser("leaderboard", help="print the leaderboard from result records alone")
    board.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=RESULTS_DIR_HELP)
    board.add_argument("--format", choices=FORMATS, default="plain", help=FORMAT_HELP)
    board.add_argument("--metric", default=None, help="a metric other than each evaluator's main score")
    board.add_argument("--sort", default="rank", metavar="COLUMN",
                       help="order rows by a column: rank, encoder, mean or a column header such as "
                            "'cifar10-mini knn'; scores best first, missing cells last (default: %(default)s)")
    board.add_argument("--label-free", action="store_true",
                       help="rank encoders per dataset by UMAP silhouette (no labels) beside their AMI ranking")

    publish = sub.add_parser("publish", help="write a static site (index.html + plots) from result records")
    publish.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=RESULTS_DIR_HELP)
    publish.add_argument("--out", default="site", help="directory of the site (default: ./%(default)s)")
    publish.add_argument("--title", default="Encoder leaderboard", help="title of the page (default: %(default)s)")
    publish.add_argument("--compare", action="append", metavar="NEW",
                         help="encoder(s) of the comparison section (default: every non-baseline encoder)")
    publish.add_argument("--against", nargs="+", action="extend", metavar="BASELINE",
                         help="baselines of the comparison section (default: every baseline encoder)")

    compare = sub.add_parser("compare", help="a new encoder beside baselines: differences with 95%% confidence "
                             "intervals (paired bootstrap over test items; over seeds for clustering)")
    # NEW is optional for argparse only: `--against A NEW` would otherwise end in argparse's bare "required" error;
    # cmd_compare says how to order them.
    compare.add_argument("new", metavar="NEW", nargs="?", default=None,
                         help="the encoder to compare (its name in the records); before --against")
    compare.add_argument("--against", "-a", nargs="+", action="extend", required=True, metavar="BASELINE",
                         help="one or more baseline encoders")
    compare.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=RESULTS_DIR_HELP)
    compare.add_argument("--dataset", "-d", action="append", metavar="D", help="only these datasets (repeatable)")
    compare.add_argument("--metric", default=None, help="a metric other than each evaluator's main score")
    compare.add_argument("--format", choices=FORMATS, default="plain", help=FORMAT_HELP)
    # None, not DEFAULT_N_BOOT: importing harness.leaderboard.compare (numpy) here would slow every command;
    # tests/test_cli_help.py checks that the help names the constant's value.
    compare.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: 2000)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: %(default)s)")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.records import load_records
    from harness.leaderboard import build_leaderboard, render, sort_board

    if args.label_free:
        from harness.leaderboard.label_free import render_label_free

        print(render_label_free(load_records(args.results_dir), args.format))
        return 0
    # the failure note's commands name --results-dir only when it is not the default, as a user would type them
    shown_dir = None if args.results_dir == DEFAULT_RESULTS_DIR else args.results_dir
    board = sort_board(build_leaderboard(load_records(args.results_dir), metric=args.metric, results_dir=shown_dir),
                       args.sort)
    print(render(board, args.format))
    for note in board.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from harness.records import load_records
    from harness.leaderboard.site import publish

    page = publish(load_records(args.results_dir), args.out, results_dir=args.results_dir, title=args.title,
                   compare=args.compare, against=args.against)
    print(f"wrote {page} (open it in a browser; it needs no server)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.records import load_records
    from harness.leaderboard.compare import DEFAULT_N_BOOT, compare_encoders, describe_methods, render_comparison

    if args.new is None:  # `--against A B NEW`: --against took every name after it
        from harness.errors import HarnessError

        raise HarnessError(f"name the encoder to compare before --against: harness compare NEW --against "
                           f"{' '.join(args.against[:-1]) or 'BASELINE'} (here NEW may be {args.against[-1]!r})")
    n_boot = args.n_boot or DEFAULT_N_BOOT
    rows = compare_encoders(load_records(args.results_dir), args.new, args.against, datasets=args.dataset,
                            metric=args.metric, n_boot=n_boot, seed=args.seed)
    print(render_comparison(rows, args.format))
    if args.format != "csv":
        print(describe_methods(n_boot, args.seed), file=sys.stderr)
    return 0


