"""Run by tests/test_webdataset.py as
`torchrun --nproc_per_node=2 tests/harness_test_support/wds_distributed_worker.py SHARDS OUT`.

1. Both ranks extract the train split of `wds:SHARDS` with `pixels` into OUT/cache (shards of 128 items, one per
   rank in turn, read in the rank's own process: no DataLoader workers), then each writes what its reader did
   (OUT/rank<N>-reads.json: shards opened, reads that went back).
2. Both ranks run `harness run -e pixels -d wds:SHARDS --eval knn` with an empty shard-index folder, counting the
   tar shards each indexed from their headers (OUT/rank<N>-run.json): rank 0 scans the datasets first, so it
   indexes them all and the other rank reads its saved index.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # tests/, never the repository root

from harness import distributed  # noqa: E402
from harness.extract import ExtractionOptions, extract  # noqa: E402
from harness.plugin_manager import Plugins  # noqa: E402
from harness.plugins import wds_index  # noqa: E402
from harness.plugins.webdataset import WebDataset  # noqa: E402
from harness.store import EmbeddingStore  # noqa: E402


def extract_train(shards: str, out: Path, ranks: distributed.Ranks) -> None:
    plugins = Plugins(entry_points=False)
    data = plugins.dataset(f"wds:{shards}")
    options = ExtractionOptions(device="cpu", batch_size=32, workers=0, shard_size=128, progress=False)
    _, report = extract(plugins.encoder("pixels"), data, "train", EmbeddingStore(out / "cache"), options, ranks)
    split = data.split("train")
    (out / f"rank{ranks.rank}-reads.json").write_text(json.dumps(
        {"shards_opened": split.shards_opened, "reads_backwards": split.reads_backwards, "key": report.key}))


def run_counting_indexed_shards(shards: str, out: Path, ranks: distributed.Ranks) -> None:
    from harness.cli import main as harness

    indexed = []
    index = WebDataset._index

    def counting_index(self: WebDataset, paths: list[Path]) -> list:
        before = self.shards_indexed
        result = index(self, paths)
        indexed.append(self.shards_indexed - before)
        return result

    WebDataset._index = counting_index  # observes the datasets that `harness run` builds for itself
    os.environ[wds_index.INDEX_DIR_ENV] = str(out / "run-index")
    code = harness(["run", "-e", "pixels", "-d", f"wds:{shards}", "--eval", "knn", "--cache-dir",
                    str(out / "run-cache"), "--results-dir", str(out / "run-results"), "--device", "cpu",
                    "--workers", "0", "--no-progress"])
    (out / f"rank{ranks.rank}-run.json").write_text(json.dumps({"exit": code, "shards_indexed": sum(indexed)}))


def main() -> None:
    shards, out = sys.argv[1], Path(sys.argv[2])
    ranks, _ = distributed.join()
    extract_train(shards, out, ranks)
    ranks.barrier("writing what each rank read")
    run_counting_indexed_shards(shards, out, ranks)
    ranks.barrier("writing what each rank indexed")


if __name__ == "__main__":
    main()
