"""The subprocess side of tests/test_faults.py, for faults that need a real process to kill or to race.

    python tests/fault_worker.py run ARGS...          `harness run ARGS...`, with the `paced-pixels` encoder added
    python tests/fault_worker.py records TEMPLATE DIR  write records (seeds 0, 1, ...) with big predictions forever

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

from helpers import EncoderPlugin
from harness.plugins.pixels import Pixels

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
