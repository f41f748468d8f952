"""kNN `knn/dino-v1`: DINO's weighted k-nearest-neighbour classifier (Caron et al., 2021), streamed in torch.

Cosine similarity of L2-normalised features; the k nearest train items vote exp(sim / 0.07) for their class; one
top-k of the largest k serves k in {10, 20, 100, 200}; main score top-1 at k = 20. The train bank is read from
its memory map in blocks sized from the execution settings' memory budget (`plan_blocks`), so memory does not grow
with N; on the CPU each block is folded into the top-k by one compiled pass (`harness.plugins.knn_scan`).
Every parameter, tie rule and difference from DINO's eval_knn.py: docs/protocols.md#knndino-v1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.eval_splits import classes_of, train_of_classes
from harness.metric_names import IDS, LABEL, NULL_REASONS, PREDICTION, SCORE, TOP5
from harness.memory import budget_bytes, format_bytes
from harness.types import Embeddings, EvaluationResult, Evaluator, ExecutionSettings, require_two_classes

#: Caps on the automatic block sizes: larger blocks make the matrix products no faster, only the memory larger.
MAX_TRAIN_BLOCK = 65_536
MAX_SIMILARITY_ELEMENTS = 1 << 26
#: Bytes per (query, neighbour) of the running top-k (float32 similarity + int64 index), and of the temporaries
#: of one merge (the block's top-k, its re-ordering and the concatenation with the running top-k, sorted).
_RESULT_BYTES = 12
_MERGE_BYTES = 6 * _RESULT_BYTES
#: How `nearest_neighbours` keeps each block's best: "auto" is "heap" on the CPU, "torch" elsewhere.
SELECTIONS = ("auto", "heap", "torch")


@dataclass(frozen=True)
class KnnBlocks:
    """How `nearest_neighbours` cuts the work: rows of train per block, queries per chunk."""

    train_block: int
    query_block: int
    queries_resident: bool  # all queries normalised on the device once, rather than re-read per train block

    def working_bytes(self, n_queries: int, dim: int, k: int) -> int:
        """The memory of the computation, at most: what the budget bounds and the peak-memory test checks.

        One train block (float32, normalised in place), the queries (all, or one chunk), one block of
        similarities (float32), the merge temporaries, and the running top-k of every
        query (the result itself, Q x k). The CPU's heap scan needs no merge temporaries (its heaps are the
        result); they stay counted so that a plan, hence every product and similarity, is the same whichever
        selection runs.
        """
        queries = (n_queries if self.queries_resident else self.query_block) * dim * 4
        return (self.train_block * dim * 4 + queries + self.query_block * self.train_block * 4
                + self.query_block * k * _MERGE_BYTES + n_queries * k * _RESULT_BYTES)


def plan_blocks(n_train: int, n_queries: int, dim: int, k: int, budget: int) -> KnnBlocks:
    """The largest blocks (up to the caps) whose `working_bytes` fit in `budget` bytes."""
    k = max(1, min(k, n_train))
    smallest = KnnBlocks(1, 1, False).working_bytes(n_queries, dim, k)
    if smallest > budget:
        raise HarnessError(f"kNN of {n_queries} queries (k={k}, dim {dim}) needs at least {format_bytes(smallest)}"
                           f" (mostly the {n_queries} x {k} result); the memory budget is {format_bytes(budget)}:"
                           f" raise it with --memory-budget-mb")
    room = budget - n_queries * k * _RESULT_BYTES
    resident = n_queries * dim * 4 <= room // 4
    if resident:
        room -= n_queries * dim * 4
    # Half of what is left for the train block, the rest for the query chunk and its block of similarities.
    train_block = int(max(1, min(n_train, MAX_TRAIN_BLOCK, room // 2 // (dim * 4))))
    per_query = train_block * 4 + k * _MERGE_BYTES + (0 if resident else dim * 4)
    query_block = int(max(1, min(n_queries, MAX_SIMILARITY_ELEMENTS // train_block,
                                 (room - train_block * dim * 4) // per_query)))
    return KnnBlocks(train_block, query_block, resident)


def _normalised_rows(features: np.ndarray, start: int, stop: int, device: str) -> Any:
    """Rows [start, stop) as float32 on the device, L2-normalised in place (the values of F.normalize)."""
    import torch

    # A float32 copy of just these rows: the store hands out read-only memory maps (float32 or float16), which
    # torch must not alias; the copy is the only host memory the block takes.
    block = torch.from_numpy(np.array(features[start:stop], dtype=np.float32, copy=True)).to(device)
    return block.div_(block.norm(dim=1, keepdim=True).clamp_min_(1e-12))


def _top_k_of_block(sims: Any, k: int) -> tuple[Any, Any]:
    """The k best columns of each row by (similarity descending, column ascending), in that order.

    `topk` alone picks arbitrarily among equal values at the k-th place; rows where it may have left out a lower
    column of equal similarity (rare: duplicate train items) are redone with a stable sort. (Detecting them by
    comparing the whole block with the k-th value would cost a Q x B mask, and its sum an int64 copy of it.)
    """
    import torch

    if k == sims.shape[1]:
        return _ordered(sims, torch.arange(k, device=sims.device).expand_as(sims))
    # One more than k: a row is ambiguous exactly when its (k+1)-th value equals its k-th.
    top_sims, top_idx = sims.topk(k + 1, dim=1)
    ambiguous = torch.nonzero(top_sims[:, k] == top_sims[:, k - 1]).squeeze(1)
    top_sims, top_idx = top_sims[:, :k], top_idx[:, :k]
    if len(ambiguous):
        redo = torch.sort(sims[ambiguous], dim=1, descending=True, stable=True)
        top_sims[ambiguous], top_idx[ambiguous] = redo.values[:, :k], redo.indices[:, :k]
    return _ordered(top_sims, top_idx)


def _ordered(sims: Any, idx: Any) -> tuple[Any, Any]:
    """Each row re-ordered by (similarity descending, index ascending)."""
    import torch

    by_index = idx.argsort(dim=1)
    sims, idx = sims.gather(1, by_index), idx.gather(1, by_index)
    by_sim = torch.sort(sims, dim=1, descending=True, stable=True).indices
    return sims.gather(1, by_sim), idx.gather(1, by_sim)


def nearest_neighbours(train: np.ndarray, queries: np.ndarray, k: int, device: str = "cpu", *,
                       memory_budget_bytes: int | None = None, train_block: int | None = None,
                       query_block: int | None = None, blocks: KnnBlocks | None = None,
                       selection: str = "auto") -> tuple[Any, Any]:
    """Cosine similarities and indices of the k nearest train rows for every query, (Q, k) each, best first.

    `train` and `queries` may be read-only memory maps of any float dtype; they are read block by block and
    never copied whole. Block sizes come from `memory_budget_bytes` (default: the device's, see
    `harness.memory`) unless `train_block` / `query_block` (or a whole plan, `blocks`) are given; `blocks_for`
    says what they will be.
    Equal similarities rank by train index, so the result does not depend on the blocks.
    `selection` picks how each block's best are kept: "heap" (the CPU's default: one compiled pass per block,
    `harness.plugins.knn_scan`), "torch" (`topk` and a merge per block; the only choice on a GPU); both give the
    same neighbours in the same order from the same similarities.
    """
    import torch

    if selection not in SELECTIONS:
        raise HarnessError(f"kNN selection={selection!r}: one of {', '.join(SELECTIONS)}")
    on_cpu = torch.device(device).type == "cpu"
    if selection == "heap" and not on_cpu:
        raise HarnessError(f"kNN selection='heap' runs on the CPU only, not on {device!r}: use 'torch' or 'auto'")
    if blocks is None:
        blocks = blocks_for(train.shape[0], queries.shape[0], train.shape[1], k, device,
                            memory_budget_bytes=memory_budget_bytes, train_block=train_block,
                            query_block=query_block)
    k = min(k, train.shape[0])
    if on_cpu and selection != "torch":
        return _nearest_by_heaps(train, queries, k, blocks)
    best_sims = torch.full((queries.shape[0], k), -torch.inf, dtype=torch.float32, device=device)
    best_idx = torch.zeros((queries.shape[0], k), dtype=torch.int64, device=device)
    for t_start, q_start, q_stop, sims in _similarity_blocks(train, queries, blocks, device):
        new_sims, new_idx = _top_k_of_block(sims, min(k, sims.shape[1]))
        del sims
        if t_start == 0 and new_sims.shape[1] == k:  # nothing to merge with yet: the block's top-k is it
            best_sims[q_start:q_stop], best_idx[q_start:q_stop] = new_sims, new_idx
            continue
        # The running top-k holds only lower train indices than this block's, and both are ordered by
        # (similarity desc, index asc): a stable sort of the concatenation keeps that order.
        cat_sims = torch.cat([best_sims[q_start:q_stop], new_sims], dim=1)
        cat_idx = torch.cat([best_idx[q_start:q_stop], new_idx + t_start], dim=1)
        order = torch.sort(cat_sims, dim=1, descending=True, stable=True).indices[:, :k]
        best_sims[q_start:q_stop] = cat_sims.gather(1, order)
        best_idx[q_start:q_stop] = cat_idx.gather(1, order)
    return best_sims.cpu(), best_idx.cpu()


def _nearest_by_heaps(train: np.ndarray, queries: np.ndarray, k: int, blocks: KnnBlocks) -> tuple[Any, Any]:
    """`nearest_neighbours` on the CPU: the same blocks and products, each block scanned once into the queries'
    heaps (the Q x k result itself) instead of `topk` and a merge. The similarities are finite (extraction
    rejects NaN and inf), so "strictly above the heap's worst" is the whole test."""
    import numba
    import torch

    from harness.plugins.knn_scan import empty_heaps, scan_block, sort_heaps

    # torch's thread count is the one the user (or harness.runner) set; numba's pool cannot exceed its own size.
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    heap_sims, heap_idx = empty_heaps(queries.shape[0], k)
    for t_start, q_start, q_stop, sims in _similarity_blocks(train, queries, blocks, "cpu"):
        scan_block(sims.numpy(), t_start, heap_sims[q_start:q_stop], heap_idx[q_start:q_stop])
        del sims
    sort_heaps(heap_sims, heap_idx)
    return torch.from_numpy(heap_sims), torch.from_numpy(heap_idx)


def _similarity_blocks(train: np.ndarray, queries: np.ndarray, blocks: KnnBlocks, device: str) -> Iterator[
        tuple[int, int, int, Any]]:
    """Every (train block, query chunk) product in turn, as (first train row, first query, query stop, sims);
    train blocks outermost, so each is read and normalised once."""
    n_train, n_queries = train.shape[0], queries.shape[0]
    resident = _normalised_rows(queries, 0, n_queries, device) if blocks.queries_resident else None
    for t_start in range(0, n_train, blocks.train_block):
        bank = _normalised_rows(train, t_start, min(t_start + blocks.train_block, n_train), device)
        for q_start in range(0, n_queries, blocks.query_block):
            q_stop = min(q_start + blocks.query_block, n_queries)
            q = resident[q_start:q_stop] if resident is not None else _normalised_rows(queries, q_start, q_stop,
                                                                                       device)
            yield t_start, q_start, q_stop, q @ bank.T
        del bank


def blocks_for(n_train: int, n_queries: int, dim: int, k: int, device: str = "cpu", *,
               memory_budget_bytes: int | None = None, train_block: int | None = None,
               query_block: int | None = None) -> KnnBlocks:
    """The blocks `nearest_neighbours` uses for these shapes: planned from the budget, or as given."""
    k = min(k, n_train)
    if train_block is not None or query_block is not None:
        for name, value in (("train_block", train_block), ("query_block", query_block)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise HarnessError(f"kNN {name}={value!r}: a positive number of rows")
        tb = min(n_train, train_block or MAX_TRAIN_BLOCK)
        qb = min(n_queries, query_block or max(1, MAX_SIMILARITY_ELEMENTS // tb))
        return KnnBlocks(tb, qb, False)
    budget = memory_budget_bytes if memory_budget_bytes is not None else budget_bytes(None, device)
    return plan_blocks(n_train, n_queries, dim, k, budget)


def vote(sims: Any, neighbour_labels: Any, k: int, num_classes: int, temperature: float) -> Any:
    """Class scores (Q, C) from the first k neighbours, each voting exp(sim / T) for its class."""
    import torch

    weights = (sims[:, :k] / temperature).exp()
    scores = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
    scores.scatter_add_(1, neighbour_labels[:, :k], weights)
    return scores


def rank_classes(scores: Any) -> Any:
    """Classes by descending score; ties to the lower class index (stable sort)."""
    import torch

    return torch.sort(scores, dim=1, descending=True, stable=True).indices


class KNN(Evaluator):
    name = "knn"
    protocol = "knn/dino-v1"
    needs = ("train", "test")

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"ks": [10, 20, 100, 200], "temperature": 0.07, "main_k": 20}

    def check_dataset(self, info: Mapping[str, Any]) -> None:
        """The main score needs main_k train items: a smaller train split would leave the column empty."""
        n_train = (info.get("split_sizes") or {}).get("train")
        main_k = int(self.options["main_k"])
        if n_train is not None and main_k > n_train:
            fitting = [k for k in self.options["ks"] if k <= n_train]
            hint = (f"--eval-option knn.main_k={max(fitting)}" if fitting else
                    f"a suite with options = {{ ks = [{n_train}], main_k = {n_train} }}")
            raise HarnessError(f"knn: main_k={main_k} neighbours, but the train split has {n_train} items, so the "
                               f"main score (top-1 at k={main_k}) cannot be computed; use {hint}")

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int,
                 settings: ExecutionSettings) -> EvaluationResult:
        """The memory budget of `settings` sets the block sizes, never the results (see `metrics["runtime"]`)."""
        import torch

        device = settings.device

        assert train is not None
        # A split holding some of the classes (harness.eval_splits): the bank is their train items only, and only
        # they are ranked. Already limited when the runner's per-split path handed `train` over.
        subset = classes_of(test)
        train = train_of_classes(train, subset)
        require_two_classes(train, "knn", "train")
        ks = sorted(int(k) for k in self.options["ks"])
        temperature = float(self.options["temperature"])
        main_k = int(self.options["main_k"])
        if main_k not in ks:
            raise HarnessError(f"knn option main_k={main_k} must be one of ks={ks}")
        if train.features.shape[1] != test.features.shape[1]:
            raise HarnessError(f"train and test embeddings differ in dimension: {train.features.shape[1]} vs "
                               f"{test.features.shape[1]}")
        num_classes = max(train.num_classes, int(test.labels.max()) + 1)
        k_max = min(max(ks), train.features.shape[0])
        budget = settings.memory_budget_bytes()
        blocks = blocks_for(train.features.shape[0], test.features.shape[0], train.features.shape[1], k_max,
                            device, memory_budget_bytes=budget)
        sims, idx = nearest_neighbours(train.features, test.features, k=k_max, device=device, blocks=blocks)
        sims, idx = sims.double(), idx.long()
        neighbour_labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))[idx]
        targets = torch.from_numpy(np.asarray(test.labels, dtype=np.int64))
        metrics: dict[str, Any] = {"n_train": int(train.features.shape[0]), "n_test": int(test.features.shape[0]),
                                   "num_classes": num_classes, NULL_REASONS: {}}
        predictions: dict[str, np.ndarray] = {}
        for k in ks:
            if k > train.features.shape[0]:
                metrics[f"top1_k{k}"] = metrics[f"top5_k{k}"] = None
                metrics[NULL_REASONS][f"top1_k{k}"] = metrics[NULL_REASONS][f"top5_k{k}"] = (
                    f"k={k} exceeds the {train.features.shape[0]} train items")
                continue
            scores = vote(sims, neighbour_labels, k, num_classes, temperature)
            if subset is not None:  # a class outside the split never ranks, not even with no vote
                scores[:, np.setdiff1d(np.arange(num_classes), subset)] = -torch.inf
            ranked = rank_classes(scores)
            top5 = ranked[:, :min(5, num_classes if subset is None else len(subset))]
            metrics[f"top1_k{k}"] = float((top5[:, 0] == targets).double().mean())
            metrics[f"top5_k{k}"] = float((top5 == targets[:, None]).any(dim=1).double().mean())
            if k == main_k:
                predictions = {IDS: np.asarray(test.ids), LABEL: targets.numpy(), PREDICTION: top5[:, 0].numpy(),
                               TOP5: top5.numpy(), SCORE: (top5[:, 0] == targets).double().numpy()}  # mean = main
        # How it was computed (differs between machines, never the numbers above).
        metrics["runtime"] = {**asdict(blocks), "memory_budget_bytes": budget,
                              "working_bytes": blocks.working_bytes(test.features.shape[0],
                                                                    train.features.shape[1], k_max)}
        main = metrics.get(f"top1_k{main_k}")
        return EvaluationResult(metrics=metrics, main_score=main, main_metric=f"top1_k{main_k}",
                                predictions=predictions or None)


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("knn", KNN, "Weighted kNN (knn/dino-v1): cosine, T=0.07, k in 10/20/100/200; main score top-1 at k=20")
