"""`harness run`: its flags, the RunConfig they make (from flags or a suite file), and the run itself."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from harness.cli.listing import warn_problems
from harness.defaults import DEFAULT_CACHE_DIR, DEFAULT_RESULTS_DIR
from harness.errors import HarnessError
from harness.records import dataset_column, with_results_dir

if TYPE_CHECKING:
    from harness.plugin_manager import Plugins
    from harness.runner import RunConfig

log = logging.getLogger("harness")

#: What quiets the progress bars that libraries under the plugins draw by themselves (`datasets`' "Generating
#: train split" and "Loading dataset from disk", the hub's downloads) when --no-progress asks for a quiet log.
#: Those libraries read them when imported, which the plugins do lazily, after the flags are parsed.
QUIET_LIBRARY_PROGRESS = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@contextmanager
def library_progress(enabled: bool) -> Iterator[None]:
    """With `enabled` False, the libraries' own bars are off for the run; the environment is restored after it (a
    value the user set is left as it was). A library imported earlier in this process keeps its setting: the
    command line imports none before the run."""
    saved = {variable: os.environ.get(variable) for variable in QUIET_LIBRARY_PROGRESS}
    if not enabled:
        for variable, value in QUIET_LIBRARY_PROGRESS.items():
            os.environ.setdefault(variable, value)
    try:
        yield
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def _csv_list(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def add_run_parser(sub: Any) -> None:
    from harness.defaults import DEFAULT_DATASETS, DEFAULT_ENCODERS
    from harness.extract import STORAGE_DTYPES
    from harness.leaderboard import FORMATS

    run = sub.add_parser("run", help="extract embeddings (once, cached) and evaluate them; print the leaderboard")
    run.add_argument("--suite", metavar="FILE.toml", default=None,
                     help="run the encoders x datasets x evaluators x seeds a suite file lists (examples/suites/); "
                          "flags for places and devices override the file")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                     help="reuse cells whose ok record already exists with the same protocol, options, seed and "
                          "embedding cache keys (default: on)")
    run.add_argument("--force", action="store_true",
                     help="measure every cell again, even those already done (as --no-resume), and write them "
                          "even where the results hold a row of that name from another encoder (other weights)")
    run.add_argument("--encoder", "-e", action="append", metavar="E",
                     help="encoder, repeatable: timm:<model> (timm's hub weights); timm:<model>@<weights file> "
                          "(.pth, .pt, .bin or .safetensors, e.g. timm:resnet50@/path/weights.safetensors); "
                          "open_clip:<architecture>@<pretrained tag or weights file> (e.g. "
                          "open_clip:ViT-B-32@laion2b_s34b_b79k); random:<timm model> (untrained, seeded); or a "
                          f"plain name such as pixels (default: {', '.join(DEFAULT_ENCODERS)}). `harness encoders` "
                          "lists every name and prefix, plugins' included")
    run.add_argument("--dataset", "-d", action="append", metavar="D",
                     help="dataset name, repeatable; imagefolder:<path> for images on disk; `harness datasets` "
                          f"lists them all (default: {', '.join(DEFAULT_DATASETS)})")
    run.add_argument("--eval", dest="evaluators", action="append", metavar="EV[,EV...]",
                     help="evaluators (default: every built-in evaluator but opt-in presets such as "
                          "clustering-study)")
    # None defaults: a flag given beside --suite overrides the file, one left out does not
    run.add_argument("--results-dir", default=None, help=f"where records go (default: ./{DEFAULT_RESULTS_DIR})")
    run.add_argument("--cache-dir", default=None, help=f"embedding cache (default: ./{DEFAULT_CACHE_DIR})")
    run.add_argument("--device", default=None, help="auto (CUDA when present, the default), cpu or cuda[:N]")
    run.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: 64)")
    run.add_argument("--workers", type=int, default=None,
                     help="DataLoader workers, and the CPU workers an evaluator may start (default: chosen for the "
                          "machine)")
    run.add_argument("--seed", type=int, default=None,
                     help="seed of every stochastic step (and of random: encoders) (default: 0)")
    run.add_argument("--pooling", choices=("default", "cls", "mean"), default=None,
                     help="feature pooling of timm encoders (default: the model's own)")
    run.add_argument("--layers", default=None, metavar="L[,L...]",
                     help="which layers' features timm and open_clip encoders give: last (the default: the model's "
                          "own output), last<n> (the last n blocks or stages, e.g. last4), dinov2 (DINOv2's "
                          "linear-eval features: class tokens of the last 4 blocks and the mean patch token), "
                          "stages:<i,j> (CNN feature levels, average-pooled). Several, comma-separated, make a row "
                          "each and share one forward pass")
    run.add_argument("--data-root", default=None,
                     help="where torchvision datasets are downloaded or found (default: $HARNESS_DATA_ROOT, "
                          "else ~/.cache/harness/data)")
    run.add_argument("--dataset-option", action="append", metavar="OPTION=VALUE", default=None,
                     help="an option of the datasets that take it, repeatable, e.g. label_key=label for wds: or "
                          "image_column=img for hfds:; VALUE is a TOML scalar (a bare word is a string); a dataset "
                          "with non-default options is another column")
    run.add_argument("--skip-bad-images", action="store_true",
                     help="skip unreadable images (counted in the record) instead of stopping")
    run.add_argument("--shard-size", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--eval-option", action="append", metavar="EVALUATOR.OPTION=VALUE", default=None,
                     help="an option of one evaluator, repeatable, e.g. clustering.reduce=pca or knn.main_k=10; "
                          "VALUE is a TOML scalar (a bare word is a string); non-default options make another "
                          "column")
    # Before 0.2 clustering had flags of its own; they still work, as --eval-option clustering.<option>=VALUE.
    for flag, kind in (("--reduce", str), ("--n-components", int), ("--cluster-subsample", int)):
        run.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    run.add_argument("--storage-dtype", choices=STORAGE_DTYPES, default=None,
                     help="how features are cached (float16: half the disk; evaluators compute in float32; "
                          "another cache key and another leaderboard row)")
    run.add_argument("--memory-budget-mb", type=float, default=None,
                     help="working memory every evaluator may use (default: from the device); an execution "
                          "setting, like the device: it changes how results are computed, never which cell they are")
    run.add_argument("--format", choices=FORMATS, default="plain",
                     help="format of the printed leaderboard (default: %(default)s)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bars or periodic progress lines (each cell, and the end of each stage, are still "
                          "logged)")



#: `harness run` flags that choose *what* is measured: with --suite, the file says that.
SUITE_CONFLICTS = (("encoder", "--encoder"), ("dataset", "--dataset"), ("evaluators", "--eval"), ("seed", "--seed"),
                   ("pooling", "--pooling"), ("layers", "--layers"), ("eval_option", "--eval-option"),
                   ("dataset_option", "--dataset-option"),
                   ("reduce", "--reduce"), ("n_components", "--n-components"),
                   ("cluster_subsample", "--cluster-subsample"), ("storage_dtype", "--storage-dtype"))
#: The pre-0.2 clustering flags and the clustering option each one sets.
LEGACY_CLUSTERING_FLAGS = (("reduce", "--reduce", "reduce"), ("n_components", "--n-components", "n_components"),
                           ("cluster_subsample", "--cluster-subsample", "subsample"))


def _parse_option_value(text: str) -> object:
    """A TOML scalar (`10`, `0.5`, `true`, `"pca"`); anything TOML does not read as a scalar is the string itself,
    so `reduce=pca` needs no quotes."""
    from harness.suite import tomllib

    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
    return text if isinstance(value, (dict, list)) else value


def eval_options(args: argparse.Namespace, evaluators: list[str], plugins: Plugins) -> dict[str, dict[str, object]]:
    """`--eval-option EVALUATOR.OPTION=VALUE` (and the legacy clustering flags) as per-evaluator options, each one
    checked by the evaluator itself before any work, as a suite's `[[evaluators]] options` are."""
    options: dict[str, dict[str, object]] = {}
    for attribute, flag, option in LEGACY_CLUSTERING_FLAGS:
        value = getattr(args, attribute)
        if value is None:
            continue
        if "clustering" not in evaluators:  # as before 0.2: a clustering flag means nothing to other evaluators
            log.warning("%s is deprecated, and ignored here: this run does not use clustering", flag)
            continue
        log.warning("%s is deprecated: use --eval-option clustering.%s=%s", flag, option, value)
        options.setdefault("clustering", {})[option] = value
    for text in args.eval_option or []:
        target, equals, raw = text.partition("=")
        name, dot, option = target.strip().partition(".")
        if not (equals and dot and name and option.strip()):
            raise HarnessError(f"--eval-option {text!r}: write EVALUATOR.OPTION=VALUE, e.g. clustering.reduce=pca")
        options.setdefault(name, {})[option.strip()] = _parse_option_value(raw.strip())
    for name, given in options.items():
        plugins.evaluators.resolve(name)  # an unknown name: the registry's error, with close matches
        if name not in evaluators:
            raise HarnessError(f"--eval-option names evaluator {name!r}, which this run does not use (it runs "
                               f"{', '.join(evaluators)}); add it to --eval or drop the option")
        try:
            plugins.evaluator(name, **given)
        except HarnessError as error:
            raise HarnessError(f"--eval-option for {name!r}: {error}") from error
    return options


