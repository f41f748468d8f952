"""GPU check: the harness's extraction and evaluators at scale on one GPU, against the bare operation, as one table.

    python benchmarks/gpu_check.py                  # on a CUDA machine, from a checkout of the repository
    python benchmarks/gpu_check.py --wheels DIR     # harness from the project's wheels in DIR (pip, no index)
    python benchmarks/gpu_check.py --smoke          # tiny sizes on the CPU: checks the script itself (~20 s)
    python benchmarks/gpu_check.py --only knn --json out.json

Measured (full sizes; about 3 minutes on one H100 is the aim, 5 the limit):

* extraction, for `vit_small_patch16_224` and `resnet50` (random init, 224 px, batch 256, bf16 autocast,
  channels_last for the CNN): images/s of the harness's `extract()` over pre-decoded tensors (0 workers: the
  tensors are in memory) and over the cifar10-mini JPEG files shipped in the repository (the harness's default
  workers), against the same model's bare forward pass on a batch already on the GPU;
* kNN `knn/dino-v1` at 1,000,000 x 768 train (a float32 memory map, as the embedding store hands out) with 50,000
  queries, against a bare `torch.mm` of the same shapes with both matrices already on the GPU (the floor);
* the linear probe `linear/logreg-v1` (whole protocol: C search + refit) at 200,000 x 768 with 1,000 classes.

Only torch, timm, numpy and the harness's own modules are imported: no umap, hdbscan or open_clip (a typical GPU
image has none of them). Each row is printed as soon as it is measured, so a run cut short still reports the rows
it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("extract", "knn", "linear")


@dataclass
class Sizes:
    models: tuple[str, ...]
    batch: int
    predecoded_images: int
    file_images: int
    bare_batches: int
    knn_train: int
    knn_queries: int
    linear_train: int
    linear_test: int
    linear_classes: int
    dim: int = 768
    warmup: int = 3


FULL = Sizes(models=("vit_small_patch16_224", "resnet50"), batch=256, predecoded_images=4096, file_images=1000,
             bare_batches=20, knn_train=1_000_000, knn_queries=50_000, linear_train=200_000, linear_test=10_000,
             linear_classes=1000)
SMOKE = Sizes(models=("test_vit", "test_efficientnet"), batch=2, predecoded_images=4, file_images=4, bare_batches=1,
              knn_train=2000, knn_queries=200, linear_train=300, linear_test=100, linear_classes=3, dim=32, warmup=1)


@dataclass
class Row:
    measurement: str
    harness: str
    reference: str
    ratio: float | None
    note: str


def harness_from(wheels: str | None) -> str:
    """Make `harness` importable: from wheels in a folder (installed into a temporary target), else the checkout."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # predecoded.py, beside this script
    if wheels:
        target = Path(tempfile.mkdtemp(prefix="harness-wheels-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--find-links", wheels, "--target", str(target), "encoder-harness"], check=True)
        sys.path.insert(0, str(target))
        return f"wheels from {wheels}"
    from harness_import import ensure_harness

    return ensure_harness()  # an installed harness, else the checkout laid out as installed


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


# -- extraction ---------------------------------------------------------------------------------------------------


def bare_forward_rate(encoder: Any, batch: Any, batches: int, warmup: int, device: str) -> float:
    """Images/s of the encoder's own forward pass on a batch already on the device, under the harness's autocast
    and memory format: the most the extraction loop could reach."""
    import torch
    from contextlib import nullcontext

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    x = batch.to(device)
    if encoder.channels_last and device.startswith("cuda"):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast:
        for _ in range(warmup):  # cuDNN autotuning, lazy allocations
            encoder.encode(x)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            encoder.encode(x)
        synchronize(device)
    return batches * len(x) / (time.perf_counter() - start)


