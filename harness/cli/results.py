"""`harness results ls` and `harness results prune --failed`: the command-line side of `harness.results_admin`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.cli.board import RESULTS_DIR_HELP
from harness.defaults import DEFAULT_RESULTS_DIR
from harness.records import dataset_column, with_results_dir


def add_results_parsers(sub: Any) -> None:
    results = sub.add_parser("results", help="list result records, or remove the failed ones")
    actions = results.add_subparsers(dest="results_command", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="records with encoder, dataset, evaluator, seed, date, file, score or error")
    ls.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=RESULTS_DIR_HELP)
    ls.add_argument("--failed", action="store_true", help="only the failed records")
    prune = actions.add_parser(
        "prune", help="remove failed records and the files beside them (ok records never); a dry run unless --yes",
        description="Without --yes, say what would be removed and remove nothing: run it once as it is, read the "
                    "list, then add --yes. Do not prune while a `harness run` writes into the same directory.")
    prune.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=RESULTS_DIR_HELP)
    prune.add_argument("--failed", action="store_true",
                       help="remove the failed records (required: the only kind prune removes)")
    prune.add_argument("--yes", action="store_true", help="remove them; without it, only say what would be removed")
    prune.add_argument("--dry-run", action="store_true", help="remove nothing (the default; as `harness cache prune`)")


def _evaluator(record: dict[str, Any]) -> str:
    evaluator = record["evaluator"]
    options = evaluator.get("non_default_options") or {}
    return evaluator["name"] + (f" [{','.join(f'{k}={v}' for k, v in sorted(options.items()))}]" if options else "")


def cmd_results(args: argparse.Namespace) -> int:
    return _ls(args) if args.results_command == "ls" else _prune(args)


def _ls(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from harness.results_admin import error_summary, list_records

    items = list_records(args.results_dir, failed_only=args.failed)
    table = []
    for item in items:
        record = item.record
        score = record["main_score"]
        result = (f"failed: {error_summary(record.get('error'))}" if item.failed
                  else f"{score:.3f}" if score is not None else "—")
        table.append([record["encoder"]["name"], dataset_column(record), _evaluator(record), record["seed"],
                      record["date"][:16].replace("T", " "), str(item.path), result])
    if table:  # the result last: an error's line can be long, and then it only runs on, past every other column
        print(tabulate(table, headers=["encoder", "dataset", "evaluator", "seed", "when", "file", "result"],
                       disable_numparse=True))
    for item in items:
        if item.superseded_by is not None:  # copied in from another machine: the leaderboard refuses the pair
            print(f"note: {item.path} is superseded by {item.superseded_by} (ok, the same cell)", file=sys.stderr)
    failed = sum(item.failed for item in items)
    if not failed:
        print(f"no failed records in {args.results_dir}" if args.failed
              else f"{len(items)} record(s) in {args.results_dir}, none failed", file=sys.stderr)
    else:
        print((f"{failed} failed record(s)" if args.failed else f"{len(items)} record(s), {failed} failed")
              + f" in {args.results_dir}; `{with_results_dir('harness results prune --failed', args.results_dir)}` "
                f"says what it would remove, --yes removes them", file=sys.stderr)
    return 0


def _prune(args: argparse.Namespace) -> int:
    from harness.errors import HarnessError
    from harness.results_admin import error_summary, prune_failed

    if not args.failed:
        raise HarnessError("say what to prune: --failed (failed records are the only kind prune removes; ok records "
                           "are measurements and stay)")
    if args.yes and args.dry_run:
        raise HarnessError("--dry-run and --yes contradict each other; without --yes, prune is a dry run")
    removed = prune_failed(args.results_dir, dry_run=not args.yes)
    verb = "removed" if args.yes else "would remove"
    for item in removed:
        print(f"{verb} {item.path}: {item.record['encoder']['name']} on {dataset_column(item.record)}, "
              f"{_evaluator(item.record)}, seed {item.record['seed']}: {error_summary(item.record.get('error'))}")
        for path in item.beside:
            print(f"  and {path.name}")
    files = sum(len(item.beside) for item in removed)
    summary = f"{verb} {len(removed)} failed record(s) and {files} file(s) beside them"
    if removed and not args.yes:
        command = with_results_dir("harness results prune --failed --yes", args.results_dir)
        summary += f"; nothing was removed: `{command}` removes them"
    print(summary, file=sys.stderr)
    return 0
