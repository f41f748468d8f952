"""The benchmark command: every ratio of the scale issue, measured side by side in one run, as one table.

    python benchmarks/run.py            # full sizes (339 s on a quiet 2-core CPU, 2026-11-28)
    python benchmarks/run.py --quick    # small sizes, to check the command itself (a few minutes)
    python benchmarks/run.py --only knn,memory

Each timed comparison interleaves its two sides (the order alternates between repeats, so a drift in the
machine's load hits both) and reports medians of `--repeats` (at least 3). Before anything is timed, each pair is
checked to compute the same thing (same features, same neighbours, same items). The table has one row per ratio:
measurement, harness, reference, ratio, goal, met?. What each row means is in benchmarks/README.md.

Sections (`--only` takes their names):

* extract: the harness's `extract()` against the loop a user writes (timm.create_model + resolve_data_config /
  create_transform + DataLoader + torch.no_grad forward), same random-init model, batch size, device and worker
  count, over (a) the same pre-decoded tensors and (b) the same image files (cifar10-mini JPEGs);
* knn: `knn/dino-v1` (top-200 + vote for k = 10, 20, 100, 200) against scikit-learn's
  `KNeighborsClassifier(n_neighbors=200, metric="cosine", algorithm="brute")` fit + predict, and against a bare
  `torch.mm` of the same shapes (the floor);
* retrieval: `retrieval/map-at-r-v1` (top-k of the largest class + AP@R) against scikit-learn's
  `NearestNeighbors(metric="cosine", algorithm="brute")` kneighbors + the AP@R a user writes in numpy, and
  against the same bare `torch.mm`;
* linear: the linear probe against scikit-learn `LogisticRegression` (benchmarks/bench_linear.py's pieces);
* passes: a knn + linear + clustering run through the runner with a counting encoder: items encoded against
  dataset items, for one evaluator and for three;
* read: reading and decoding the same cifar10-mini JPEGs (no model) through `wds:` tar shards and an `hfds:`
  save_to_disk folder, against `imagefolder:` over the same files unpacked (what a user would otherwise do);
* memory: peak anonymous memory (RssAnon, sampled from /proc; memory-mapped file pages are not anonymous) of a
  subprocess running kNN, then the linear probe, on a float32 memory map of N x 768, at N and at N / 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.append(str(REPO / "tests"))  # the tests' support package: the counting pixel encoder, dataset forms
from harness_import import ensure_harness  # noqa: E402

HARNESS_FROM = ensure_harness()  # the installed harness, else the checkout laid out as installed

from bench_linear import make_data, naive_protocol, our_protocol, single_fit  # noqa: E402
from harness.types import Embeddings, ExecutionSettings  # noqa: E402
from harness.store import _write_rows  # noqa: E402
from predecoded import PreDecoded, PreDecodedTimmEncoder  # noqa: E402

SECTIONS = ("extract", "knn", "retrieval", "linear", "passes", "read", "memory")


@dataclass
class Sizes:
    extract_images: int
    extract_model: str
    batch_size: int
    knn_train: int
    knn_queries: int
    knn_check_queries: int
    linear: tuple[int, int, int, int]  # train, test, dim, classes
    memory_n: int
    memory_queries: int
    read_images: int


FULL = Sizes(extract_images=256, extract_model="resnet18", batch_size=64, knn_train=50_000, knn_queries=10_000,
             knn_check_queries=500, linear=(4000, 1000, 512, 50), memory_n=200_000, memory_queries=1000,
             read_images=1000)
QUICK = Sizes(extract_images=64, extract_model="test_vit", batch_size=32, knn_train=10_000, knn_queries=2_000,
              knn_check_queries=200, linear=(600, 200, 64, 5), memory_n=40_000, memory_queries=200,
              read_images=200)

#: Evaluator options of the memory children. The linear probe runs a short C grid and few iterations: its peak
#: memory does not depend on how many iterations it makes, and the full sweep at 200,000 x 768 would take long.
#: Block-size options of the evaluators belong here, so that the table names them; the memory budget is an
#: execution setting (`ExecutionSettings.memory_budget_mb`), the same for both.
MEMORY_OPTIONS: dict[str, dict[str, Any]] = {"knn": {}, "linear": {"num_c": 2, "max_iter": 5}}
MEMORY_BUDGET_MB = 256
MEMORY_DIM = 768
MEMORY_CLASSES = 10


@dataclass
class Row:
    measurement: str
    harness: str
    reference: str
    ratio: float | None
    goal: str
    met: bool | None
    note: str = ""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def interleaved(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each side per repeat, the sides run one after the other, their order reversed every repeat."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in (names if repeat % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
        log("    repeat %d: %s" % (repeat + 1, ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names)))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- extraction ---------------------------------------------------------------------------------------------------


def image_folder_copy(root: Path, n: int) -> Path:
    """`n` cifar10-mini JPEGs (classes in turn) copied to `root/train/<class>/` (and `test/`, which the layout
    requires), so both sides read the same files."""
    from harness.plugins.cifar10_mini import ROOT

    classes = sorted(p.name for p in (ROOT / "train").iterdir() if p.is_dir())
    files = {c: sorted((ROOT / "train" / c).iterdir()) for c in classes}
    for i in range(n):
        source = files[classes[i % len(classes)]][i // len(classes)]
        for split in ("train", "test"):
            target = root / split / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return root


def bench_extract(sizes: Sizes, repeats: int, workers: int) -> list[Row]:
    import timm
    import torch
    import torchvision
    from timm.data import create_transform, resolve_data_config
    from torch.utils.data import DataLoader

    from harness.extract import ExtractionOptions, extract
    from harness.store import EmbeddingStore
    from harness.plugins.imagefolder import ImageFolder
    from harness.plugins.timm_encoders import TimmEncoder

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        folder = image_folder_copy(work / "images", sizes.extract_images)
        batch = sizes.batch_size
        options = ExtractionOptions(device="cpu", batch_size=batch, workers=workers, progress=False)

        # The plain side: what a user writes. Same architecture, same random init (seed 0, as the harness's).
        torch.manual_seed(0)
        model = timm.create_model(sizes.extract_model, pretrained=False, num_classes=0).eval()
        transform = create_transform(**resolve_data_config({}, model=model))
        files = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform)
        tensors = torch.stack([transform(files.loader(path)) for path, _ in files.samples])  # decoded once
        labels = [label for _, label in files.samples]

        def plain_tensors() -> np.ndarray:
            with torch.no_grad():
                return torch.cat([model(tensors[i:i + batch]) for i in range(0, len(tensors), batch)]).numpy()

        def plain_files() -> np.ndarray:
            loader = DataLoader(files, batch_size=batch, num_workers=workers)
            with torch.no_grad():
                return torch.cat([model(x) for x, _ in loader]).numpy()

        encoder_tensors = PreDecodedTimmEncoder(sizes.extract_model)
        encoder_files = TimmEncoder(sizes.extract_model, weights=None)
        dataset_tensors = PreDecoded(tensors)
        dataset_files = ImageFolder(folder)
        dataset_files.name = "imagefolder:bench"  # the registry names datasets; built directly here
        counter = iter(range(10**6))

        def harness(encoder: Any, dataset: Any) -> Embeddings:
            # A fresh store each time: every call is a cache miss that extracts and writes the entry.
            store = EmbeddingStore(work / f"cache-{next(counter)}")
            embeddings, report = extract(encoder, dataset, "train", store, options)
            assert report.items_encoded == len(labels), report
            return embeddings

        rows = []
        for what, plain, encoder, dataset in (("pre-decoded tensors", plain_tensors, encoder_tensors, dataset_tensors),
                                              ("image files", plain_files, encoder_files, dataset_files)):
            log(f"  extraction over {what}: {sizes.extract_model}, {len(labels)} images, batch {batch}, "
                f"{workers} workers")
            # Warm-up (untimed): loads the harness's model, and checks both sides give the same vectors.
            ours = harness(encoder, dataset)
            theirs = plain()
            order = np.argsort(np.asarray(ours.ids)) if what == "image files" else np.arange(len(labels))
            reference_ids = sorted(Path(p).relative_to(folder).as_posix() for p, _ in files.samples)
            if what == "image files" and list(np.asarray(ours.ids)[order]) != reference_ids:
                raise SystemExit("extraction check failed: the two sides read different files")
            difference = float(np.abs(np.asarray(ours.features)[order] - theirs).max())
            if difference > 1e-4:
                raise SystemExit(f"extraction check failed: features differ by up to {difference:.3g}")
            times = interleaved({"harness": lambda: harness(encoder, dataset), "plain": plain}, repeats)
            ours_rate = len(labels) / median(times["harness"])
            plain_rate = len(labels) / median(times["plain"])
            goal = 0.95 if what == "pre-decoded tensors" else 1.0
            ratio = ours_rate / plain_rate
            rows.append(Row(f"extraction throughput, {what} (img/s)", f"{ours_rate:.1f}", f"{plain_rate:.1f}", ratio,
                            f">= {goal}", ratio >= goal,
                            f"{sizes.extract_model} random init, {tuple(tensors.shape[1:])}, batch {batch}, "
                            f"{workers} workers; same vectors (max diff {difference:.1e})"))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- kNN ----------------------------------------------------------------------------------------------------------


def uniform_vote(neighbour_labels: Any, num_classes: int) -> Any:
    """Majority class of each row of neighbour labels, ties to the lower class (scikit-learn's uniform weights)."""
    import torch

    counts = torch.zeros(neighbour_labels.shape[0], num_classes, dtype=torch.float64)
    counts.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=torch.float64))
    return counts.argmax(1)  # argmax returns the first maximum: the lower class index