def bench_extract(sizes: Sizes, device: str, work: Path) -> list[Row]:
    import torch

    from harness.extract import ExtractionOptions, default_workers, extract
    from harness.store import EmbeddingStore
    from harness.plugins.cifar10_mini import cifar10_mini
    from harness.plugins.timm_encoders import TimmEncoder
    from predecoded import PreDecoded, PreDecodedTimmEncoder

    files = cifar10_mini()
    files.name = "cifar10-mini"  # the registry names datasets; built directly here
    rows = []
    for model in sizes.models:
        transform = TimmEncoder(model, weights=None).transform
        split = files.split("train")
        # Distinct real images, transformed once on the host; the dataset repeats them up to `predecoded_images`.
        tensors = torch.stack([transform(split[i][0]) for i in range(min(sizes.batch, len(split)))])

        def timed(encoder: Any, dataset: Any, workers: int, name: str) -> tuple[float, int]:
            options = ExtractionOptions(device=device, batch_size=sizes.batch, workers=workers, progress=False)
            # Warm-up, untimed: loads the model, autotunes cuDNN, starts the allocator.
            extract(encoder, dataset, "train", EmbeddingStore(work / f"warm-{name}"), options)
            synchronize(device)
            start = time.perf_counter()
            _, report = extract(encoder, dataset, "train", EmbeddingStore(work / f"timed-{name}"), options)
            synchronize(device)
            return report.items_encoded / (time.perf_counter() - start), report.items_encoded

        encoder = PreDecodedTimmEncoder(model)
        rate, n = timed(encoder, PreDecoded(tensors, sizes.predecoded_images), 0, f"{model}-tensors")
        # The reference: the same loaded network, its forward pass alone on a batch already on the device.
        bare = bare_forward_rate(encoder, tensors[:1].expand(sizes.batch, *tensors.shape[1:]).contiguous(),
                                 sizes.bare_batches, sizes.warmup, device)
        rows.append(Row(f"extraction {model}, pre-decoded tensors (img/s)", f"{rate:,.0f}", f"{bare:,.0f}",
                        rate / bare, f"{n} images, batch {sizes.batch}, 0 workers; reference = bare forward pass"))
        report_row(rows[-1])
        del encoder
        workers = default_workers(device)
        rate, n = timed(TimmEncoder(model, weights=None), SubsetDataset(files, sizes.file_images), workers,
                        f"{model}-files")
        rows.append(Row(f"extraction {model}, JPEG files decoded in workers (img/s)", f"{rate:,.0f}", f"{bare:,.0f}",
                        rate / bare, f"{n} cifar10-mini JPEGs at {tuple(tensors.shape[-2:])}, {workers} workers; same reference"))
        report_row(rows[-1])
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


class SubsetDataset:
    """The first `n` items of a dataset's train split (the smoke run needs only a few)."""

    def __init__(self, dataset: Any, n: int) -> None:
        self.dataset, self.n = dataset, n
        self.name = f"{dataset.name}[:{n}]"

    def info(self) -> dict[str, Any]:
        return self.dataset.info()

    def split(self, name: str) -> Any:
        from harness.types import DatasetSplit

        inner = self.dataset.split(name)
        n = min(self.n, len(inner))

        class Head(DatasetSplit):
            def __len__(self) -> int:
                return n

            def __getitem__(self, index: int) -> Any:
                if not 0 <= index < n:
                    raise IndexError(index)
                return inner[index]

            def item_id(self, index: int) -> str:
                return inner.item_id(index)

            def fingerprint(self) -> str:
                # The items' own ids: hashing the whole shipped split (as cifar10-mini does) is not the point here.
                return "\n".join(inner.item_id(i) for i in range(n))

        return Head()


# -- kNN ----------------------------------------------------------------------------------------------------------


