"""Run by tests/test_webdataset.py as
`torchrun --nproc_per_node=2 tests/harness_test_support/wds_distributed_worker.py SHARDS OUT`.

Both ranks scan `wds:SHARDS` as `harness run` does (rank 0 first), extract its train split with `pixels` into
OUT/cache (shards of 128 items, one per rank in turn, read in the rank's own process: no DataLoader workers), then
each writes what it did (OUT/rank<N>-reads.json: tar shards it indexed, shards opened, reads that went back)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # tests/, never the repository root

from harness import distributed  # noqa: E402
from harness.extract import ExtractionOptions, extract  # noqa: E402
from harness.plugin_manager import Plugins  # noqa: E402
from harness.runner import scan_datasets  # noqa: E402
from harness.store import EmbeddingStore  # noqa: E402


def main() -> None:
    shards, out = sys.argv[1], Path(sys.argv[2])
    ranks, _ = distributed.join()
    plugins = Plugins(entry_points=False)
    data = plugins.dataset(f"wds:{shards}")
    scan_datasets([data], ranks)
    options = ExtractionOptions(device="cpu", batch_size=32, workers=0, shard_size=128, progress=False)
    _, report = extract(plugins.encoder("pixels"), data, "train", EmbeddingStore(out / "cache"), options, ranks)
    split = data.split("train")
    (out / f"rank{ranks.rank}-reads.json").write_text(json.dumps(
        {"shards_indexed": data.shards_indexed, "shards_opened": split.shards_opened, "reads_backwards": split.reads_backwards, "key": report.key}))
    ranks.barrier("writing what each rank read")


if __name__ == "__main__":
    main()
