"""kNN `knn/dino-v1`: the weighted k-nearest-neighbour classifier of DINO (Caron et al., 2021).

Features are L2-normalised; similarity is the cosine; the k nearest train items vote for their class with weight
exp(sim / T), T = 0.07. One top-k of the largest k serves every k in {10, 20, 100, 200}. Reported: top-1 and
top-5 for each k; the main score is top-1 at k = 20. Ties between classes go to the lower class index.

Computed in torch in blocks: queries in chunks, the train bank in blocks, top-k merged across blocks, so memory is
bounded by the block sizes, not by N.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.types import Embeddings, EvaluationResult, Evaluator

#: Elements of one (queries x train-block) similarity matrix: 2^25 float32 = 128 MiB.
BLOCK_ELEMENTS = 1 << 25


def _normalised(features: np.ndarray, start: int, stop: int, device: str) -> Any:
    import torch

    # A copy of one block: the cache hands out read-only memory maps, which torch must not alias.
    block = torch.from_numpy(np.array(features[start:stop], dtype=np.float32, copy=True)).to(device)
    return torch.nn.functional.normalize(block, dim=1)


def nearest_neighbours(train: np.ndarray, queries: np.ndarray, k: int, device: str = "cpu",
                       block_elements: int = BLOCK_ELEMENTS) -> tuple[Any, Any]:
    """Cosine similarities and indices of the k nearest train rows for every query, (Q, k) each, best first."""
    import torch

    n_train, n_queries = train.shape[0], queries.shape[0]
    train_block = max(1, min(n_train, block_elements // 1024))
    query_chunk = max(1, min(n_queries, block_elements // train_block))
    train_cache = [_normalised(train, s, min(s + train_block, n_train), device)
                   for s in range(0, n_train, train_block)] if n_train <= train_block * 4 else None
    sims_out, idx_out = [], []
    for q_start in range(0, n_queries, query_chunk):
        q = _normalised(queries, q_start, min(q_start + query_chunk, n_queries), device)
        best_sims = best_idx = None
        for b, t_start in enumerate(range(0, n_train, train_block)):
            t = train_cache[b] if train_cache is not None else _normalised(train, t_start,
                                                                           min(t_start + train_block, n_train), device)
            sims = q @ t.T
            top_sims, top_idx = sims.topk(min(k, sims.shape[1]), dim=1)
            top_idx += t_start
            if best_sims is not None:
                top_sims = torch.cat([best_sims, top_sims], dim=1)
                top_idx = torch.cat([best_idx, top_idx], dim=1)
                top_sims, order = top_sims.topk(min(k, top_sims.shape[1]), dim=1)
                top_idx = top_idx.gather(1, order)
            best_sims, best_idx = top_sims, top_idx
        sims_out.append(best_sims.cpu())
        idx_out.append(best_idx.cpu())
    return torch.cat(sims_out), torch.cat(idx_out)


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

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int, device: str) -> EvaluationResult:
        import torch

        assert train is not None
        ks = sorted(int(k) for k in self.options["ks"])
        temperature = float(self.options["temperature"])
        main_k = int(self.options["main_k"])
        if main_k not in ks:
            raise HarnessError(f"knn option main_k={main_k} must be one of ks={ks}")
        if train.features.shape[1] != test.features.shape[1]:
            raise HarnessError(f"train and test embeddings differ in dimension: {train.features.shape[1]} vs "
                               f"{test.features.shape[1]}")
        num_classes = max(train.num_classes, int(test.labels.max()) + 1)
        sims, idx = nearest_neighbours(train.features, test.features, k=min(max(ks), train.features.shape[0]),
                                       device=device)
        sims, idx = sims.double(), idx.long()
        neighbour_labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))[idx]
        targets = torch.from_numpy(np.asarray(test.labels, dtype=np.int64))
        metrics: dict[str, Any] = {"n_train": int(train.features.shape[0]), "n_test": int(test.features.shape[0]),
                                   "num_classes": num_classes, "null_reasons": {}}
        predictions: dict[str, np.ndarray] = {}
        for k in ks:
            if k > train.features.shape[0]:
                metrics[f"top1_k{k}"] = metrics[f"top5_k{k}"] = None
                metrics["null_reasons"][f"top1_k{k}"] = metrics["null_reasons"][f"top5_k{k}"] = (
                    f"k={k} exceeds the {train.features.shape[0]} train items")
                continue
            ranked = rank_classes(vote(sims, neighbour_labels, k, num_classes, temperature))
            top5 = ranked[:, :min(5, num_classes)]
            metrics[f"top1_k{k}"] = float((top5[:, 0] == targets).double().mean())
            metrics[f"top5_k{k}"] = float((top5 == targets[:, None]).any(dim=1).double().mean())
            if k == main_k:
                predictions = {"ids": np.asarray(test.ids), "label": targets.numpy(),
                               "prediction": top5[:, 0].numpy(), "top5": top5.numpy()}
        main = metrics.get(f"top1_k{main_k}")
        return EvaluationResult(metrics=metrics, main_score=main, main_metric=f"top1_k{main_k}",
                                predictions=predictions or None)


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("knn", KNN, "Weighted kNN (knn/dino-v1): cosine, T=0.07, k in 10/20/100/200; main score top-1 at k=20")
