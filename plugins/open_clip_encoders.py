"""`open_clip:<architecture>@<pretrained tag or weights file>`: the image tower of an open_clip model.

Features are `encode_image` outputs (the projected embedding CLIP papers evaluate), with open_clip's own
validation preprocessing. open_clip is imported only when such an encoder is used. The `layers` option
(`harness.layers`) reads blocks of a ViT tower through its `forward_intermediates` (open_clip 2.27 and newer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from harness import hookimpl
from harness.errors import HarnessError
from harness.layers import DEFAULT_LAYERS, single_choice
from harness.store import canonical_json
from harness.types import Encoder
from harness.files import sha256_file
from harness.plugins.intermediate_layers import LayerLayout, assemble, describe, needed_levels


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:
        raise HarnessError("open_clip encoders need the package open_clip_torch: pip install open_clip_torch") from error
    return open_clip


class OpenClipEncoder(Encoder):
    pretraining = "image-text"

    def __init__(self, architecture: str, pretrained: str, layers: str = DEFAULT_LAYERS) -> None:
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
        self.layers = single_choice(layers, self.name)
        self.levels: tuple[int, ...] = ()
        if not self.layers.is_default:  # checked on the model config: before any weights or data
            self.layout, self.pool_type, width = tower_layout(open_clip, architecture, self.name)
            self.levels = needed_levels(self.layers, self.layout)
            self.layers_dim = width * (len(self.levels) + (self.layers.kind == "dinov2"))

    def weights_fingerprint(self) -> dict[str, Any]:
        if not self.is_file:
            return {"source": "open_clip pretrained tag", "tag": self.pretrained}
        if self._sha256 is None:
            self._sha256 = sha256_file(Path(self.pretrained).expanduser())
        return {"source": "file", "path": str(Path(self.pretrained).expanduser().resolve()), "sha256": self._sha256}

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = {"kind": "open_clip", "architecture": self.architecture, "weights": self.weights_fingerprint(),
                       "open_clip": _open_clip().__version__, "output": "encode_image"}
        if not self.layers.is_default:  # only then: the default's cache keys are those from before the option
            fingerprint["layers"] = self.layers.spelling
        return fingerprint

    def forward_group(self) -> str:
        """Encoders with the same key run the same tower on the same inputs (`harness.shared_forward`)."""
        return canonical_json({k: v for k, v in self.fingerprint().items() if k != "layers"})

    def info(self) -> dict[str, Any]:
        info = {"architecture": self.architecture, "library": "open_clip", "weights": self.weights_fingerprint(),
                "pretraining": self.pretraining, "pooling": "encode_image",
                "transform": repr(self._preprocess) if self._preprocess is not None else "open_clip preprocess_val"}
        if not self.layers.is_default:
            info["pooling"] = f"{self.pool_type} of each block (ln_post applied, not projected)"
            info["layers"] = {"choice": self.layers.spelling, "indices": list(self.levels), "unit": self.layout.unit,
                              "parts": describe(self.layers, self.layout, self.pool_type), "dim": self.layers_dim}
        return info

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
        if self.layers.is_default:
            return self.model.encode_image(batch)
        return self.encode_together(batch, [self])[0]

    def encode_together(self, batch: Any, encoders: list[OpenClipEncoder]) -> list[Any]:
        """The features of each of `encoders` (same `forward_group`) from ONE pass of this encoder's image tower."""
        import torch

        levels = sorted({level for encoder in encoders for level in encoder.levels})
        if not levels:
            features = self.model.encode_image(batch)
            return [features for _ in encoders]
        visual = self.model.visual
        if not hasattr(visual, "forward_intermediates"):
            raise HarnessError(f"{self.name}: this open_clip ({_open_clip().__version__}) has no forward_intermediates "
                               f"on the image tower; layers other than 'last' need open_clip_torch 2.27 or newer")
        only = not any(encoder.layers.is_default for encoder in encoders)
        # ln_post on every block, as the tower applies it to its last one (and DINOv2 its final norm).
        out = visual.forward_intermediates(batch, indices=levels, normalize_intermediates=True, output_fmt="NLC",
                                           output_extra_tokens=True, intermediates_only=only, stop_early=only)
        tokens = {level: torch.cat([prefix, spatial], dim=1) for level, spatial, prefix in
                  zip(levels, out["image_intermediates"], out["image_intermediates_prefix"])}
        reading = next(e for e in encoders if not e.layers.is_default)  # same tower: same layout and pooling
        return [assemble(e.layers, reading.layout, tokens, lambda: out["image_features"],
                         lambda seq: pool_tokens(seq, reading.pool_type)) for e in encoders]

    def parameter_count(self) -> int | None:
        return sum(p.numel() for p in self.model.visual.parameters()) if self.model is not None else None


def tower_layout(open_clip: Any, architecture: str, name: str) -> tuple[LayerLayout, str, int]:
    """The blocks of an architecture's image tower, its pooling of tokens and its width, from its config (no
    model is built); a HarnessError for towers whose blocks cannot be read (ResNets, timm towers)."""
    vision = (open_clip.get_model_config(architecture) or {}).get("vision_cfg", {})
    if vision.get("timm_model_name") or not isinstance(vision.get("layers"), int):
        raise HarnessError(f"{name}: its image tower is not an open_clip vision transformer (config "
                           f"{ {k: vision.get(k) for k in ('layers', 'timm_model_name') if k in vision} }), so only "
                           f"layers 'last' applies; for a timm tower, use timm:<model> with --layers")
    pool_type = vision.get("pool_type", "tok")
    if pool_type not in ("tok", "avg"):
        raise HarnessError(f"{name}: its tower pools tokens as {pool_type!r}; layers other than 'last' know the "
                           f"class token ('tok') and the mean patch token ('avg')")
    return LayerLayout(name, vision["layers"], tokens=True, prefix_tokens=1, class_token=True), pool_type, \
        int(vision["width"])


def pool_tokens(tokens: Any, pool_type: str) -> Any:
    """One block's (B, L, C) tokens pooled as the tower pools its last one (before the projection)."""
    return tokens[:, 0] if pool_type == "tok" else tokens[:, 1:].mean(dim=1)


def open_clip_encoder(argument: str, layers: str = DEFAULT_LAYERS) -> OpenClipEncoder:
    architecture, sep, pretrained = argument.partition("@")
    if not sep or not pretrained:
        raise HarnessError(f"write open_clip:<architecture>@<pretrained tag or file>, e.g. "
                           f"open_clip:ViT-B-32@laion2b_s34b_b79k (got open_clip:{argument})")
    return OpenClipEncoder(architecture, pretrained, layers=layers)


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    register("open_clip", open_clip_encoder,
             "Image tower of an open_clip model: open_clip:<architecture>@<pretrained tag or weights file>",
             prefix=True)
