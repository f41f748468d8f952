"""One forward pass for the encoders of a run that run the same model on the same inputs.

An encoder may declare `forward_group() -> str`: encoders of one run whose keys are equal differ only in what they
read from one forward pass (one timm ViT asked for its last block, its last four blocks and the DINOv2 recipe:
`--layers last,last4,dinov2`). Such an encoder also has `encode_together(batch, encoders) -> [(B, D_i), ...]`, the
features of each of `encoders` (itself among them) from ONE pass of its own model.

When a split of one of them is extracted, every sibling still missing that split is extracted with it: a
`SharedForward` encoder, whose vectors are the siblings' side by side, goes through the ordinary extraction
(resumable shards, the key's lock, ranks), and its entry is then cut into one entry per sibling under the sibling's
own cache key, with the meta the sibling's own extraction would have written; the joint entry is then removed.
The siblings' own extractions, later in the run, are cache hits.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np

from harness import distributed
from harness.distributed import Ranks, together
from harness.errors import BadItemError, HarnessError
from harness.extract import ExtractionOptions, ExtractionReport, extract, split_cache_key
from harness.store import EmbeddingStore
from harness.types import Dataset, Embeddings, Encoder

log = logging.getLogger(__name__)

#: Rows copied at a time when a joint entry is cut into its members' entries.
CUT_ROWS = 8192
#: What `EmbeddingStore.load` adds to an entry's meta (the store writes the rest of its own keys again).
_LOADED_META = ("derived_dir", "entry_dir")


def forward_groups(encoders: Sequence[Encoder]) -> list[list[Encoder]]:
    """The groups of two or more of `encoders` that share a forward pass (equal `forward_group()`), in order."""
    groups: dict[str, list[Encoder]] = {}
    for encoder in encoders:
        if not (callable(getattr(encoder, "forward_group", None))
                and callable(getattr(encoder, "encode_together", None))):
            continue
        try:
            key = encoder.forward_group()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an encoder too broken to fingerprint fails its own cells later
            continue
        if key is not None:
            groups.setdefault(f"{type(encoder).__module__}.{type(encoder).__qualname__}\n{key}", []).append(encoder)
    return [group for group in groups.values() if len(group) > 1]


class SharedForward(Encoder):
    """Several encoders of one forward group as one: its vectors are theirs, side by side, from one pass of the
    first one's model."""

    def __init__(self, members: list[Encoder]) -> None:
        self.members = members
        self.leader = members[0]
        self.name = f"{self.leader.name} ({len(members)} feature choices, one forward pass)"
        self.channels_last = self.leader.channels_last
        self.pretraining = getattr(self.leader, "pretraining", "unknown")
        self.dims: list[int] | None = None  # each member's dimension, once a batch has been encoded

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "shared forward pass", "members": [member.fingerprint() for member in self.members]}

    def info(self) -> dict[str, Any]:
        return {"architecture": self.leader.info().get("architecture"), "weights": self.leader.info().get("weights"),
                "pretraining": self.pretraining, "members": [m.info() for m in self.members],
                "member_dims": self.dims}

    def load(self, device: str) -> None:
        if getattr(self.leader, "_loaded_on", None) != device:  # as extraction does it: one loaded model per run
            self.leader.load(device)
            self.leader._loaded_on = device  # type: ignore[attr-defined]

    @property
    def transform(self) -> Callable[[Any], Any]:
        return self.leader.transform

    def encode(self, batch: Any) -> Any:
        import torch

        outputs = self.leader.encode_together(batch, self.members)  # type: ignore[attr-defined]
        dims = [int(o.shape[1]) if o.ndim == 2 and o.shape[0] == batch.shape[0] else -1 for o in outputs]
        if -1 in dims or len(outputs) != len(self.members) or (self.dims is not None and dims != self.dims):
            raise HarnessError(f"encoder {self.leader.name!r}: encode_together returned shapes "
                               f"{[tuple(o.shape) for o in outputs]} for {len(self.members)} encoders and a batch of "
                               f"{batch.shape[0]}; it must return one (batch, dim) tensor per encoder, always the same")
        self.dims = dims
        return torch.cat([o.float() for o in outputs], dim=1)

    def parameter_count(self) -> int | None:
        return self.leader.parameter_count()

    def member_dims(self, dataset: Dataset, split_name: str, device: str) -> list[int]:
        """Each member's dimension: from the batches encoded in this process, else (a joint entry finished by an
        earlier run that stopped before cutting it) from encoding one item."""
        if self.dims is None:
            import torch

            split = dataset.split(split_name)
            self.load(device)
            for index in range(len(split)):
                try:
                    raw, _ = split[index]
                except BadItemError:
                    continue
                with torch.inference_mode():
                    self.encode(self.transform(raw).unsqueeze(0).to(device))
                break
        if self.dims is None:
            raise HarnessError(f"{self.leader.name} on {dataset.name}/{split_name}: no readable item to size the "
                               f"feature choices with")
        return self.dims