def knn_agreement(train: Embeddings, test: Embeddings, n_check: int, k: int) -> str:
    """Neighbour sets and uniform-vote predictions of ours against scikit-learn's on the first `n_check` queries.

    Compared: the set of the k nearest train indices per query (order within ties aside), and the majority-vote
    prediction over them. DINO's exp(sim/T) weights are not scikit-learn's, so the weighted predictions are not
    compared; the vote over the same neighbour sets is.
    """
    import torch
    from sklearn.neighbors import KNeighborsClassifier

    from harness.plugins.knn import nearest_neighbours

    x, y = np.asarray(train.features), np.asarray(train.labels)
    queries = np.asarray(test.features[:n_check])
    reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y)
    distances, theirs = reference.kneighbors(queries)
    sims, ours = nearest_neighbours(x, queries, k)
    same_sets = [set(a.tolist()) == set(b.tolist()) for a, b in zip(ours.numpy(), theirs)]
    # Where the sets differ, the swapped items must sit at the k-th similarity (a tie within float32 rounding).
    boundary_ok = all(same or abs(float(sims[i, -1]) - (1 - float(distances[i, -1]))) < 1e-5
                      for i, same in enumerate(same_sets))
    num_classes = int(y.max()) + 1
    ours_pred = uniform_vote(torch.from_numpy(y)[ours.long()], num_classes).numpy()
    theirs_pred = reference.predict(queries)
    agree = int((ours_pred == theirs_pred).sum())
    if sum(same_sets) < n_check and not boundary_ok or agree < n_check * 0.99:
        raise SystemExit(f"kNN check failed: {sum(same_sets)}/{n_check} identical neighbour sets, "
                         f"{agree}/{n_check} equal uniform-vote predictions")
    return (f"top-{k} neighbour sets identical for {sum(same_sets)}/{n_check} queries, uniform-vote predictions "
            f"equal for {agree}/{n_check}")


