"""`cifar10-mini`: 1,500 real CIFAR-10 images shipped inside the package, so the default run needs no network.

Provenance and reference figures: `plugins/data/cifar10-mini/README.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness import hookimpl
from harness.plugins.imagefolder import ImageFolder

ROOT = Path(__file__).parent / "data" / "cifar10-mini"


def cifar10_mini() -> ImageFolder:
    # Content hashes, not mtimes: pip gives the shipped files new mtimes at every install.
    return ImageFolder(ROOT, content_hash=True, revision="1",
                       source="CIFAR-10 subset shipped with encoder-harness: first 100 train / 50 test images per class")


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("cifar10-mini", cifar10_mini,
             "1,500 CIFAR-10 images (100 train + 50 test per class), shipped with the package; offline")
