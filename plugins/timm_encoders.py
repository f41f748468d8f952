"""Encoders built from timm: `timm:<model>[@<weights file>]` and `random:<model>` (the untrained baseline).

Features are the pooled pre-logits vector (`forward_head(..., pre_logits=True)`) unless another pooling is asked
for; preprocessing comes from the model's own pretrained config, as timm's validation script does it. The `layers`
option (`harness.layers`) takes features from intermediate blocks or stages through timm's `forward_intermediates`.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse
from typing import Any, Callable

from harness import hookimpl
from harness.errors import HarnessError
from harness.layers import DEFAULT_LAYERS, single_choice
from harness.store import canonical_json
from harness.types import Encoder
from harness.files import sha256_file
from harness.plugins.checkpoints import load_into, read_weights_file
from harness.plugins.intermediate_layers import LayerLayout, assemble, describe, needed_levels

POOLINGS = ("default", "cls", "mean")


def split_weights_spec(argument: str) -> tuple[str, str | None]:
    """`resnet50@/path/w.pth` -> ("resnet50", "/path/w.pth"); `resnet50` -> ("resnet50", None)."""
    model, sep, weights = argument.partition("@")
    return model, (weights if sep else None)


def check_timm_model(model_name: str) -> None:
    import timm

    architecture = model_name.split(".", 1)[0]
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise HarnessError(f"timm has no model {architecture!r}.{hint} `python -c \"import timm; "
                           f"print(timm.list_models('*{architecture[:6]}*'))\"` lists similar names")


def state_dict_sha256(model: Any) -> str:
    """A hash of the weights themselves, for hub weights whose file we never see."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TimmEncoder(Encoder):
    """A timm model with hub weights, a local weights file, or a seeded random initialisation."""

    pretraining = "unknown"

    def __init__(self, model_name: str, *, weights: str | None = "hub", pooling: str = "default",
                 init_seed: int = 0, pretraining: str | None = None, layers: str = DEFAULT_LAYERS) -> None:
        if pooling not in POOLINGS:
            raise HarnessError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        check_timm_model(model_name)
        if weights not in (None, "hub") and not Path(weights).expanduser().is_file():  # before any work, not at hashing
            raise HarnessError(f"weights file {weights!r} of timm:{model_name} does not exist (or is not a file); "
                               f"pass the path of a .pth, .pt, .bin or .safetensors file")
        self.name = f"random:{model_name}" if weights is None else f"timm:{model_name}"  # the registry renames
        self.model_name = model_name
        self.weights = weights  # "hub", None (random init) or a file path
        self.pooling = pooling
        self.init_seed = init_seed
        if pretraining is not None:
            self.pretraining = pretraining
        elif weights is None:
            self.pretraining = "random"
        self.model: Any = None
        self.load_report: dict[str, Any] = {}
        self._weights_sha256: str | None = None
        self.layers = single_choice(layers, self.name)
        self.layout: LayerLayout | None = None
        self.levels: tuple[int, ...] = ()
        self.layers_dim: int | None = None
        if not self.layers.is_default:  # checked now, on the bare architecture: before any weights or data
            self._check_layers()

    # -- identity --------------------------------------------------------------------------------------------------

    def data_config(self) -> dict[str, Any]:
        """Input size, interpolation, crop and normalisation from the pretrained config, without building the model."""
        from timm.data import resolve_data_config
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.model_name, allow_unregistered=True)
        config = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

    def weights_fingerprint(self) -> dict[str, Any]:
        if self.weights is None:
            return {"source": "random-init", "init_seed": self.init_seed}
        if self.weights == "hub":
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(self.model_name, allow_unregistered=True)
            return {"source": "hub", "hf_hub_id": getattr(cfg, "hf_hub_id", None), "url": getattr(cfg, "url", None),
                    "tag": getattr(cfg, "tag", None)}
        if self._weights_sha256 is None:
            self._weights_sha256 = sha256_file(self.weights)
        return {"source": "file", "path": str(Path(self.weights).expanduser().resolve()),
                "sha256": self._weights_sha256}

    def fingerprint(self) -> dict[str, Any]:
        import timm

        fingerprint = {"kind": "timm", "model": self.model_name, "weights": self.weights_fingerprint(),
                       "pooling": self.pooling, "transform": self.data_config(), "timm": timm.__version__}
        if not self.layers.is_default:  # only then: the default's cache keys are those from before the option
            fingerprint["layers"] = self.layers.spelling
        return fingerprint

    def forward_group(self) -> str:
        """Encoders of one run with the same key run the same model on the same inputs: one forward pass serves
        them all (`harness.shared_forward`); only the layers and pooling read from it differ."""
        return canonical_json({k: v for k, v in self.fingerprint().items() if k not in ("layers", "pooling")})

    def info(self) -> dict[str, Any]:
        weights = self.weights_fingerprint()
        if self.weights == "hub" and self.model is not None:
            weights["state_dict_sha256"] = self._weights_sha256 or state_dict_sha256(self.model)
        info = {"architecture": self.model_name, "library": "timm", "weights": weights,
                "pretraining": self.pretraining, "pooling": self.pooling, "transform": self.data_config(),
                "load_report": self.load_report}
        if not self.layers.is_default:
            assert self.layout is not None
            info["layers"] = {"choice": self.layers.spelling, "indices": list(self.levels), "unit": self.layout.unit,
                              "parts": describe(self.layers, self.layout, self.pooling), "dim": self.layers_dim}
        return info

    # -- layers ----------------------------------------------------------------------------------------------------

    def _check_layers(self) -> None:
        """Check the layer choice against the architecture, built on the meta device (no memory, no weights), and
        compute the dimension of its features there."""
        import timm
        import torch

        if self.pooling != "default" and self.layers.kind == "dinov2":
            raise HarnessError(f"timm:{self.model_name}: layers 'dinov2' fixes its own pooling (class tokens and the "
                               f"mean patch token); leave pooling at 'default' (got {self.pooling!r})")
        def sized(device: str) -> int:
            with torch.device(device), torch.inference_mode():
                model = timm.create_model(self.model_name, pretrained=False, num_classes=0).eval()
                self.layout = layer_layout(model, self.name)
                self.levels = needed_levels(self.layers, self.layout)
                if self.pooling == "cls" and not self.layout.class_token:
                    raise HarnessError(f"pooling 'cls' needs a model with a class token; {self.model_name} has none "
                                       f"(use pooling 'default' or 'mean')")
                batch = torch.zeros(1, *self.data_config()["input_size"])
                return int(self.encode_together(batch, [self], model)[0].shape[1])

        try:
            self.layers_dim = sized("meta")
        except (RuntimeError, NotImplementedError):
            # Some architectures cannot be built or run on the meta device (an op without a meta kernel): they are
            # checked on a random-init CPU copy instead, once per encoder, and before any weights are loaded.
            self.layers_dim = sized("cpu")

    def _pooled(self, model: Any, features: Any) -> Any:
        """Features of the model's final output (B, L, C) or (B, C, H, W), or of one normed block's tokens, pooled
        as the pooling option says."""
        if self.pooling == "default":
            return model.forward_head(features, pre_logits=True)
        if self.pooling == "cls":
            return features[:, 0]
        if features.ndim == 4:  # convolutional (B, C, H, W)
            return features.mean(dim=(2, 3))
        return features[:, getattr(model, "num_prefix_tokens", 0):].mean(dim=1)

    def encode_together(self, batch: Any, encoders: list[TimmEncoder], model: Any = None) -> list[Any]:
        """The features of each of `encoders` (this one's siblings, same `forward_group`) from ONE forward pass of
        this encoder's model, run for the union of the levels they read."""
        model = self.model if model is None else model
        levels = sorted({level for encoder in encoders for level in encoder.levels})
        need_final = any(encoder.layers.is_default for encoder in encoders)
        if not levels:
            features = model.forward_features(batch)
            return [encoder._pooled(model, features) for encoder in encoders]
        layout = layer_layout(model, self.name)
        final, outputs = intermediates(model, layout, batch, levels, need_final)
        return [assemble(encoder.layers, layout, outputs, lambda e=encoder: e._pooled(model, final),
                         lambda tokens, e=encoder: e._pooled(model, tokens)) for encoder in encoders]

    # -- model -----------------------------------------------------------------------------------------------------

    def build(self) -> Any:
        """Create the architecture (and hub weights, when asked for) without the classifier head."""
        import timm
        import torch

        if self.weights is None:
            torch.manual_seed(self.init_seed)  # the untrained baseline is reproducible
        if self.weights == "hub" and (unreachable := hub_unreachable(self.model_name)):
            # Fail at once: the hub client would retry five times (about a minute) before saying the same.
            raise HarnessError(
                f"cannot fetch the pretrained weights of timm model {self.model_name!r}: {unreachable}, and they are "
                f"not in the local cache. Offline, download them elsewhere and pass the file: "
                f"timm:{self.model_name}@/path/to/weights.pth (or .safetensors)")
        try:
            return timm.create_model(self.model_name, pretrained=self.weights == "hub", num_classes=0)
        except Exception as error:  # noqa: BLE001 - hub failures come in many types
            if self.weights == "hub":
                raise HarnessError(
                    f"cannot fetch the pretrained weights of timm model {self.model_name!r} ({error}). Offline, "
                    f"download them elsewhere and pass the file: timm:{self.model_name}@/path/to/weights.pth "
                    f"(or .safetensors)") from error
            raise

    def load_weights(self, model: Any) -> None:
        """Load a local weights file into `model` (the head may be absent; the backbone may not)."""
        state = read_weights_file(self.weights)
        classifier = model.pretrained_cfg.get("classifier") or "head"
        heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        state = {k: v for k, v in state.items() if not k.startswith(heads)}  # num_classes=0 drops the head
        self.load_report = load_into(model, state, source=f"weights file {self.weights!r}")

    def load(self, device: str) -> None:
        model = self.build()
        if self.weights not in (None, "hub"):
            self.load_weights(model)
        if self.pooling == "cls" and not getattr(model, "num_prefix_tokens", 0):
            raise HarnessError(f"pooling 'cls' needs a model with a class token; {self.model_name} has none "
                               f"(use pooling 'default' or 'mean')")
        self.model = model.eval().to(device)
        self.channels_last = not hasattr(model, "patch_embed")

    @property
    def transform(self) -> Callable[[Any], Any]:
        from timm.data import create_transform

        config = self.data_config()
        config["input_size"] = tuple(config["input_size"])
        return create_transform(**config, is_training=False)

    def encode(self, batch: Any) -> Any:
        if self.layers.is_default:
            return self._pooled(self.model, self.model.forward_features(batch))
        return self.encode_together(batch, [self])[0]

    def parameter_count(self) -> int | None:
        return sum(p.numel() for p in self.model.parameters()) if self.model is not None else None


