"""`harness cache ls`, `harness cache prune` and `harness export`: the command-line side of `harness.cache_admin`."""

from __future__ import annotations

import argparse
import sys
import time

from harness.defaults import DEFAULT_CACHE_DIR as DEFAULT_CACHE


CACHE_DIR_HELP = "the embedding cache (default: ./%(default)s)"


def add_cache_parsers(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="list or prune the embedding cache")
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="entries with encoder, dataset, split, size and last use")
    ls.add_argument("--cache-dir", default=DEFAULT_CACHE, help=CACHE_DIR_HELP)
    prune = actions.add_parser("prune", help="remove entries by age, total size or encoder (never one that a "
                                             "running extraction holds), and leftovers of killed runs")
    prune.add_argument("--cache-dir", default=DEFAULT_CACHE, help=CACHE_DIR_HELP)
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="remove entries not used for DAYS days")
    prune.add_argument("--max-size", metavar="SIZE",
                       help="then remove least recently used entries until the cache is at most SIZE (500M, 2G)")
    prune.add_argument("--encoder", metavar="NAME", help="only this encoder's entries (alone: all of them)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")

    export = sub.add_parser("export", help="write the cached embeddings of (encoder, dataset, split) as .npy/.npz")
    export.add_argument("--encoder", "-e", help="encoder name, as `harness cache ls` shows it")
    export.add_argument("--dataset", "-d", help="dataset name, as `harness cache ls` shows it")
    export.add_argument("--split", "-s", help="train, val or test")
    export.add_argument("--key", help="the entry's key (or a unique prefix), when several entries match")
    export.add_argument("--out", "-o", required=True, metavar="FILE",
                        help="FILE.npz (features, labels, ids) or FILE.npy (features; labels and ids beside it)")
    export.add_argument("--cache-dir", default=DEFAULT_CACHE, help=CACHE_DIR_HELP)


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def cmd_cache(args: argparse.Namespace) -> int:
    from harness.cache_admin import list_entries, lock_is_held, parse_size, prune, tree_size
    from harness.memory import format_bytes
    from harness.errors import HarnessError
    from harness.store import EmbeddingStore

    store = EmbeddingStore(args.cache_dir)
    if not store.root.is_dir():
        raise HarnessError(f"cache directory {str(store.root)!r} does not exist (pass --cache-dir)")
    if args.cache_command == "ls":
        from tabulate import tabulate

        now = time.time()
        entries = list_entries(store)
        table = [[e.key[:12], e.encoder or "?", e.dataset or "?", e.split or "?", e.n if e.n is not None else "?",
                  e.dim if e.dim is not None else "?", format_bytes(e.size),
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_use)) + f" ({_ago(now - e.last_use)})"
                  + (f"  DAMAGED: {e.damaged}" if e.damaged else "")] for e in entries]
        print(tabulate(table, headers=["key", "encoder", "dataset", "split", "items", "dim", "size", "last use"],
                       disable_numparse=True))
        partial = store.root / "partial"
        for path in sorted(partial.iterdir()) if partial.is_dir() else []:
            state = "extracting now" if lock_is_held(store, path.name) else "interrupted; a rerun resumes it"
            print(f"partial {path.name[:12]}: {len(list(path.glob('shard-*.npz')))} shard(s), "
                  f"{format_bytes(tree_size(path))}, {state}")
        print(f"{len(entries)} entries, {format_bytes(tree_size(store.root))} in {store.root}")
        return 0
    if args.older_than is None and args.max_size is None and args.encoder is None:
        print("no --older-than, --max-size or --encoder: removing only leftovers (interrupted extractions, "
              "derived data of removed entries)", file=sys.stderr)
    report = prune(store, older_than_days=args.older_than, encoder=args.encoder, dry_run=args.dry_run,
                   max_size=parse_size(args.max_size) if args.max_size is not None else None)
    verb = "would remove" if args.dry_run else "removed"
    for item in report.removed:
        print(f"{verb} {item.what} {item.key[:12]}: {item.description} ({format_bytes(item.size)})")
    for item, why in report.skipped:
        print(f"skipped {item.what} {item.key[:12]}: {item.description}: {why}")
    freed = report.size_before - report.size_after
    print(f"{verb} {len(report.removed)} item(s), {format_bytes(freed)}; the cache "
          f"{'would hold' if args.dry_run else 'holds'} {format_bytes(report.size_after)}"
          + (f"; {len(report.skipped)} skipped" if report.skipped else ""))
    if args.max_size is not None and report.size_after > parse_size(args.max_size):
        print(f"note: the cache is still above {args.max_size} (entries in use by a running extraction, or of "
              f"another encoder than --encoder, were kept)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.cache_admin import export_embeddings, find_entry
    from harness.errors import HarnessError
    from harness.store import EmbeddingStore

    store = EmbeddingStore(args.cache_dir)
    if not store.root.is_dir():
        raise HarnessError(f"cache directory {str(store.root)!r} does not exist (pass --cache-dir)")
    entry = find_entry(store, encoder=args.encoder, dataset=args.dataset, split=args.split, key=args.key)
    written = export_embeddings(store, entry, args.out)
    print(f"exported {entry.encoder} {entry.dataset}/{entry.split} ({entry.n} x {entry.dim}, key {entry.key[:12]}):")
    for path in written:
        print(f"  {path}")
    return 0