def dataset_specs(args: argparse.Namespace, plugins: Plugins) -> list[Any]:
    """The datasets of `harness run` flags: names, or DatasetSpecs carrying the `--dataset-option`s each one's
    factory takes. An option that no dataset of the run takes is an error, as a misspelt one would be."""
    from harness.defaults import DEFAULT_DATASETS
    from harness.runner import DatasetSpec, options_for

    names = args.dataset or list(DEFAULT_DATASETS)
    options: dict[str, object] = {}
    for text in args.dataset_option or []:
        option, equals, raw = text.partition("=")
        if not (equals and option.strip()):
            raise HarnessError(f"--dataset-option {text!r}: write OPTION=VALUE, e.g. label_key=label")
        options[option.strip()] = _parse_option_value(raw.strip())
    if not options:
        return names
    specs: list[Any] = []
    used: set[str] = set()
    for name in names:
        accepted, _ = options_for(plugins.datasets.resolve(name)[0].factory, options)
        used |= set(accepted)
        specs.append(DatasetSpec(name, accepted) if accepted else name)
    unused = sorted(set(options) - used)
    if unused:
        raise HarnessError(f"--dataset-option {', '.join(unused)}: no dataset of this run ({', '.join(names)}) takes "
                           f"{'it' if len(unused) == 1 else 'them'}; `harness datasets` lists each dataset's options")
    return specs