def bench_knn(sizes: Sizes, repeats: int) -> list[Row]:
    import torch
    from sklearn.neighbors import KNeighborsClassifier

    from harness.plugins.knn import KNN

    train, test = make_data(sizes.knn_train, sizes.knn_queries, 768, 100, seed=1)
    k = 200
    log(f"  kNN: {sizes.knn_train} x 768 train, {sizes.knn_queries} queries, k up to {k}")
    agreement = knn_agreement(train, test, sizes.knn_check_queries, k)
    log(f"    check: {agreement}")
    x, y, q = np.asarray(train.features), np.asarray(train.labels), np.asarray(test.features)
    evaluator = KNN()
    xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    qn = torch.nn.functional.normalize(torch.from_numpy(q), dim=1)

    def floor() -> None:
        # One 10,000 x 50,000 float32 product is 2 GB; in chunks of 1,024 queries it is the same arithmetic.
        for chunk in qn.split(1024):
            torch.mm(chunk, xn.T)

    cpu = ExecutionSettings(device="cpu")
    sides = {"harness": lambda: evaluator.evaluate(train, test, seed=0, settings=cpu),
             "scikit-learn": lambda: KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
             .fit(x, y).predict(q),
             "torch.mm": floor}
    return against_sklearn_and_floor(sides, repeats, f"kNN vs scikit-learn brute cosine ({sizes.knn_train} x 768, "
                                     f"{sizes.knn_queries} queries)", "kNN", agreement, "vote")


