"""The subprocess side of tests/test_faults.py, for faults that need a real process to kill or to race.

    python tests/harness_test_support/fault_worker.py run ARGS...
        `harness run ARGS...`, with the `paced-pixels` encoder added
    python tests/harness_test_support/fault_worker.py records TEMPLATE DIR
        write records (seeds 0, 1, ...) with big predictions forever

`paced-pixels` is the pixel encoder (same vectors, same cache key) sleeping $HARNESS_TEST_ENCODE_DELAY seconds
per batch, so that a test can observe an extraction in progress from outside and kill or race it.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    # Run as a script, Python put this file's folder first on sys.path. Replace it with tests/, the folder that
    # holds the support package, so that `harness_test_support` imports as a package and no helper by a bare
    # name. Never the repository root: its harness/ folder would shadow the installed harness (harness.plugins,
    # the repository's plugins/ folder, would then not import).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from harness.plugins.pixels import Pixels  # noqa: E402
from harness_test_support.helpers import EncoderPlugin  # noqa: E402

PREDICTION_ITEMS = 1_500_000  # big enough that writing one record's predictions takes a visible moment


class PacedPixels(Pixels):
    name = "paced-pixels"

    def encode(self, batch):
        time.sleep(float(os.environ.get("HARNESS_TEST_ENCODE_DELAY", "0")))
        return super().encode(batch)


def expected_predictions(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"predicted": rng.integers(0, 10, PREDICTION_ITEMS), "scores": rng.random(PREDICTION_ITEMS // 4)}


def run(argv: list[str]) -> int:
    from harness import plugin_manager
    from harness.cli import main

    plugin_manager._default = plugin_manager.Plugins(extra=[("paced-pixels", EncoderPlugin("paced-pixels", PacedPixels))])
    return main(["run", *argv])


def write_records(template_path: str, results_dir: str) -> int:
    from harness.records import write_record

    template = json.loads(Path(template_path).read_text())
    for seed in itertools.count():
        write_record(results_dir, {**template, "seed": seed}, predictions=expected_predictions(seed))
    return 0


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    sys.exit(run(rest) if command == "run" else write_records(*rest))
