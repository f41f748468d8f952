"""Run by tests/test_distributed.py as `torchrun --nproc_per_node=2 tests/harness_test_support/distributed_records_worker.py OUT
-- ARGS`: `harness run ARGS` on every rank, each writing its exit status to OUT/rank<N>-exit.txt.

The process group is joined here first (so `harness run` keeps it): after the run every rank meets once more, so
that each has written its status before any exits (torchrun stops the other ranks as soon as one exits non-zero).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from harness import distributed


def main() -> None:
    from harness.cli import main as harness

    out, harness_args = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1:]
    with distributed.process_group() as ranks:
        try:
            code = harness(["run", *harness_args])
        except Exception:  # noqa: BLE001 - what `python -m harness` would do: a traceback and exit status 1
            traceback.print_exc()
            code = 1
        (out / f"rank{ranks.rank}-exit.txt").write_text(str(code))
        ranks.barrier("every rank wrote its exit status")


if __name__ == "__main__":
    main()