def layer_layout(model: Any, name: str) -> LayerLayout:
    """What `model.forward_intermediates` returns: transformer blocks as tokens (it can return the prefix tokens
    with them) or feature maps (CNN stages; timm's feature_info lists them)."""
    import inspect

    if not hasattr(model, "forward_intermediates"):
        raise HarnessError(f"{name}: timm gives this architecture no forward_intermediates, so only layers 'last' "
                           f"applies to it")
    tokens = "return_prefix_tokens" in inspect.signature(model.forward_intermediates).parameters
    prefix = int(getattr(model, "num_prefix_tokens", 0)) if tokens else 0
    return LayerLayout(name, len(model.feature_info), tokens, prefix,
                       class_token=tokens and getattr(model, "cls_token", None) is not None)


def intermediates(model: Any, layout: LayerLayout, batch: Any, levels: list[int],
                  need_final: bool) -> tuple[Any, dict[int, Any]]:
    """One forward pass: the final features (when `need_final`; else None, and the pass stops at the last level
    asked for) and {level: output}, tokens in (B, L, C) with the prefix tokens first and the final norm applied to
    every block (as DINOv2's get_intermediate_layers does), maps in (B, C, H, W)."""
    import torch

    only = not need_final
    if layout.tokens:
        out = model.forward_intermediates(batch, indices=levels, return_prefix_tokens=True, norm=True,
                                          output_fmt="NLC", intermediates_only=only, stop_early=only)
    else:
        out = model.forward_intermediates(batch, indices=levels, intermediates_only=only, stop_early=only)
    final, found = (None, out) if only else out
    if layout.tokens and layout.prefix_tokens:
        found = [torch.cat([prefix, spatial], dim=1) for spatial, prefix in found]
    return final, dict(zip(levels, found))


