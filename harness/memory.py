"""Memory budgets for evaluators, and a probe of a process's anonymous memory.

Evaluators that stream large embedding sets (kNN's train bank, the linear probe's features) or that refuse a
method too large for the machine (clustering's O(N^2) algorithms) size their work from one number: a budget in
bytes. The default depends on the device; `--memory-budget-mb` (`ExecutionSettings.memory_budget_mb`, which every
evaluator gets) sets it. A budget is an execution setting, like the device: it changes how the numbers are computed (block
sizes), never what they are, so it is not an evaluator option and not part of the cell key.

`AnonymousMemoryPeak` measures what such a budget is meant to bound. It samples `RssAnon` of /proc/self/status:
pages of a memory-mapped embedding file count in the resident set (`VmRSS`) while they are cached, but they are
file-backed and can be dropped at any time, so only anonymous memory (what the process allocated) says whether
the evaluator copied the whole set.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

#: The CPU default is capped here: larger kNN blocks or linear-probe chunks are no faster on a CPU.
CPU_BUDGET_CAP_BYTES = 2 << 30
#: Fractions of what is free that a default budget takes (the rest is for the process, the caches, other jobs).
CPU_FRACTION = 0.25
CUDA_FRACTION = 0.5


def _proc_kib(path: str, field: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo, or None where there is no such file (not Linux)."""
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return None if kib is None else kib * 1024


def default_budget_bytes(device: str) -> int:
    """The memory an evaluator may use for its working set on `device` when the user names no budget.

    CUDA: half the device memory free now. CPU (and MPS, which shares host memory): a quarter of the host
    memory available now, at most 2 GiB; 1 GiB where that cannot be read.
    """
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())
        return int(free * CUDA_FRACTION)
    available = available_host_bytes()
    if available is None:
        return 1 << 30
    return int(min(CPU_BUDGET_CAP_BYTES, available * CPU_FRACTION))


def budget_bytes(memory_budget_mb: float | None, device: str) -> int:
    """`memory_budget_mb` in bytes, or the device's default when it is None."""
    from harness.errors import HarnessError

    if memory_budget_mb is None:
        return default_budget_bytes(device)
    if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) or memory_budget_mb <= 0:
        raise HarnessError(f"memory budget {memory_budget_mb!r} MB: give a positive number of megabytes "
                           f"(--memory-budget-mb)")
    return int(memory_budget_mb * 2**20)


def format_bytes(n: float) -> str:
    """Bytes for people: 1.5 GiB, 640 MiB, 12 KiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def rss_anon_bytes() -> int | None:
    """This process's anonymous resident memory (RssAnon), or None where /proc does not say."""
    kib = _proc_kib("/proc/self/status", "RssAnon")
    return None if kib is None else kib * 1024


class AnonymousMemoryPeak:
    """Context manager: the peak growth of RssAnon while the block runs, sampled from a thread.

    >>> with AnonymousMemoryPeak() as peak:
    ...     work()
    >>> peak.growth_bytes  # peak RssAnon during the block minus RssAnon at its start

    Sampling can miss a spike shorter than `interval_s`; a blocked evaluator reaches its peak once per block and
    stays near it, so a few milliseconds is enough. Raises RuntimeError where RssAnon cannot be read.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.start_bytes = 0
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = rss_anon_bytes() or 0
        self.peak_bytes = max(self.peak_bytes, value)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> "AnonymousMemoryPeak":
        start = rss_anon_bytes()
        if start is None:
            raise RuntimeError("RssAnon is not in /proc/self/status on this system; cannot measure memory")
        self.start_bytes = self.peak_bytes = start
        self._thread = threading.Thread(target=self._loop, name="rss-anon-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample()

    @property
    def growth_bytes(self) -> int:
        return self.peak_bytes - self.start_bytes