def run_config(args: argparse.Namespace, plugins: Plugins) -> RunConfig:
    """The RunConfig of `harness run` arguments: from the suite file when there is one (with the flags for places
    and devices overriding it), else from the flags alone."""
    from harness.defaults import DEFAULT_ENCODERS
    from harness.runner import RunConfig

    default_evaluators = [e.name for e in plugins.evaluators
                          if plugins.infos[e.plugin].builtin and getattr(e.factory, "in_default_run", True)]
    if args.suite:
        from harness.suite import load_suite

        clashes = [flag for attribute, flag in SUITE_CONFLICTS if getattr(args, attribute) not in (None, [])]
        if clashes:
            raise HarnessError(f"{', '.join(clashes)} cannot be combined with --suite: the suite file says what is "
                               f"measured (edit it, or run without --suite)")
        config = load_suite(args.suite, plugins, default_evaluators).config
        for attribute in ("results_dir", "cache_dir", "device", "batch_size", "workers", "shard_size", "resume"):
            if getattr(args, attribute) is not None:
                setattr(config, attribute, getattr(args, attribute))
        config.resume = config.resume and not args.force
        config.force = args.force
        if args.data_root:
            config.dataset_options = {"data_root": args.data_root}
        config.skip_bad_images = config.skip_bad_images or args.skip_bad_images
        if args.memory_budget_mb is not None:
            config.memory_budget_mb = args.memory_budget_mb
        config.progress = not args.no_progress
        return config
    seed = args.seed or 0
    encoder_options = {"init_seed": seed} if seed else {}
    if args.pooling:
        encoder_options["pooling"] = args.pooling
    if args.layers:
        encoder_options["layers"] = args.layers
    evaluators = _csv_list(args.evaluators) or default_evaluators
    return RunConfig(encoders=args.encoder or list(DEFAULT_ENCODERS), datasets=dataset_specs(args, plugins),
                     evaluators=evaluators, memory_budget_mb=args.memory_budget_mb,
                     results_dir=args.results_dir or DEFAULT_RESULTS_DIR, cache_dir=args.cache_dir or DEFAULT_CACHE_DIR,
                     device=args.device or "auto", batch_size=args.batch_size or 64, workers=args.workers,
                     seed=seed, skip_bad_images=args.skip_bad_images, shard_size=args.shard_size,
                     encoder_options=encoder_options, progress=not args.no_progress,
                     resume=not args.force and args.resume is not False,  # finished cells are reused by default
                     force=args.force,
                     dataset_options={"data_root": args.data_root} if args.data_root else {},
                     evaluator_options=eval_options(args, evaluators, plugins),
                     storage_dtype=args.storage_dtype or "float32")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.distributed import process_group
    from harness.plugin_manager import get_plugins
    from harness.records import load_records
    from harness.runner import run
    from harness.leaderboard import build_leaderboard, render

    plugins = get_plugins()
    warn_problems(plugins)
    config = run_config(args, plugins)
    with library_progress(config.progress), process_group() as ranks:  # under torchrun; one process otherwise
        report = run(config, plugins, ranks=ranks)
    if not report.ranks.leader:  # under torchrun: rank 0 reports for every rank
        failed = (f"; {len(report.failures)} cell(s) failed (rank 0's log has the errors)" if report.failures
                  else "")
        print(f"rank {report.ranks.rank} of {report.ranks.world_size}: extraction shared and done; rank 0 "
              f"evaluates, writes the records and prints the results{failed}", file=sys.stderr)
        return 1 if report.failures else 0
    if report.already_done:
        print(f"{len(report.already_done)} cell(s) skipped: already done (same protocol, options, seed and cache "
              f"keys in {config.results_dir}); --force measures them again", file=sys.stderr)
    hits = sum(r.cache_hit for r in report.extractions)
    if not report.extractions:
        pass  # nothing needed embeddings: every cell was already done
    elif report.forward_passes == 0:
        print(f"all {hits} embedding sets came from the cache: no forward pass was run", file=sys.stderr)
    else:
        print(f"extracted {report.items_encoded} items in {report.forward_passes} forward passes; "
              f"{hits} embedding set(s) came from the cache", file=sys.stderr)
    skipped_items = sum(len(r.skipped) for r in report.extractions)
    if skipped_items:
        print(f"{skipped_items} unreadable item(s) were skipped (listed in the records)", file=sys.stderr)
    ran = {(r["encoder"]["name"], r["dataset"]["name"]) for r in report.records + report.already_done}
    records = [r for r in load_records(config.results_dir)
               if (r["encoder"]["name"], r["dataset"]["name"]) in ran] if ran else []
    if records:
        print(render(build_leaderboard(records), args.format))
    for record in report.records:  # a "—" in the table: say why here, not only inside the record
        if record["main_score"] is None:
            reason = (record["metrics"].get("null_reasons") or {}).get(record["main_metric"], "no reason recorded")
            print(f"note: {record['encoder']['name']} on {dataset_column(record)} ({record['evaluator']['name']}): "
                  f"no {record['main_metric']}: {reason}", file=sys.stderr)
    if report.failures:  # each error is already in the log above (once), and in its failed record
        print(f"{len(report.failures)} cell(s) failed: the errors are above, and in the failed records under "
              f"{config.results_dir} (`{with_results_dir('harness results ls --failed', config.results_dir)}` lists "
              f"them)", file=sys.stderr)
    return 1 if report.failures else 0