def against_sklearn_and_floor(sides: dict[str, Callable[[], Any]], repeats: int, measurement: str, what: str,
                              agreement: str, after: str) -> list[Row]:
    """The two rows of an evaluator timed against scikit-learn (>= 2.5x faster) and a bare torch.mm (<= 1.4x)."""
    times = {name: median(values) for name, values in interleaved(sides, repeats).items()}
    speedup = times["scikit-learn"] / times["harness"]
    over_floor = times["harness"] / times["torch.mm"]
    return [Row(measurement, f"{times['harness']:.2f} s", f"{times['scikit-learn']:.2f} s", speedup, ">= 2.5",
                speedup >= 2.5, agreement),
            Row(f"{what} vs bare torch.mm of the same shapes (floor)", f"{times['harness']:.2f} s",
                f"{times['torch.mm']:.2f} s", over_floor, "<= 1.4", over_floor <= 1.4,
                f"ratio = harness / torch.mm: the cost above the matmul (normalise, top-k, {after})")]


# -- retrieval ----------------------------------------------------------------------------------------------------


def user_map_at_r(neighbours: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """AP@R per query as a user would write it over scikit-learn's neighbours (Q x k, k >= the largest class)."""
    r = np.bincount(gallery_labels)[query_labels]
    relevant = gallery_labels[neighbours] == query_labels[:, None]
    ranks = np.arange(1, neighbours.shape[1] + 1)
    hits = relevant & (ranks <= r[:, None])
    return (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1) / r


def bench_retrieval(sizes: Sizes, repeats: int) -> list[Row]:
    import torch
    from sklearn.neighbors import NearestNeighbors

    from harness.plugins.retrieval import Retrieval

    train, test = make_data(sizes.knn_train, sizes.knn_queries, 768, 100, seed=1)
    x, y, q, yq = (np.asarray(train.features), np.asarray(train.labels), np.asarray(test.features),
                   np.asarray(test.labels))
    k = int(np.bincount(y).max())  # the largest gallery class: what mAP@R needs
    log(f"  retrieval: {sizes.knn_train} x 768 gallery, {sizes.knn_queries} queries, k = {k}")
    evaluator, cpu = Retrieval(), ExecutionSettings(device="cpu")

    def theirs(queries: np.ndarray) -> np.ndarray:
        neighbours = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x).kneighbors(
            queries, return_distance=False)
        return user_map_at_r(neighbours, y, yq[:len(queries)])

    n_check = sizes.knn_check_queries
    ours_ap = evaluator.evaluate(train, dataclasses.replace(test, features=q[:n_check], labels=yq[:n_check],
                                                            ids=test.ids[:n_check]), seed=0, settings=cpu)
    differ = np.abs(ours_ap.predictions["score"] - theirs(q[:n_check]))
    # Near-equal similarities (rounded apart differently by the two computations) may swap neighbours; one swap
    # moves AP@R by about 1/R^2, so anything near 1e-3 is a different ranking, not rounding.
    if differ.max() > 1e-3:
        raise SystemExit(f"retrieval check failed: AP@R differs from scikit-learn's neighbours' by up to "
                         f"{differ.max():.2g} ({(differ > 1e-9).sum()}/{n_check} queries differ)")
    agreement = f"AP@R equal to scikit-learn's neighbours' for {(differ <= 1e-9).sum()}/{n_check} queries"
    if differ.max() > 1e-9:
        agreement += f", the others within {differ.max():.1e} (near-ties swapped)"
    log(f"    check: {agreement}")
    xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    qn = torch.nn.functional.normalize(torch.from_numpy(q), dim=1)
    sides = {"harness": lambda: evaluator.evaluate(train, test, seed=0, settings=cpu),
             "scikit-learn": lambda: theirs(q),
             "torch.mm": lambda: [torch.mm(chunk, xn.T) for chunk in qn.split(1024)]}
    return against_sklearn_and_floor(sides, repeats, f"retrieval (mAP@R) vs scikit-learn NearestNeighbors + AP "
                                     f"({sizes.knn_train} x 768, {sizes.knn_queries} queries, k = {k})",
                                     "retrieval", agreement, "AP@R")


# -- linear probe -------------------------------------------------------------------------------------------------


