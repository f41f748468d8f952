"""Running under `torchrun`: which rank this process is, and the few collectives extraction needs.

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) starts one process
per device; `process_group()` (the one place that joins and leaves, used by `harness run`) reads those variables
and initialises the process group. Outside such a launcher it gives a single-process `Ranks` whose collectives are
no-ops, so the single-process path is the same code.

The group always uses gloo, also on GPU machines: the ranks exchange only small Python objects (the cache key,
the shards still to do, each rank's status), never tensors, and gloo is the backend that has
`monitored_barrier`, whose timeout names the rank that did not arrive. NCCL would add nothing here.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator

from harness.errors import HarnessError

log = logging.getLogger(__name__)

#: How long a rank waits for the others at a synchronisation point (one shard of work, or rank 0 finishing an
#: entry) before it fails naming the rank that did not arrive. Override with HARNESS_DIST_TIMEOUT_S.
DEFAULT_TIMEOUT_S = 1800.0
#: How long the other ranks wait for rank 0 to evaluate and write the records: no practical limit, as evaluators
#: may run for hours (and torchrun stops the waiting ranks anyway if rank 0 dies).
RECORDS_TIMEOUT_S = 7 * 24 * 3600.0
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one run; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: it holds the cache lock, finishes entries, evaluates and writes records."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self, what: str, timeout_s: float | None = None) -> None:
        """Wait for every rank; past the timeout (default: `timeout_s` of these ranks), fail naming the rank(s)
        that did not arrive, instead of hanging."""
        if not self.distributed:
            return
        import torch.distributed as dist

        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=timeout_s), wait_all_ranks=True)
        except RuntimeError as error:  # gloo's message names the missing ranks (as seen from rank 0)
            advice = " (set HARNESS_DIST_TIMEOUT_S to wait longer)" if timeout_s == self.timeout_s else ""
            raise HarnessError(f"rank {self.rank}: not every rank reached '{what}' within {timeout_s:.0f} s"
                               f"{advice}; {error}") from error


def together(ranks: Ranks, what: str, step: Callable[[], Any] = lambda: None,
             on_failure: Callable[[set[str]], None] | None = None, timeout_s: float | None = None) -> Any:
    """Run `step` on every rank and compare notes: an error on any rank is raised on every rank (the failing
    rank's own exception there, a HarnessError naming it elsewhere), so no rank is left waiting for one that
    gave up. Before that, `on_failure` gets the class names of the errors, on every rank, once every rank has
    finished its step. `timeout_s`: how long a rank waits for the others' steps (default: the ranks' timeout).
    With a single process this is just `step()`."""
    error: Exception | None = None
    result = None
    try:
        result = step()
    except Exception as exc:  # noqa: BLE001 - reported to the other ranks, then raised again below
        error = exc
    status = None if error is None else (type(error).__name__, str(error))
    if ranks.distributed:
        ranks.barrier(what, timeout_s)
        statuses = ranks.gather(status)
    else:
        statuses = [status]
    failed = {rank: noted for rank, noted in enumerate(statuses) if noted is not None}
    if failed and on_failure is not None:
        on_failure({kind for kind, _ in failed.values()})
    if error is not None:
        raise error
    if failed:
        notes = "; ".join(f"rank {rank}: {kind}: {message}" for rank, (kind, message) in failed.items())
        raise HarnessError(f"{what} failed on {notes}")  # that rank's message says what to do
    return result


def leader_first(ranks: Ranks, what: str, step: Callable[[], Any], timeout_s: float | None = None) -> Any:
    """`step()` on every rank, in three turns: rank 0, then the first rank of each other machine, then the rest,
    each turn waiting for the one before. For a step that fetches or builds files once and finds them after (a
    download, an index, a conversion): one process makes them while the others wait, in a folder every machine
    shares or in one local to each. Each rank runs `step` once and gets its own result; an error on any rank is
    raised on every rank, at the end of the turn it happened in (see `together`)."""
    if not ranks.distributed:
        return step()
    done: list[Any] = []

    def turn(now: bool) -> None:
        if now and not done:
            done.append(step())

    turns = (("rank 0", ranks.leader), ("each machine's first rank", ranks.local_rank == 0), ("every rank", True))
    for who, now in turns:
        together(ranks, f"{what} ({who})", lambda now=now: turn(now), timeout_s=timeout_s)
    return done[0]


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE")) and int(os.environ["WORLD_SIZE"]) > 1


def timeout_from_env() -> float:
    raw = os.environ.get("HARNESS_DIST_TIMEOUT_S")
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise HarnessError(f"HARNESS_DIST_TIMEOUT_S={raw!r} is not a positive number of seconds")
    return value


def current() -> Ranks:
    """The ranks of the process group this process already belongs to, or a single process."""
    try:
        import torch.distributed as dist
    except ImportError:  # a torch built without distributed support
        return Ranks()
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), timeout_from_env())


@contextmanager
def process_group() -> Iterator[Ranks]:
    """The ranks of this run: under torchrun, the process group (joined here unless this process already belongs
    to one, and then left here on the way out); otherwise a single process. The one place the harness joins and
    leaves: `harness run` holds it around `runner.run`, and a script that calls `run` under torchrun does the same.
    A process cannot join a second group once it has left one, so a group joined before is kept."""
    ranks, joined = join()
    try:
        yield ranks
    finally:
        if joined:
            leave()


def join() -> tuple[Ranks, bool]:
    """Join the process group torchrun set up (initialising it if nobody has yet); (ranks, whether this call
    initialised it, so the caller knows to `leave()`). Prefer `process_group()`, which leaves for you."""
    if not launched_by_torchrun():
        return current(), False
    import torch.distributed as dist

    if dist.is_initialized():
        return current(), False
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if missing:
        raise HarnessError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} not: launch with torchrun "
                           f"(python -m torch.distributed.run), or unset RANK/WORLD_SIZE for a single process")
    timeout = timeout_from_env()
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    ranks = current()
    log.debug("joined the process group as rank %d of %d (local rank %d)", ranks.rank, ranks.world_size,
              ranks.local_rank)
    return ranks, True


def leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, ranks: Ranks) -> str:
    """Each rank of a node takes its own GPU: `auto` and `cuda` become cuda:LOCAL_RANK; an explicit cuda:N or
    cpu is kept as given."""
    if not ranks.distributed or device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        if device == "cuda":
            return device  # resolve_device explains that there is no CUDA device
        return "cpu"
    if ranks.local_rank >= torch.cuda.device_count():
        raise HarnessError(f"local rank {ranks.local_rank} has no GPU of its own: this node has "
                           f"{torch.cuda.device_count()}; start at most that many processes per node "
                           f"(--nproc_per_node)")
    torch.cuda.set_device(ranks.local_rank)
    return f"cuda:{ranks.local_rank}"