def timm_encoder(argument: str, pooling: str = "default", layers: str = DEFAULT_LAYERS) -> TimmEncoder:
    model_name, weights = split_weights_spec(argument)
    return TimmEncoder(model_name, weights=weights or "hub", pooling=pooling, layers=layers)


def random_encoder(argument: str, pooling: str = "default", init_seed: int = 0,
                   layers: str = DEFAULT_LAYERS) -> TimmEncoder:
    return TimmEncoder(argument, weights=None, pooling=pooling, init_seed=init_seed, layers=layers)


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    register("timm", timm_encoder, "Any timm model: timm:<model> (hub weights) or timm:<model>@<weights file>",
             prefix=True)
    register("random", random_encoder, "Untrained timm network, seeded: random:<model> (the no-pretraining baseline)",
             prefix=True)


#: Files timm looks for in a Hugging Face repository of weights.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def hub_unreachable(model_name: str, timeout_s: float = 5.0) -> str | None:
    """Why the weights of `model_name` cannot come from their hub now (its host does not answer and no copy is in
    the local cache), or None when they can or the hub client decides itself (HF_HUB_OFFLINE set: it fails at once,
    from its cache)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name, allow_unregistered=True)
    if cfg is None:
        return None
    if getattr(cfg, "hf_hub_id", None):
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        if any(isinstance(try_to_load_from_cache(repo, name), str) for name in HUB_WEIGHT_FILES):
            return None
        url = constants.ENDPOINT
    elif getattr(cfg, "url", None):
        import torch.hub

        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file():
            return None
        url = cfg.url
    else:
        return None
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        return f"{host}:{port} cannot be reached ({error})"
    return None

