"""The `clustering/umap-v2` evaluator: per clustering seed, one reduction of the test embeddings shared by every
clusterer, scored against the classes and by silhouettes; mean and spread over the seeds.

Run seed s clusters with the seeds `clustering_seeds(s, n_seeds)` (0, 1, 2 for the default run seed 0). The
protocol, its options and its metric keys: docs/protocols.md#clusteringumap-v2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.errors import HarnessError
from harness.memory import format_bytes
from harness.progress import Progress
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings, require_two_classes

from . import metrics as names
from .clusterers import ClusterJob, ClustererRun, capture, largest_fitting_n, quadratic_memory_bytes, run_clusterer
from .label_scores import label_metrics
from .protocol import (DEFAULT_CLUSTERERS, LABELLED_CLUSTERERS, MAX_N_QUADRATIC, MIN_ITEMS, N_SEEDS, PROTOCOL,
                       SILHOUETTE_MAX_N, UMAP_PARAMS, UNLABELLED_CLUSTERERS, ClustererParams, clustering_seeds)
from .silhouette import silhouettes
from .summary import SeedResults, assemble


@dataclass(frozen=True)
class Items:
    """The test items being clustered (after the optional subsample), and the seeds and sample they use."""

    features: np.ndarray
    true: np.ndarray  # class labels, -1 where an item has none
    ids: np.ndarray
    n_labelled: int
    k: int | None  # distinct labels among the items (None: unlabelled)
    seeds: list[int]  # the clustering seeds
    sample: np.ndarray | None  # rows of the silhouette sample (None: every item)
    subsampled: dict[str, Any] | None

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def labelled(self) -> bool:
        return self.k is not None

    @property
    def clusterers(self) -> tuple[str, ...]:
        return LABELLED_CLUSTERERS if self.labelled else UNLABELLED_CLUSTERERS

    @property
    def sample_rows(self) -> np.ndarray:
        return np.arange(self.n) if self.sample is None else self.sample


@dataclass
class Reducer:
    """The reductions of one set of features (`harness.plugins.umap_cache`), hashed once, warnings collected."""

    features: np.ndarray
    cache_dir: Any
    digest: str | None
    results: SeedResults

    def __call__(self, seed: int, n_components: int, method: str) -> tuple[np.ndarray, dict[str, Any], str, float]:
        """(reduced, parameters used, where it came from, seconds)."""
        from harness.plugins import umap_cache

        result, error, messages, took = capture(lambda: umap_cache.reduce(
            self.features, method=method, n_components=n_components, seed=seed, cache_dir=self.cache_dir,
            digest=self.digest if method != "none" else None, **UMAP_PARAMS))
        self.results.note_warnings("reduce", messages)
        if error is not None:
            raise HarnessError(f"clustering: the {method} reduction of the test embeddings failed: "
                               f"{type(error).__name__}: {error}") from error
        return (*result, took)  # type: ignore[return-value]


@dataclass(frozen=True)
class SeedContext:
    """What every clustering seed of one evaluation shares."""

    reduce: Reducer
    results: SeedResults
    device: str
    budget: int  # memory budget in bytes
    progress: Progress  # one step per reduction and per clusterer run


class ClusteringEvaluator(Evaluator):
    """UMAP (once per seed) + K-means, ward, HDBSCAN, spectral, affinity propagation; AMI and silhouettes."""

    name = "clustering"
    protocol = PROTOCOL
    needs = ("test",)
    requires_labels = False
    #: The clusterers' parameters; a preset (`ClusteringStudyEvaluator`) swaps them under its own protocol id.
    clusterer_params: ClassVar[ClustererParams] = DEFAULT_CLUSTERERS

    def __init__(self, **options: Any) -> None:
        """The memory budget, which bounds the O(N^2) clusterers, comes with the execution settings: it is not an
        option (not part of the cell key). `subsample` is an option: it changes the numbers."""
        super().__init__(**options)
        o = self.options
        if o["reduce"] not in ("umap", "pca", "none"):
            raise HarnessError(f"{self.name} option reduce={o['reduce']!r}: use 'umap', 'pca' or 'none'")
        for name, low in (("n_components", 2), ("n_seeds", 1), ("max_n_quadratic", 0)):
            if not isinstance(o[name], int) or isinstance(o[name], bool) or o[name] < low:
                raise HarnessError(f"{self.name} option {name}={o[name]!r}: an integer >= {low}")
        sub = o["subsample"]
        if sub is not None and (not isinstance(sub, int) or isinstance(sub, bool) or sub < MIN_ITEMS):
            raise HarnessError(f"{self.name} option subsample={sub!r}: None, or a number of items >= {MIN_ITEMS}")

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"reduce": "umap", "n_components": 50, "n_seeds": N_SEEDS, "max_n_quadratic": MAX_N_QUADRATIC,
                "subsample": None}

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        from harness.plugins import umap_cache

        if (np.asarray(test.labels) >= 0).any():  # labelled: AMI against one class would be 1.0 by construction
            require_two_classes(test, self.name, "test")
        items, budget = self._items(test, seed, settings)
        results = SeedResults(items.clusterers)
        start = time.perf_counter()
        digest = umap_cache.features_digest(items.features) if self.options["reduce"] != "none" else None
        results.seconds["digest"] = time.perf_counter() - start
        reduce = Reducer(items.features, test.meta.get("derived_dir"), digest, results)
        steps = len(items.seeds) * (1 + len(items.clusterers)) + 2  # + silhouettes in the original space + layout
        with Progress(steps, f"{self.name}: {len(items.seeds)} seed(s) x ({self.options['reduce']} + "
                             f"{', '.join(items.clusterers)}) on {items.n} items", unit="step",
                      enabled=settings.progress, every_s=10.0) as progress:
            context = SeedContext(reduce, results, settings.device, budget, progress)
            for s in items.seeds:
                self._one_seed(items, s, context)
            self._original_silhouettes(items, results, settings.device)
            progress.update(1, "silhouettes in the original space")
            layout, _, source, took = reduce(items.seeds[0], 2, "umap")
            results.seconds[names.UMAP2D] = took
            progress.update(1, f"2-D UMAP layout for the plots ({source}) {took:.1f} s")

        metrics = assemble(items, results, self.options, self.clusterer_params)
        if results.ward_threshold:
            metrics[names.WARD_THRESHOLD] = results.ward_threshold
        metrics[names.SILHOUETTE_ITEMS] = int(len(items.sample_rows))
        if items.subsampled is not None:
            metrics[names.SUBSAMPLED] = items.subsampled
        metrics[names.RUNTIME] = {"seconds": results.seconds, "reduction_source": results.sources,
                                  "warnings": results.warned, "memory_budget_bytes": budget}
        predictions: dict[str, np.ndarray] = {names.IDS: items.ids, names.LABEL: items.true}
        for (s, c), run in results.runs.items():
            if run.labels is not None:
                predictions[names.prediction_key(c, s)] = run.labels
        main_metric = names.WARD_AMI if items.labelled else names.WARD_SILHOUETTE_UMAP
        return EvaluationResult(metrics=metrics, main_score=metrics[names.MEAN].get(main_metric),
                                main_metric=main_metric, predictions=predictions,
                                artifacts={names.UMAP2D: np.asarray(layout, dtype=np.float32)})

    def _items(self, test: Embeddings, seed: int, settings: ExecutionSettings) -> tuple[Items, int]:
        """The items to cluster and the memory budget; refuses a set whose ward would not fit the budget."""
        features = test.features
        n = int(features.shape[0])
        if n < MIN_ITEMS:
            raise HarnessError(f"{self.name} needs at least {MIN_ITEMS} test items; this split has {n}")
        true = np.asarray(test.labels, dtype=np.int64)
        ids = np.asarray(test.ids)
        # Only when asked (never silently): one subset drawn with the run seed, the same for every clustering seed.
        subsample = self.options["subsample"]
        subsampled: dict[str, Any] | None = None
        if subsample is not None and subsample < n:
            rows = np.sort(np.random.default_rng(int(seed)).choice(n, subsample, replace=False))
            features, true, ids = np.asarray(features[rows]), true[rows], ids[rows]
            subsampled = {"n_items": subsample, "of": n, "seed": int(seed)}
            n = subsample
        budget = settings.memory_budget_bytes()
        ward_bytes = quadratic_memory_bytes("ward", n)
        if ward_bytes > budget:
            # Refused before the UMAP, which at this size alone costs minutes: ward is the main score, and a
            # record without it would be an empty leaderboard cell.
            raise HarnessError(
                f"{self.name}: agglomerative ward (the main score) needs about {format_bytes(ward_bytes)} for "
                f"N={n} test items (O(N^2): scipy keeps N(N-1)/2 float64 distances, twice), over the memory "
                f"budget of {format_bytes(budget)}. Cluster a seeded random subset with the clustering option "
                f"subsample={largest_fitting_n('ward', budget)} (--eval-option {self.name}.subsample=N), or raise "
                f"--memory-budget-mb")
        has_label = true >= 0
        k = int(len(np.unique(true[has_label]))) if has_label.any() else None
        sample = None
        if n > SILHOUETTE_MAX_N:  # drawn with the run seed, the same for every clusterer and clustering seed
            sample = np.sort(np.random.default_rng(int(seed)).choice(n, SILHOUETTE_MAX_N, replace=False))
        seeds = clustering_seeds(seed, self.options["n_seeds"])
        return Items(features, true, ids, int(has_label.sum()), k, seeds, sample, subsampled), budget

    def _one_seed(self, items: Items, s: int, context: SeedContext) -> None:
        """Reduce with clustering seed s, run every clusterer on the reduction, score them in the reduced space."""
        results = context.results
        results.per_seed[s] = {}
        reduced, params, source, took = context.reduce(s, self.options["n_components"], self.options["reduce"])
        results.seconds["reduce"].append(took)
        results.sources.append(source)
        context.progress.update(1, f"seed {s}: {self.options['reduce']} ({source}) {took:.1f} s")
        if not results.reduction_params:
            results.reduction_params = {key: v for key, v in params.items() if key != "seed"}
        job = ClusterJob(reduced, items.k, s, items.labelled, items.sample, context.device, context.budget,
                         self.options["max_n_quadratic"], self.clusterer_params)
        labelings: list[tuple[str, np.ndarray]] = []
        for c in items.clusterers:
            run = run_clusterer(c, job)
            context.progress.update(1, f"seed {s}: {c} {run.seconds:.1f} s" + (" (no labels)" if run.labels is None
                                                                                else ""))
            self._record_run(items, s, c, run, results)
            if run.labels is not None:
                labelings.append((c, run.labels))
        rows = items.sample_rows
        t0 = time.perf_counter()
        values = silhouettes(reduced[rows], [labels[rows] for _, labels in labelings], job.device)
        results.seconds[names.SILHOUETTE_UMAP].append(time.perf_counter() - t0)
        for (c, _), (value, reason) in zip(labelings, values):
            results.set_metric(s, names.metric_key(c, names.SILHOUETTE_UMAP), value, reason)

    @staticmethod
    def _record_run(items: Items, s: int, c: str, run: ClustererRun, results: SeedResults) -> None:
        """Keep one clusterer's run on seed s: its labels' metrics, or None with its reason for each."""
        results.runs[(s, c)] = run
        results.seconds[c].append(run.seconds)
        results.note_warnings(c, run.warnings)
        if run.reason is not None and run.reason.startswith("skipped"):
            results.skipped[c] = run.reason
        if c == "ward" and not items.labelled:
            results.ward_threshold[str(s)] = run.extra
            results.set_metric(s, names.WARD_DISTANCE_THRESHOLD, run.extra.get("threshold"),
                               run.reason or run.extra.get("reason"))
        if run.labels is not None:
            for m, (value, reason) in label_metrics(run.labels, items.true, hdbscan=c == "hdbscan").items():
                results.set_metric(s, names.metric_key(c, m), value, reason)
        else:
            for m in (*names.METRICS, *names.EXTRA_METRICS.get(c, ())):
                results.set_metric(s, names.metric_key(c, m), None, run.reason)

    @staticmethod
    def _original_silhouettes(items: Items, results: SeedResults, device: str) -> None:
        """The original space once, for every clusterer and seed: it is the expensive one (D is large)."""
        t0 = time.perf_counter()
        rows = items.sample_rows
        keys = [(s, c) for s in items.seeds for c in items.clusterers if results.runs[(s, c)].labels is not None]
        if keys:
            values = silhouettes(np.asarray(items.features[rows]),
                                 [results.runs[key].labels[rows] for key in keys], device)  # type: ignore[index]
            for (s, c), (value, reason) in zip(keys, values):
                results.set_metric(s, names.metric_key(c, names.SILHOUETTE_ORIG), value, reason)
        results.seconds[names.SILHOUETTE_ORIG] = time.perf_counter() - t0
