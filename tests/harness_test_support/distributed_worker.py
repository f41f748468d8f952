"""Run by tests/test_distributed.py as
`torchrun --nproc_per_node=2 tests/harness_test_support/distributed_worker.py OUT -- ARGS`.

Two gloo ranks (one launch, as starting processes costs most of the time on a small CPU), in three acts:

0. `harness run ARGS`, exactly what `torchrun -m harness run ARGS` runs (in the process group joined here first,
   as a process cannot join a second one), then the same with `--resume`, which must find every cell done;
1. the `test` split with an encoder that raises on rank 1 only: every rank must raise (none may hang), and each
   writes what it raised to OUT/rank<N>-error.txt; then an encoder that gives NaN on rank 1 in its second shard:
   every rank raises, and rank 0 removes the shards both ranks wrote (listed in OUT/nan-shards-left.txt);
2. the `train` split with an encoder whose rank 1 process exits abruptly after writing its first shard: torchrun
   then stops rank 0 too, and the shards already written stay in CACHE for a rerun.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, Python put this file's folder first on sys.path. Replace it with tests/, the folder that
    # holds the support package, so that `harness_test_support` imports as a package and no helper by a bare
    # name. Never the repository root: its harness/ folder would shadow the installed harness (harness.plugins,
    # the repository's plugins/ folder, would then not import).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from harness import distributed  # noqa: E402
from harness.extract import ExtractionOptions, extract, split_cache_key  # noqa: E402
from harness.store import EmbeddingStore  # noqa: E402
from harness.plugins.synthetic import Synthetic  # noqa: E402
from harness.plugin_manager import Plugins  # noqa: E402
from harness.runner import RunConfig, run  # noqa: E402
from harness.types import Evaluator  # noqa: E402
from harness_test_support.helpers import CountingPixels, EvaluatorPlugin  # noqa: E402

#: 96 items per split in shards of 16: six shards, three per rank; batches of 8, two per shard.
ITEMS, SHARD_SIZE, BATCH_SIZE = 96, 16, 8


def synthetic() -> Synthetic:
    data = Synthetic(classes=4, per_class=ITEMS // 4)
    data.name = "synthetic"
    return data


def options() -> ExtractionOptions:
    return ExtractionOptions(device="cpu", batch_size=BATCH_SIZE, shard_size=SHARD_SIZE, progress=False)


class FailsOnRank1(CountingPixels):
    def encode(self, batch):
        if os.environ["RANK"] == "1":
            raise ValueError("simulated encoder failure on rank 1")
        return super().encode(batch)


class NaNOnRank1(CountingPixels):
    def fingerprint(self):
        return {**super().fingerprint(), "emits": "nan"}  # a key of its own, apart from the other acts

    def encode(self, batch):
        out = super().encode(batch)
        # The third batch starts rank 1's second shard: both ranks' first shards are on disk by then.
        if os.environ["RANK"] == "1" and self.calls == 3:
            out[0] = float("nan")
        return out


class ExplodingEvaluator(Evaluator):
    name = "exploding"
    protocol = "exploding/v1"

    def evaluate(self, train, test, *, seed, device):
        raise RuntimeError("simulated evaluator failure (evaluators run on rank 0)")


class DiesOnRank1(CountingPixels):
    def encode(self, batch):
        # The third batch starts rank 1's second shard: its first shard (two batches) is on disk by then.
        if os.environ["RANK"] == "1" and self.calls == 2:
            os._exit(17)
        return super().encode(batch)


def main() -> None:
    from harness.cli import main as harness

    out, harness_args = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1:]
    ranks, _ = distributed.join()
    (out / f"rank{ranks.rank}-run-exit.txt").write_text(str(harness(["run", *harness_args])))
    (out / f"rank{ranks.rank}-resume-exit.txt").write_text(str(harness(["run", *harness_args, "--resume"])))
    store = EmbeddingStore(out / "cache")
    try:
        extract(FailsOnRank1(), synthetic(), "test", store, options())
        outcome = "no error"
    except Exception as error:  # noqa: BLE001 - the test reads what each rank raised
        outcome = f"{type(error).__name__}: {error}"
    (out / f"rank{ranks.rank}-error.txt").write_text(outcome)
    nan = NaNOnRank1()
    try:
        extract(nan, synthetic(), "test", store, options())
        outcome = "no error"
    except Exception as error:  # noqa: BLE001 - the test reads what each rank raised
        outcome = f"{type(error).__name__}: {error}"
    (out / f"rank{ranks.rank}-nan-error.txt").write_text(f"{outcome}\n{nan.calls} batches")
    if ranks.leader:
        key = split_cache_key(nan, synthetic(), "test", synthetic().split("test"), options())[0]
        left = sorted(p.name for p in store.partial_dir(key).glob("shard-*"))
        (out / "nan-shards-left.txt").write_text(" ".join(left))
    ranks.barrier("checking what the NaN extraction left")
    leader_first_turns(out, ranks)
    evaluator_failure(out, ranks)
    extract(DiesOnRank1(), synthetic(), "train", store, options())


def evaluator_failure(out: Path, ranks: distributed.Ranks) -> None:
    """`runner.run` with an evaluator that raises (on rank 0, where evaluators run): every rank's report lists the
    failed cell, so every rank's `harness run` exits non-zero."""
    plugins = Plugins(entry_points=False, extra=[("exploding", EvaluatorPlugin("exploding", ExplodingEvaluator))])
    config = RunConfig(encoders=["pixels"], datasets=["synthetic"], evaluators=["exploding", "knn"],
                       results_dir=out / "exploding-results", cache_dir=out / "exploding-cache", device="cpu",
                       batch_size=BATCH_SIZE, shard_size=SHARD_SIZE, progress=False)
    report = run(config, plugins, ranks)
    failures = [f"{f.encoder} {f.evaluator}: {f.error}" for f in report.failures]
    (out / f"rank{ranks.rank}-evaluator-failures.txt").write_text("\n".join(failures))


def leader_first_turns(out: Path, ranks: distributed.Ranks) -> None:
    """`distributed.leader_first`: rank 0's step ends before rank 1's starts (each appends its rank to one file
    only after sleeping, so running at once would show as interleaved or reversed lines); then a step failing on
    rank 1 alone is raised on both ranks."""
    turns = out / "leader-first-turns.txt"

    def step() -> int:
        with turns.open("a") as file:
            file.write(f"{ranks.rank} starts\n")
        time.sleep(0.5)
        with turns.open("a") as file:
            file.write(f"{ranks.rank} ends\n")
        return ranks.rank

    result = distributed.leader_first(ranks, "taking turns", step)
    (out / f"rank{ranks.rank}-leader-first.txt").write_text(str(result))

    def fails_on_rank_1() -> None:
        if ranks.rank == 1:
            raise ValueError("simulated scan failure on rank 1")

    try:
        distributed.leader_first(ranks, "scanning", fails_on_rank_1)
        outcome = "no error"
    except Exception as error:  # noqa: BLE001 - the test reads what each rank raised
        outcome = f"{type(error).__name__}: {error}"
    (out / f"rank{ranks.rank}-leader-first-error.txt").write_text(outcome)


if __name__ == "__main__":
    main()