def bench_linear_probe(sizes: Sizes, repeats: int) -> list[Row]:
    from harness.plugins.linear_probe import c_grid

    n_train, n_test, dim, classes = sizes.linear
    train, test = make_data(n_train, n_test, dim, classes, seed=0)
    log(f"  linear probe: {n_train} train / {n_test} test, {dim}-d, {classes} classes")
    grid, results = c_grid(), {}

    def ours() -> None:
        results["ours"] = our_protocol(train, test, 0, "cpu")

    def theirs() -> None:
        results["theirs"] = naive_protocol(train, test, 0, list(range(len(grid))))

    times = interleaved({"harness": ours, "scikit-learn": theirs}, repeats)
    o, n = results["ours"], results["theirs"]
    whole = median(times["scikit-learn"]) / median(times["harness"])
    single = [single_fit(train, test, 0.01, "cpu") for _ in range(repeats)]  # each call runs ours, then theirs
    ours_fit, theirs_fit = median([s[0]["time"] for s in single]), median([s[1]["time"] for s in single])
    shapes = f"{n_train} x {dim}, {classes} classes"
    return [Row(f"linear probe, whole protocol vs 45 LogisticRegression fits ({shapes})",
                f"{median(times['harness']):.2f} s", f"{median(times['scikit-learn']):.2f} s", whole, ">= 5",
                whole >= 5, f"chosen C {grid[o['chosen']]:.4g} vs {grid[n['chosen']]:.4g}; test top-1 "
                            f"{o['top1']:.4f} vs {n['top1']:.4f}"),
            Row("linear probe, one fit at C = 0.01", f"{ours_fit:.2f} s", f"{theirs_fit:.2f} s",
                theirs_fit / ours_fit, "(no goal)", None,
                f"objective {single[-1][0]['objective']:.6g} vs {single[-1][1]['objective']:.6g}")]


# -- reading datasets ---------------------------------------------------------------------------------------------


def bench_read(sizes: Sizes, repeats: int) -> list[Row]:
    from harness.plugin_manager import Plugins
    from harness_test_support.dataset_forms import save_as_hf_dataset, write_shards

    work = Path(tempfile.mkdtemp(prefix="bench-read-"))
    os.environ.setdefault("HARNESS_WDS_INDEX_DIR", str(work / "wds-index"))
    try:
        folder = image_folder_copy(work / "images", sizes.read_images)
        write_shards(folder, work / "shards", per_shard=256)
        plugins = Plugins(entry_points=False)
        splits = {"imagefolder": plugins.dataset(f"imagefolder:{folder}").split("train"),
                  "wds": plugins.dataset(f"wds:{work / 'shards'}").split("train")}
        try:
            save_as_hf_dataset(folder, work / "saved")
            splits["hfds"] = plugins.dataset(f"hfds:{work / 'saved'}").split("train")
        except ImportError:
            log("  hfds: skipped (pip install \"encoder-harness[hf]\" for that row)")

        def read(split: Any) -> list[Any]:
            return [split[i] for i in range(len(split))]

        reference = [np.asarray(image) for image, _ in read(splits["imagefolder"])]
        for name, split in splits.items():  # the same pixels and labels, in the same order, before any timing
            items = read(split)
            if [label for _, label in items] != [label for _, label in read(splits["imagefolder"])] or any(
                    not np.array_equal(np.asarray(image), pixels) for (image, _), pixels in zip(items, reference)):
                raise SystemExit(f"read check failed: {name} gives other images or labels than the image folder")
        log(f"  reading {len(reference)} JPEGs (32 px, decoded to RGB) through {', '.join(splits)}")
        times = interleaved({name: (lambda split=split: read(split)) for name, split in splits.items()}, repeats)
        folder_rate = len(reference) / median(times["imagefolder"])
        rows = []
        for name in [n for n in splits if n != "imagefolder"]:
            rate = len(reference) / median(times[name])
            rows.append(Row(f"reading {name} against unpacked files (img/s)", f"{rate:.0f}", f"{folder_rate:.0f}",
                            rate / folder_rate, ">= 1.0" if name == "wds" else "-",
                            rate >= folder_rate if name == "wds" else None,
                            f"{len(reference)} images, one process, no model; same pixels and labels"))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- forward passes -----------------------------------------------------------------------------------------------


