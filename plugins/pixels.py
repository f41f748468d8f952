"""The raw-pixel baseline: each image resized to 32x32 and flattened (3,072 numbers in [0, 1])."""

from __future__ import annotations

from typing import Any, Callable

from harness import hookimpl
from harness.types import Encoder

SIDE = 32


class Pixels(Encoder):
    name = "pixels"
    pretraining = "none"

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "pixels", "side": SIDE, "interpolation": "bilinear", "antialias": True, "version": 1}

    def info(self) -> dict[str, Any]:
        return {"architecture": f"pixels {SIDE}x{SIDE}x3", "weights": {"source": "none"}, "pretraining": "none",
                "pooling": "none", "transform": {"resize": [SIDE, SIDE], "interpolation": "bilinear"}}

    def load(self, device: str) -> None:
        pass

    @property
    def transform(self) -> Callable[[Any], Any]:
        from torchvision import transforms

        return transforms.Compose([
            transforms.Resize((SIDE, SIDE), interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.ToTensor(),
        ])

    def encode(self, batch: Any) -> Any:
        return batch.flatten(start_dim=1)


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    register("pixels", Pixels, "Raw pixels resized to 32x32 and flattened: the classic no-learning baseline")