def class_centres(classes: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Centres N(0, 0.15^2) per dimension at 768-d (as benchmarks/bench_linear.py), the spread scaled by
    sqrt(768 / dim) so that classes are as separable at the smoke run's small dim."""
    return rng.normal(0, 0.15 * (768 / dim) ** 0.5, (classes, dim)).astype(np.float32)


def gaussian_rows(labels: np.ndarray, dim: int, rng: np.random.Generator, centres: np.ndarray):
    """Class centres plus unit noise for `labels`, in blocks of rows."""
    for start in range(0, len(labels), 65536):
        block = labels[start:start + 65536]
        yield centres[block] + rng.standard_normal((len(block), dim), dtype=np.float32)


def gaussian_classes(n: int, dim: int, classes: int, rng: np.random.Generator,
                     centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, classes, n)
    return np.concatenate(list(gaussian_rows(labels, dim, rng, centres))), labels


def bench_knn(sizes: Sizes, device: str, work: Path) -> list[Row]:
    import torch

    from harness.types import Embeddings, ExecutionSettings
    from harness.plugins.knn import KNN
    from harness.store import _write_rows

    rng = np.random.default_rng(0)
    centres = class_centres(100, sizes.dim, rng)
    # Written with the store's own writer (blocks reserved, plain writes), not into a writable memory map, on
    # which a full disk is a SIGBUS that kills the run instead of an error naming the file.
    labels = rng.integers(0, 100, sizes.knn_train)
    _write_rows(work / "knn-train.npy", (sizes.knn_train, sizes.dim),
                gaussian_rows(labels, sizes.dim, rng, centres), np.dtype(np.float32))
    features = np.load(work / "knn-train.npy", mmap_mode="r")
    queries, query_labels = gaussian_classes(sizes.knn_queries, sizes.dim, 100, rng, centres)
    train = Embeddings(features, labels, np.arange(sizes.knn_train).astype(str), {})
    test = Embeddings(queries, query_labels, np.arange(sizes.knn_queries).astype(str), {})
    evaluator = KNN()
    # Warm-up, untimed, on a slice: CUDA context, kernels, allocator.
    evaluator.evaluate(Embeddings(features[:1000], labels[:1000], train.ids[:1000], {}),
                       Embeddings(queries[:100], query_labels[:100], test.ids[:100], {}), seed=0,
                       settings=ExecutionSettings(device=device))
    synchronize(device)
    start = time.perf_counter()
    result = evaluator.evaluate(train, test, seed=0, settings=ExecutionSettings(device=device))
    synchronize(device)
    ours = time.perf_counter() - start

    # The floor: the same product with both sides already normalised and on the device, in 4,096-query chunks
    # (one 50,000 x 1,000,000 float32 result would be 200 GB), each chunk's result discarded.
    xn = torch.nn.functional.normalize(torch.from_numpy(np.array(features)).to(device), dim=1)
    qn = torch.nn.functional.normalize(torch.from_numpy(queries).to(device), dim=1)
    torch.mm(qn[:64], xn.T)
    synchronize(device)
    start = time.perf_counter()
    for chunk in qn.split(4096):
        torch.mm(chunk, xn.T)
    synchronize(device)
    floor = time.perf_counter() - start
    del xn, qn
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    row = Row(f"kNN {sizes.knn_train:,} x {sizes.dim}, {sizes.knn_queries:,} queries (s)", f"{ours:.3g}",
              f"{floor:.3g}", ours / floor, f"reference = bare fp32 torch.mm, both matrices on the device; "
                                            f"top-1 (k=20) {result.main_score:.4f}; train from a memory map")
    report_row(row)
    return [row]


# -- linear probe -------------------------------------------------------------------------------------------------


def bench_linear(sizes: Sizes, device: str) -> list[Row]:
    from harness.types import Embeddings, ExecutionSettings
    from harness.plugins.linear_probe import LinearProbe

    rng = np.random.default_rng(1)
    centres = class_centres(sizes.linear_classes, sizes.dim, rng)
    x, y = gaussian_classes(sizes.linear_train, sizes.dim, sizes.linear_classes, rng, centres)
    xt, yt = gaussian_classes(sizes.linear_test, sizes.dim, sizes.linear_classes, rng, centres)
    train = Embeddings(x, y, np.arange(len(y)).astype(str), {})
    test = Embeddings(xt, yt, np.arange(len(yt)).astype(str), {})
    synchronize(device)
    start = time.perf_counter()
    result = LinearProbe().evaluate(train, test, seed=0, settings=ExecutionSettings(device=device))
    synchronize(device)
    seconds = time.perf_counter() - start
    m = result.metrics
    row = Row(f"linear probe {sizes.linear_train:,} x {sizes.dim}, {sizes.linear_classes:,} classes (s)",
              f"{seconds:.1f}", "-", None,
              f"whole protocol: {m.get('Cs_fitted')} of 45 C fitted, chosen C {m.get('chosen_C'):.4g}, "
              f"test top-1 {result.main_score:.4f}, refit {m.get('iterations')} iterations")
    report_row(row)
    return [row]


# -- output -------------------------------------------------------------------------------------------------------


def report_row(row: Row) -> None:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    print(f"  measured: {row.measurement}: harness {row.harness}, reference {row.reference}, ratio {ratio}",
          flush=True)


def print_table(rows: list[Row]) -> None:
    table = [("measurement", "harness", "reference", "ratio")] + [
        (r.measurement, r.harness, r.reference, "-" if r.ratio is None else f"{r.ratio:.2f}") for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))
    print()
    for r in rows:
        print(f"- {r.measurement}: {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and tiny models (runs on a CPU)")
    parser.add_argument("--device", help="default: cuda, or cpu with --smoke")
    parser.add_argument("--wheels", help="install encoder-harness from the wheels in this folder (no index)")
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    if set(sections) - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(set(sections) - set(SECTIONS))}; choose from {SECTIONS}")
    source = harness_from(args.wheels)

    import timm
    import torch

    import harness
    from harness.extract import resolve_device

    device = resolve_device(args.device or ("cpu" if args.smoke else "cuda"))
    sizes = SMOKE if args.smoke else FULL
    started = time.perf_counter()
    print(f"gpu_check{' --smoke' if args.smoke else ''}: device {device_name(device)}; torch {torch.__version__}, "
          f"timm {timm.__version__}, Python {platform.python_version()}; harness {harness.__version__} from {source} "
          f"({Path(harness.__file__).parent})", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        for section in sections:
            print(f"[{section}] ({time.perf_counter() - started:.0f} s so far)", flush=True)
            if section == "extract":
                rows += bench_extract(sizes, device, Path(work))
            elif section == "knn":
                rows += bench_knn(sizes, device, Path(work))
            elif section == "linear":
                rows += bench_linear(sizes, device)
    print()
    print(f"device: {device_name(device)}")
    print_table(rows)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(device), "torch": torch.__version__,
                                               "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