def bench_passes(sizes: Sizes) -> list[Row]:
    from harness.plugin_manager import Plugins
    from harness.runner import RunConfig, run
    from harness_test_support.helpers import CountingPixels

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-passes-") as work:
        for evaluators in (["knn"], ["knn", "linear", "clustering"]):
            encoder = CountingPixels()
            config = RunConfig(encoders=[encoder], datasets=["synthetic"], evaluators=evaluators,
                               results_dir=Path(work) / f"results-{len(evaluators)}",
                               cache_dir=Path(work) / f"cache-{len(evaluators)}", device="cpu", batch_size=32,
                               progress=False, command="benchmarks/run.py")
            log(f"  forward passes: {'+'.join(evaluators)} on synthetic")
            report = run(config, Plugins(entry_points=False))
            if report.failures:
                raise SystemExit(f"forward-pass run failed: {report.failures}")
            items = sum(r["dataset"]["split_sizes"][s] for r in report.records[:1]
                        for s in r["dataset"]["split_sizes"])
            ratio = encoder.items / items
            rows.append(Row(f"items through the encoder / dataset items, {len(evaluators)} evaluator(s)",
                            f"{encoder.items} items", f"{items} items", ratio, "= 1.0", ratio == 1.0,
                            f"{encoder.calls} forward passes (batches of 32); runner counted "
                            f"{report.items_encoded} items, {report.forward_passes} passes; "
                            f"{len(report.records)} records"))
    return rows


# -- peak memory --------------------------------------------------------------------------------------------------


