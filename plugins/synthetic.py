"""`synthetic`: small generated images whose class sets their colour and stripe pattern (for tests and demos).

Deterministic from its options, so tests get real images, real files-free decoding and real encoders without
any download.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.types import Dataset, DatasetSplit

SPLIT_SEEDS = {"train": 0, "test": 1}


class SyntheticSplit(DatasetSplit):
    def __init__(self, split: str, classes: int, per_class: int, side: int, seed: int) -> None:
        self.split, self.classes, self.per_class, self.side, self.seed = split, classes, per_class, side, seed

    def __len__(self) -> int:
        return self.classes * self.per_class

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        if not 0 <= index < len(self):
            raise IndexError(index)
        label = index % self.classes
        rng = np.random.default_rng([self.seed, SPLIT_SEEDS[self.split], index])
        palette = np.random.default_rng([self.seed, label]).uniform(40, 215, size=3)
        stripes = (np.arange(self.side) // (1 + label % 4)) % 2 * 30.0
        pixels = palette[None, None, :] + stripes[:, None, None] + rng.normal(0, 25, (self.side, self.side, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), label

    def item_id(self, index: int) -> str:
        return f"{self.split}/{index}"

    def fingerprint(self) -> str:
        params = [self.split, self.classes, self.per_class, self.side, self.seed, len(self)]
        return hashlib.sha256(json.dumps(params).encode()).hexdigest()


class Synthetic(Dataset):
    def __init__(self, classes: int = 4, per_class: int = 24, side: int = 32, seed: int = 0) -> None:
        self.classes, self.per_class, self.side, self.seed = classes, per_class, side, seed

    def info(self) -> dict[str, Any]:
        return {"source": "generated (plugins/synthetic.py)", "revision": "1",
                "class_names": [f"class{i}" for i in range(self.classes)], "splits": list(SPLIT_SEEDS),
                "split_sizes": {s: self.classes * self.per_class for s in SPLIT_SEEDS},
                "options": {"classes": self.classes, "per_class": self.per_class, "side": self.side, "seed": self.seed}}

    def split(self, name: str) -> SyntheticSplit:
        if name not in SPLIT_SEEDS:
            raise HarnessError(f"dataset 'synthetic' has no split {name!r}; it has {', '.join(SPLIT_SEEDS)}")
        return SyntheticSplit(name, self.classes, self.per_class, self.side, self.seed)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("synthetic", Synthetic, "Generated 32x32 images, colour and stripes set by class (tests, demos)")
