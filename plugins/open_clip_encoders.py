"""`open_clip:<architecture>@<pretrained tag or weights file>`: the image tower of an open_clip model.

Features are `encode_image` outputs (the projected embedding CLIP papers evaluate), with open_clip's own
validation preprocessing. open_clip is imported only when such an encoder is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from harness import hookimpl
from harness.errors import HarnessError
from harness.types import Encoder
from harness.files import sha256_file


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:
        raise HarnessError("open_clip encoders need the package open_clip_torch: pip install open_clip_torch") from error
    return open_clip


class OpenClipEncoder(Encoder):
    pretraining = "image-text"

    def __init__(self, architecture: str, pretrained: str) -> None:
        open_clip = _open_clip()
        if architecture not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(architecture, open_clip.list_models(), n=3, cutoff=0.5)
            raise HarnessError(f"open_clip has no architecture {architecture!r}"
                               + (f"; did you mean: {', '.join(close)}?" if close else ""))
        self.name = f"open_clip:{architecture}@{pretrained}"
        self.architecture = architecture
        self.pretrained = pretrained
        self.is_file = Path(pretrained).expanduser().is_file()
        if not self.is_file and any(c in pretrained for c in "/\\") :
            raise HarnessError(f"open_clip weights file {pretrained!r} does not exist")
        self.model: Any = None
        self._preprocess: Any = None
        self._sha256: str | None = None

    def weights_fingerprint(self) -> dict[str, Any]:
        if not self.is_file:
            return {"source": "open_clip pretrained tag", "tag": self.pretrained}
        if self._sha256 is None:
            self._sha256 = sha256_file(Path(self.pretrained).expanduser())
        return {"source": "file", "path": str(Path(self.pretrained).expanduser().resolve()), "sha256": self._sha256}

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "open_clip", "architecture": self.architecture, "weights": self.weights_fingerprint(),
                "open_clip": _open_clip().__version__, "output": "encode_image"}

    def info(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "library": "open_clip", "weights": self.weights_fingerprint(),
                "pretraining": self.pretraining, "pooling": "encode_image",
                "transform": repr(self._preprocess) if self._preprocess is not None else "open_clip preprocess_val"}

    def load(self, device: str) -> None:
        open_clip = _open_clip()
        pretrained = str(Path(self.pretrained).expanduser()) if self.is_file else self.pretrained
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(self.architecture, pretrained=pretrained,
                                                                         device=device)
        except Exception as error:  # noqa: BLE001
            raise HarnessError(
                f"cannot load open_clip {self.architecture} with pretrained={self.pretrained!r}: {error}. Offline, "
                f"pass a local weights file: open_clip:{self.architecture}@/path/to/open_clip_model.bin") from error
        self.model = model.eval()
        self._preprocess = preprocess

    @property
    def transform(self) -> Callable[[Any], Any]:
        if self._preprocess is None:
            raise HarnessError("open_clip encoder used before load()")
        return self._preprocess

    def encode(self, batch: Any) -> Any:
        return self.model.encode_image(batch)

    def parameter_count(self) -> int | None:
        return sum(p.numel() for p in self.model.visual.parameters()) if self.model is not None else None


def open_clip_encoder(argument: str) -> OpenClipEncoder:
    architecture, sep, pretrained = argument.partition("@")
    if not sep or not pretrained:
        raise HarnessError(f"write open_clip:<architecture>@<pretrained tag or file>, e.g. "
                           f"open_clip:ViT-B-32@laion2b_s34b_b79k (got open_clip:{argument})")
    return OpenClipEncoder(architecture, pretrained)


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    register("open_clip", open_clip_encoder,
             "Image tower of an open_clip model: open_clip:<architecture>@<pretrained tag or weights file>",
             prefix=True)
