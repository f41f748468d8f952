"""Pre-decoded tensors as a harness dataset, and a timm encoder that takes them as they are.

Shared by benchmarks/run.py and benchmarks/gpu_check.py: with decoding out of the way, the extraction rows measure
the harness's loop (DataLoader, device transfer, autocast, shard writes) against a bare forward pass.
Import it after `harness` is importable (from the checkout or from wheels); it changes no import path itself.
"""

from __future__ import annotations

from typing import Any, Callable

from harness.types import Dataset, DatasetSplit
from harness.plugins.timm_encoders import TimmEncoder


def identity(item: Any) -> Any:
    """The transform of items that are already tensors (module level, so DataLoader workers can pickle it)."""
    return item


class TensorSplit(DatasetSplit):
    """Item i is `tensors[i % len(tensors)]`: a few distinct images stand for a large set without the memory."""

    def __init__(self, tensors: Any, n: int | None = None) -> None:
        self.tensors = tensors
        self.n = len(tensors) if n is None else n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.tensors[index % len(self.tensors)], 0

    def item_id(self, index: int) -> str:
        return f"train/{index}"

    def fingerprint(self) -> str:
        return f"pre-decoded-{tuple(self.tensors.shape)}-{self.n}"


class PreDecoded(Dataset):
    """One `train` split of pre-decoded tensors (unlabelled: the benchmarks only extract)."""

    name = "pre-decoded"

    def __init__(self, tensors: Any, n: int | None = None) -> None:
        self._split = TensorSplit(tensors, n)

    def info(self) -> dict[str, Any]:
        return {"source": "benchmarks/predecoded.py", "revision": "1", "class_names": [], "splits": ["train"]}

    def split(self, name: str) -> DatasetSplit:
        return self._split


class PreDecodedTimmEncoder(TimmEncoder):
    """A random-init timm encoder whose transform is the identity: its items are already transformed."""

    def __init__(self, model_name: str) -> None:
        super().__init__(model_name, weights=None)

    @property
    def transform(self) -> Callable[[Any], Any]:
        return identity