def extract_shared(encoder: Encoder, siblings: Sequence[Encoder], dataset: Dataset, split_name: str,
                   store: EmbeddingStore, options: ExtractionOptions, ranks: Ranks | None = None, *,
                   cache_key: str | None = None) -> tuple[Embeddings, ExtractionReport]:
    """As `harness.extract.extract` for `encoder`, extracting with it, in the same forward passes, each of
    `siblings` (its forward group, itself included) that this split is missing from the cache."""
    if len(siblings) < 2:
        return extract(encoder, dataset, split_name, store, options, ranks, cache_key=cache_key)
    ranks = ranks or distributed.current()
    what = f"{encoder.name} on {dataset.name}/{split_name}"

    def fingerprint() -> list[tuple[str, dict[str, Any] | None]]:
        split = dataset.split(split_name)
        return [(cache_key, None) if member is encoder and cache_key else
                split_cache_key(member, dataset, split_name, split, options) for member in siblings]

    keyed = together(ranks, f"fingerprinting {what} and the encoders sharing its forward pass", fingerprint)
    mine = keyed[list(siblings).index(encoder)][0]
    present = ranks.broadcast(together(ranks, f"looking up {what} in the cache", lambda: [
        store.entry_dir(key).exists() for key, _ in keyed] if ranks.leader else None))
    members: dict[str, tuple[Encoder, dict[str, Any] | None]] = {}
    for member, (key, fingerprints), cached in zip(siblings, keyed, present):
        if not cached and key not in members:
            members[key] = (member, fingerprints)
    if mine not in members or len(members) == 1:
        return extract(encoder, dataset, split_name, store, options, ranks, cache_key=mine)
    order = [mine] + [key for key in members if key != mine]  # the model that runs is this encoder's
    shared = SharedForward([members[key][0] for key in order])
    log.info("%s: one forward pass for %d encoders of one model", what, len(order))
    joint, report = extract(shared, dataset, split_name, store, options, ranks)

    def cut() -> None:
        if ranks.leader:
            _cut(shared, joint, [(key, members[key][1]) for key in order], dataset, split_name, store, options)

    together(ranks, f"storing each encoder's features of {what}", cut)
    embeddings, _ = extract(encoder, dataset, split_name, store, options, ranks, cache_key=mine)
    return embeddings, replace(report, key=mine)


def _cut(shared: SharedForward, joint: Embeddings, keys: list[tuple[str, dict[str, Any] | None]], dataset: Dataset,
         split_name: str, store: EmbeddingStore, options: ExtractionOptions) -> None:
    """Write each member's columns of the joint entry as the member's own entry, then remove the joint entry."""
    dims = joint.meta.get("encoder_info", {}).get("member_dims") or shared.member_dims(dataset, split_name,
                                                                                       options.device)
    if sum(dims) != joint.features.shape[1]:
        raise HarnessError(f"{shared.name}: the joint entry has {joint.features.shape[1]} columns, its members "
                           f"{dims}; remove the cache entry {joint.meta.get('key')} and run again")
    base = {k: v for k, v in joint.meta.items() if k not in _LOADED_META}
    leader_weights = shared.leader.info().get("weights")
    start = 0
    for member, dim, (key, fingerprints) in zip(shared.members, dims, keys):
        columns = slice(start, start + dim)
        start += dim
        if store.entry_dir(key).exists():
            continue
        if fingerprints is None:  # the caller's key: its fingerprints, as its own extraction computes them
            fingerprints = split_cache_key(member, dataset, split_name, dataset.split(split_name), options)[1]
        info = {**member.info(), "weights": leader_weights}  # the same weights; the leader's model was loaded
        meta = {**base, **fingerprints, "encoder": member.name, "encoder_info": info,
                "shared_forward": {"joint_entry": joint.meta.get("key"), "columns": [columns.start, columns.stop],
                                   "with": [m.name for m in shared.members]}}
        rows = (np.asarray(joint.features[i:i + CUT_ROWS, columns]) for i in range(0, len(joint.ids), CUT_ROWS))
        store.finish_chunks(key, (len(joint.ids), dim), rows, np.asarray(joint.labels), np.asarray(joint.ids), meta,
                            dtype=joint.features.dtype)
    store.discard(joint.meta["key"])


__all__ = ["SharedForward", "extract_shared", "forward_groups"]
