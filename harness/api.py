"""The Python API: evaluate a model you are still training, in memory, on named datasets.

    import harness
    records = harness.evaluate_model(model, transform, name="my-vit-epoch10", datasets=["cifar10-mini"])

The module's forward output is the embedding (B, D). Its weights are hashed into the cache key, so the next
checkpoint of the same model is a new cache entry, and the same weights are never extracted twice.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.defaults import DEFAULT_CACHE_DIR, DEFAULT_DATASETS, DEFAULT_EVALUATORS, DEFAULT_RESULTS_DIR
from harness.runner import RunConfig, run
from harness.types import Encoder


class ModuleEncoder(Encoder):
    """Wraps an in-memory `torch.nn.Module` and its transform as an encoder."""

    def __init__(self, module: Any, transform: Callable[[Any], Any], name: str, pretraining: str = "unknown",
                 transform_id: str | None = None) -> None:
        self.module = module
        self._transform = transform
        self.name = name
        self.pretraining = pretraining
        # repr() of a torchvision Compose lists every step and parameter; a lambda's repr does not, so a caller
        # with a custom callable can name it explicitly. A memory address in a repr ("<function f at 0x7f..>")
        # changes with every process: without it, the same transform keeps its cache key and its row.
        self.transform_id = transform_id or re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))
        self._sha256: str | None = None

    def weights_sha256(self) -> str:
        if self._sha256 is None:
            import torch

            digest = hashlib.sha256()
            for key, tensor in sorted(self.module.state_dict().items()):
                digest.update(f"{key}\t{tensor.dtype}\t{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._sha256 = digest.hexdigest()
        return self._sha256

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "in-memory module", "class": type(self.module).__qualname__,
                "weights_sha256": self.weights_sha256(), "transform": self.transform_id}

    def info(self) -> dict[str, Any]:
        return {"architecture": type(self.module).__qualname__, "weights": {"source": "in-memory",
                "sha256": self.weights_sha256()}, "pretraining": self.pretraining, "pooling": "module output",
                "transform": self.transform_id}

    def load(self, device: str) -> None:
        self.module.eval().to(device)

    @property
    def transform(self) -> Callable[[Any], Any]:
        return self._transform

    def encode(self, batch: Any) -> Any:
        return self.module(batch)

    def parameter_count(self) -> int | None:
        return sum(p.numel() for p in self.module.parameters())


def dataset_path(name: str, **options: Any) -> Path:
    """The folder on disk that holds dataset `name` (e.g. the shipped `cifar10-mini`), for tools outside the harness.

    Datasets that keep their files in one folder say so with a `root` attribute (see `harness.types.Dataset`);
    nothing is scanned or downloaded to answer. A dataset without one is an error naming it.
    """
    from harness.errors import HarnessError
    from harness.plugin_manager import get_plugins

    dataset = get_plugins().dataset(name, **options)
    root = getattr(dataset, "root", None)
    if root is None:
        raise HarnessError(f"dataset {name!r} has no single folder on disk (it does not set `root`); its `info()` "
                           f"says where its data comes from")
    return Path(root).resolve()


def evaluate_model(module: Any, transform: Callable[[Any], Any], *, name: str,
                   datasets: Sequence[str] = DEFAULT_DATASETS, evaluators: Sequence[str] = DEFAULT_EVALUATORS,
                   results_dir: str = DEFAULT_RESULTS_DIR, cache_dir: str = DEFAULT_CACHE_DIR, device: str = "auto",
                   batch_size: int = 64, seed: int = 0, pretraining: str = "unknown",
                   transform_id: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Evaluate `module` (raw item -> `transform` -> module -> (B, D)) and return the result records written."""
    encoder = ModuleEncoder(module, transform, name, pretraining=pretraining, transform_id=transform_id)
    config = RunConfig(encoders=[encoder], datasets=list(datasets), evaluators=list(evaluators),
                       results_dir=results_dir, cache_dir=cache_dir, device=device, batch_size=batch_size, seed=seed,
                       command=f"harness.evaluate_model(<{type(module).__qualname__}>, name={name!r})", **options)
    from harness.distributed import process_group

    # Under torchrun the ranks share the extraction; a process group the training script already joined is kept.
    with process_group() as ranks:
        report = run(config, ranks=ranks)
    if report.failures:
        from harness.errors import HarnessError

        raise HarnessError("; ".join(str(f) for f in report.failures))
    return report.records
