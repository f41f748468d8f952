"""Device policy for extraction: which device a run uses, how many DataLoader workers feed it, and the precision
the forward pass runs in (part of the cache key, as bf16 autocast changes the vectors slightly)."""

from __future__ import annotations

import os

from harness.errors import HarnessError


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device {device!r} asked for, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith(("cuda", "mps")):
        raise HarnessError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


def default_workers(device: str) -> int:
    """0 on a small CPU-only machine (the model needs every core; worker processes only add copies), else
    enough workers to keep the accelerator fed."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device == "cpu":
        return 0 if cpus <= 2 else min(4, cpus // 4)
    return min(8, max(cpus - 1, 0))


def precision_for(device: str) -> str:
    return "bf16-autocast" if device.startswith("cuda") else "fp32"
