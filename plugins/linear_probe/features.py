"""The train and test features as the linear probe's solver reads them: centred on the device, or streamed.

Both classes hand out the same rows, shifted by the train mean (which leaves the minimiser and the objective value
unchanged, because the intercept is not penalised; see docs/protocols.md#linearlogreg-v1): `CentredFeatures`
holds them on the device, `StreamedFeatures` re-reads them from the memory map in chunks for every pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so `import harness.plugins.linear_probe` stays cheap
    import torch

#: Rows per block when computing the loss, so that the (rows x classes) logits stay small on any device.
MAX_BLOCK_ELEMENTS = 1 << 25


class CentredFeatures:
    """Rows of features on the device, shifted by a fixed vector (the train mean); the shift leaves the model and its penalty unchanged."""

    def __init__(self, x: "torch.Tensor", shift: "torch.Tensor") -> None:
        self.x = x
        self.shift = shift
        self.torch_dtype = x.dtype
        self.device = x.device

    @classmethod
    def from_array(cls, features: np.ndarray, *, device: str, dtype: str, shift: "torch.Tensor | None" = None,
                   rows: np.ndarray | None = None) -> "CentredFeatures":
        """Copy `features` (or its `rows`) to the device in blocks, centred by `shift` (default: their own mean).

        `features` may be a read-only memory map: it is read block by block, never written, never copied whole
        on the host.
        """
        import torch

        torch_dtype = getattr(torch, dtype)
        n = features.shape[0] if rows is None else len(rows)
        d = features.shape[1]
        x = torch.empty((n, d), dtype=torch_dtype, device=device)
        block = max(1, (1 << 24) // max(d, 1))
        for start in range(0, n, block):
            index = slice(start, start + block) if rows is None else rows[start:start + block]
            # np.array copies the block: torch.from_numpy warns about (and must not write to) read-only memory.
            chunk = np.array(features[index], dtype=np.dtype(dtype), copy=True)
            x[start:start + len(chunk)] = torch.from_numpy(chunk).to(x.device)
        if shift is None:
            shift = (x.sum(0, dtype=torch.float64) / max(n, 1)).to(torch_dtype)
        x -= shift
        return cls(x, shift)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)  # type: ignore[return-value]

    def row_blocks(self, block: int) -> "Iterator[torch.Tensor]":
        """Consecutive blocks of at most `block` rows, in order (views: nothing is copied)."""
        for start in range(0, self.x.shape[0], block):
            yield self.x[start:start + block]

    def subset(self, rows: np.ndarray) -> "CentredFeatures":
        import torch

        return CentredFeatures(self.x[torch.as_tensor(rows, device=self.device)], self.shift)

    def logits(self, theta: "torch.Tensor", num_classes: int) -> "torch.Tensor":
        d = self.x.shape[1]
        weights = theta[: d * num_classes].view(d, num_classes)
        return self.x @ weights + theta[d * num_classes:]


class StreamedFeatures:
    """The same rows as `CentredFeatures`, never held whole: read from the (memory-mapped) array in chunks.

    For features larger than the device's budget. Every pass over the data (each objective and gradient of
    L-BFGS, each scoring) reads the rows again, `chunk_rows` at a time, copies them to the device in the solver's
    dtype and centres them there: the same values as `CentredFeatures` holds, so the objective is the same, its
    sum over rows accumulated chunk by chunk. Memory: one chunk, whatever N.
    """

    def __init__(self, source: np.ndarray, rows: np.ndarray | None, shift: "torch.Tensor", *, device: str,
                 dtype: str, chunk_rows: int) -> None:
        self.source, self.rows, self.shift = source, rows, shift
        self.device, self.dtype, self.chunk_rows = device, dtype, max(1, int(chunk_rows))
        self.torch_dtype = shift.dtype

    @classmethod
    def from_array(cls, features: np.ndarray, *, device: str, dtype: str, chunk_rows: int,
                   shift: "torch.Tensor | None" = None, rows: np.ndarray | None = None) -> "StreamedFeatures":
        """As `CentredFeatures.from_array`; the mean, when not given, is summed over the chunks in float64."""
        import torch

        streamed = cls(features, rows, torch.zeros(features.shape[1], dtype=getattr(torch, dtype), device=device),
                       device=device, dtype=dtype, chunk_rows=chunk_rows)
        if shift is None:
            total = torch.zeros(features.shape[1], dtype=torch.float64, device=device)
            for chunk in streamed._raw_chunks(streamed.chunk_rows):
                total += chunk.sum(0, dtype=torch.float64)
            shift = (total / max(streamed.shape[0], 1)).to(streamed.torch_dtype)
        streamed.shift = shift
        return streamed

    @property
    def shape(self) -> tuple[int, int]:
        return (self.source.shape[0] if self.rows is None else len(self.rows), self.source.shape[1])

    def _raw_chunks(self, block: int) -> "Iterator[torch.Tensor]":
        import torch

        for start in range(0, self.shape[0], block):
            index = slice(start, start + block) if self.rows is None else self.rows[start:start + block]
            # np.array copies the rows: torch.from_numpy must not alias (or write to) a read-only memory map.
            chunk = np.array(self.source[index], dtype=np.dtype(self.dtype), copy=True)
            yield torch.from_numpy(chunk).to(self.device)

    def row_blocks(self, block: int) -> "Iterator[torch.Tensor]":
        for chunk in self._raw_chunks(block):
            yield chunk.sub_(self.shift)

    def subset(self, rows: np.ndarray) -> "StreamedFeatures":
        rows = np.asarray(rows)
        composed = rows if self.rows is None else self.rows[rows]
        return StreamedFeatures(self.source, composed, self.shift, device=self.device, dtype=self.dtype,
                                chunk_rows=self.chunk_rows)

    def logits(self, theta: "torch.Tensor", num_classes: int) -> "torch.Tensor":
        import torch

        d = self.shape[1]
        weights = theta[: d * num_classes].view(d, num_classes)
        return torch.cat([xb @ weights + theta[d * num_classes:] for xb in self.row_blocks(self.chunk_rows)])