def rss_anon_kib(pid: int | str = "self") -> int | None:
    """Resident anonymous memory of a process in KiB (None once it has exited: a zombie has no RssAnon line)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(evaluator_name: str, directory: str, n: int) -> None:
    """Run one evaluator on the first `n` rows of the memory-mapped features; print JSON with the baseline."""
    import torch  # noqa: F401 - imported before the baseline is taken, as the evaluator needs it anyway

    from harness.plugins.knn import KNN
    from harness.plugins.linear_probe import LinearProbe

    root = Path(directory)
    features = np.load(root / "features.npy", mmap_mode="r")[:n]
    labels = np.load(root / "labels.npy", mmap_mode="r")[:n]
    queries = np.load(root / "queries.npy", mmap_mode="r")
    query_labels = np.load(root / "query_labels.npy")
    # Labels in memory, as the embedding store hands them out; the features stay memory-mapped.
    train = Embeddings(features, np.array(labels), np.arange(n).astype(str), {})
    test = Embeddings(queries, query_labels, np.arange(len(query_labels)).astype(str), {})
    evaluator = {"knn": KNN, "linear": LinearProbe}[evaluator_name](**MEMORY_OPTIONS[evaluator_name])
    baseline = rss_anon_kib()
    if baseline is None:
        raise SystemExit("no RssAnon in /proc/self/status: the memory rows need Linux")
    start = time.perf_counter()
    result = evaluator.evaluate(train, test, seed=0,
                                settings=ExecutionSettings(device="cpu", memory_budget_mb=MEMORY_BUDGET_MB))
    print(json.dumps({"baseline_kib": baseline, "seconds": time.perf_counter() - start,
                      "main_score": result.main_score}), flush=True)


def peak_of_child(evaluator_name: str, directory: Path, n: int) -> dict[str, float]:
    """Peak RssAnon of a child running one evaluator, sampled every 5 ms, minus its RssAnon just before."""
    child = subprocess.Popen([sys.executable, __file__, "--memory-child", evaluator_name, str(directory), str(n)],
                             stdout=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, rss_anon_kib(child.pid) or 0)
        time.sleep(0.005)
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise SystemExit(f"memory child ({evaluator_name}, N={n}) failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    return {"peak_mib": (peak - result["baseline_kib"]) / 1024, "seconds": result["seconds"]}


def bench_memory(sizes: Sizes) -> list[Row]:
    rng = np.random.default_rng(2)
    n, quarter = sizes.memory_n, sizes.memory_n // 4
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        root = Path(work)
        log(f"  memory: writing a {n} x {MEMORY_DIM} float32 .npy, read back as a memory map "
            f"({n * MEMORY_DIM * 4 / 2**20:.0f} MiB)")
        centres = rng.normal(0, 0.15, (MEMORY_CLASSES, MEMORY_DIM)).astype(np.float32)
        labels = rng.integers(0, MEMORY_CLASSES, n)
        # The store's own writer (blocks reserved, plain writes): a full disk is an error naming the file, where a
        # writable memory map would be a SIGBUS.
        blocks = (centres[labels[start:start + 10_000]] + rng.standard_normal(
                      (len(labels[start:start + 10_000]), MEMORY_DIM), dtype=np.float32)
                  for start in range(0, n, 10_000))
        _write_rows(root / "features.npy", (n, MEMORY_DIM), blocks, np.dtype(np.float32))
        np.save(root / "labels.npy", labels)
        query_labels = rng.integers(0, MEMORY_CLASSES, sizes.memory_queries)
        np.save(root / "queries.npy", centres[query_labels] + rng.standard_normal(
            (sizes.memory_queries, MEMORY_DIM), dtype=np.float32))
        np.save(root / "query_labels.npy", query_labels)
        for name in ("knn", "linear"):
            at = {}
            for count in (n, quarter):
                log(f"  memory: {name} on {count} x {MEMORY_DIM} ({sizes.memory_queries} queries/test items)")
                at[count] = peak_of_child(name, root, count)
                log(f"    peak +{at[count]['peak_mib']:.0f} MiB anonymous, {at[count]['seconds']:.1f} s")
            ratio = at[n]["peak_mib"] / max(at[quarter]["peak_mib"], 1.0)
            options = f"{MEMORY_OPTIONS[name] or 'default options'}, memory budget {MEMORY_BUDGET_MB} MB"
            rows.append(Row(f"{name} peak anonymous memory, N = {n:,} vs N / 4 (MiB above baseline)",
                            f"{at[n]['peak_mib']:.0f} MiB", f"{at[quarter]['peak_mib']:.0f} MiB", ratio,
                            "<= 1.25 (∝ N: 4)", ratio <= 1.25,
                            f"features {n * MEMORY_DIM * 4 / 2**20:.0f} MiB (memory-mapped); {options}; "
                            f"{at[n]['seconds']:.1f} s at N"))
    return rows


# -- the table ----------------------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    from tabulate import tabulate

    table = [[r.measurement, r.harness, r.reference, "-" if r.ratio is None else f"{r.ratio:.2f}", r.goal,
              {True: "yes", False: "NO", None: "-"}[r.met]] for r in rows]
    print(tabulate(table, headers=["measurement", "harness", "reference", "ratio", "goal", "met?"],
                   disable_numparse=True))  # keep "1.00" as printed, not re-parsed as the number 1
    print()
    for r in rows:
        if r.note:
            print(f"- {r.measurement}: {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the command, not the goals")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side (median; at least 3)")
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--workers", type=int, help="DataLoader workers on both extraction sides "
                                                    "(default: the harness's choice for the CPU)")
    parser.add_argument("--extract-model", help="timm architecture for the extraction rows (random init)")
    parser.add_argument("--memory-child", nargs=3, metavar=("EVALUATOR", "DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], int(args.memory_child[2]))
        return 0
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (ratios are medians of at least 3)")
    sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    sizes = QUICK if args.quick else FULL
    if args.extract_model:
        sizes = dataclasses.replace(sizes, extract_model=args.extract_model)

    import sklearn
    import timm
    import torch

    from harness.extract import default_workers

    workers = default_workers("cpu") if args.workers is None else args.workers
    started = time.perf_counter()
    print(f"benchmarks/run.py{' --quick' if args.quick else ''}: {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), timm {timm.__version__}, scikit-learn {sklearn.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    rows: list[Row] = []
    for section in sections:
        log(f"[{section}] ({time.perf_counter() - started:.0f} s so far)")
        if section == "extract":
            rows += bench_extract(sizes, args.repeats, workers)
        elif section == "knn":
            rows += bench_knn(sizes, args.repeats)
        elif section == "retrieval":
            rows += bench_retrieval(sizes, args.repeats)
        elif section == "linear":
            rows += bench_linear_probe(sizes, args.repeats)
        elif section == "passes":
            rows += bench_passes(sizes)
        elif section == "read":
            rows += bench_read(sizes, args.repeats)
        elif section == "memory":
            rows += bench_memory(sizes)
    print()
    print_table(rows)
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average {os.getloadavg()[0]:.2f} at the end "
          f"(timings on a loaded machine are pessimistic for both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
