"""Loading weight files people actually have: bare state dicts, training checkpoints, DDP and SSL wrappers.

Files are read with `torch.load(weights_only=True)` or safetensors, so a crafted pickle cannot run code. A
checkpoint that leaves backbone weights missing is an error: a silently random layer gives plausible-looking,
wrong numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.errors import HarnessError

log = logging.getLogger(__name__)

#: Keys under which training scripts nest the weights (DINO keeps `teacher` and `student`; the teacher is the
#: one evaluated).
NESTING_KEYS = ("state_dict", "model", "teacher", "model_ema", "module")
#: Prefixes that wrappers add to every key (DDP's `module.`, SSL frameworks' `backbone.`/`encoder.`).
WRAPPER_PREFIXES = ("module.", "backbone.", "encoder.", "model.")


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """Read a `.safetensors` or torch file into a flat {name: tensor} dict, unwrapping the usual nestings."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HarnessError(f"weights file {str(path)!r} does not exist; pass the path of a .pth, .pt, .bin or "
                           f".safetensors file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - any parse failure is the file's fault
            raise HarnessError(f"cannot read safetensors file {str(path)!r}: {error}") from error
        return unwrap_state_dict(state, source=str(path))  # flat, but DDP/SSL prefixes as in a .pth
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):  # not a blocked object: the bytes are no pickle torch can read at all
            raise HarnessError(f"cannot read weights file {str(path)!r}: it is not a PyTorch checkpoint (damaged, "
                               f"truncated, or another format); pass a file written by torch.save or a "
                               f".safetensors file") from error
        raise HarnessError(
            f"refusing to load {str(path)!r}: it contains Python objects other than tensors, which could run "
            f"code when unpickled ({str(error).splitlines()[0]}). Re-save it as a plain state dict "
            f"(torch.save(model.state_dict(), ...)) or as .safetensors") from error
    except Exception as error:  # noqa: BLE001
        raise HarnessError(f"cannot read weights file {str(path)!r}: {type(error).__name__}: {error}") from error
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Any]:
    """Find the state dict inside a checkpoint and strip wrapper prefixes from its keys."""
    import torch

    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in NESTING_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            raise HarnessError(f"{source} holds no state dict: its top-level keys are {sorted(obj)[:10]}; expected "
                               f"tensors, or a dict under one of {', '.join(NESTING_KEYS)}")
    if not isinstance(obj, Mapping):
        raise HarnessError(f"{source} holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed:  # `module.backbone.` and similar stacks
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _is_state_dict(obj: Mapping) -> bool:
    import torch

    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= len(values) / 2


def load_into(model: Any, state: Mapping[str, Any], *, source: str,
              ignorable: Iterable[str] = ()) -> dict[str, list[str]]:
    """Load `state` into `model`; report unexpected keys, refuse missing backbone keys or mismatched shapes.

    `ignorable` lists key prefixes that may be absent (a classifier head the harness never uses).
    Returns {"missing": [...], "unexpected": [...]} for the record.
    """
    own = model.state_dict()
    ignorable = tuple(ignorable)
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise HarnessError(f"{source} does not fit {type(model).__name__}: {len(mismatched)} tensor(s) have other "
                           f"shapes, e.g. {'; '.join(mismatched[:3])}. Check the architecture name")
    missing = [k for k in own if k not in state and not k.startswith(ignorable)
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise HarnessError(
            f"{source} leaves {len(missing)} of {len(own)} backbone tensors missing (e.g. {', '.join(missing[:5])}); "
            f"they would stay randomly initialised. Unexpected keys in the file: {', '.join(unexpected[:5]) or 'none'}."
            f" Check the architecture name, or strip the checkpoint's own key prefix")
    if unexpected:
        log.warning("%s: ignoring %d key(s) the model does not have: %s", source, len(unexpected),
                    ", ".join(unexpected[:10]))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return {"missing": [], "unexpected": unexpected}
