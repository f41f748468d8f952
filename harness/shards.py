"""The shard file format of an extraction in progress: `partial/<key>/plan.json` and `shard-NNNNN.npz`.

Each shard holds the vectors, labels and indices of `shard_size` consecutive items (fewer for the last one), and
the indices and reasons of the items skipped in it; it is written atomically, so a shard on disk is complete or
absent, and a torn or short one is deleted and redone.

A shard that takes long (a slow encoder, a CPU) is also saved in pieces as it goes, `piece-SSSSS-BEGIN-END.npz`
(items BEGIN to END of shard SSSSS), after the first batch past each `ExtractionOptions.piece_every_s` seconds:
an interrupted run then loses about that much work and the batches in flight, whatever the shard size. The pieces are merged into the shard when it is done.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.files import atomic_file, remove_stale_temps, write_json_atomic


class ShardedExtraction:
    """The partial directory of one key: which shards exist, and writing new ones atomically.

    The layout depends only on (n, shard_size), never on the number of ranks, so shards written by a run of any
    world size (one process included) are reused by a rerun of any other."""

    def __init__(self, directory: Path, n: int, shard_size: int, create: bool = True) -> None:
        self.directory = directory
        self.n = n
        self.shard_size = shard_size
        plan = {"n": n, "shard_size": shard_size}
        plan_path = directory / "plan.json"
        if not create:  # a rank other than 0: rank 0 wrote the plan; this rank must agree with it
            try:
                written = json.loads(plan_path.read_text())
            except (OSError, ValueError) as error:
                raise HarnessError(f"cannot read the extraction plan {plan_path} that rank 0 wrote ({error}); "
                                   f"--cache-dir must be one directory shared by every node") from error
            if written != plan:
                raise HarnessError(f"the extraction plan {plan_path} says {written}, this rank computed {plan}; "
                                   f"every rank must run the same command on the same data")
            return
        if directory.exists():
            try:
                same_plan = json.loads(plan_path.read_text()) == plan
            except (OSError, ValueError):
                same_plan = False
            if not same_plan:  # shards of another layout cannot be reused
                shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(directory)  # a shard a killed process was writing
        if not plan_path.exists():
            write_json_atomic(plan_path, plan)

    @property
    def count(self) -> int:
        return (self.n + self.shard_size - 1) // self.shard_size

    def bounds(self, shard: int) -> tuple[int, int]:
        return shard * self.shard_size, min(self.n, (shard + 1) * self.shard_size)

    def missing(self) -> list[int]:
        """The shards not yet on disk (or unreadable, and then removed), in order; no shard's vectors are read."""
        return [s for s in range(self.count) if self.read(s, features=False) is None]

    def path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:05d}.npz"

    def piece_path(self, shard: int, begin: int, end: int) -> Path:
        return self.directory / f"piece-{shard:05d}-{begin:010d}-{end:010d}.npz"

    def resume_point(self, shard: int) -> int:
        """The first item of a missing `shard` that its pieces on disk do not hold (its first item when none do).

        Pieces that do not continue the run of pieces from the shard's start (torn, or after a gap) are removed."""
        position = self.bounds(shard)[0]
        for path in sorted(self.directory.glob(f"piece-{shard:05d}-*.npz")):
            begin, end = (int(part) for part in path.stem.split("-")[2:4])
            if begin != position or self._read_file(path, begin, end, features=False) is None:
                path.unlink(missing_ok=True)
                continue
            position = end
        return position

    def read(self, shard: int, features: bool = True) -> dict[str, np.ndarray] | None:
        """A finished shard, or None when it is absent or unreadable (then it is simply redone).

        `features=False` reads everything but the vectors (and their shape from the array header only): a cheap
        check that a shard is there, so a resume never holds every shard's vectors in memory."""
        return self._read_file(self.path(shard), *self.bounds(shard), features=features)

    def _read_file(self, path: Path, start: int, stop: int, features: bool) -> dict[str, np.ndarray] | None:
        """The arrays of a shard or piece file holding items start to stop, or None (and the file removed) when
        it is absent, unreadable or holds another number of items."""
        if not path.exists():
            return None
        try:
            # Opened here, not by np.load: numpy leaks its own handle when the zip inside is torn.
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("labels", "indices", "skipped", "skip_reasons")}
                if features:
                    arrays["features"] = data["features"]
                    arrays["shape"] = np.array(arrays["features"].shape)
                else:
                    arrays["shape"] = np.array(_npz_member_shape(data, "features"))
        except Exception:  # noqa: BLE001 - a torn shard is redone, whatever numpy says about it
            path.unlink(missing_ok=True)
            return None
        if len(arrays["indices"]) + len(arrays["skipped"]) != stop - start:
            path.unlink(missing_ok=True)
            return None
        return arrays

    def write_piece(self, shard: int, begin: int, end: int, arrays: dict[str, np.ndarray]) -> None:
        """Save items begin to end of an unfinished shard (see `resume_point`)."""
        _save(self.piece_path(shard, begin, end), arrays)

    def write(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        """Save the finished `shard`: its pieces on disk followed by `arrays` (the items after them); then the
        pieces are removed."""
        pieces = sorted(self.directory.glob(f"piece-{shard:05d}-*.npz"))
        parts, position = [], self.bounds(shard)[0]
        for path in pieces:
            begin, end = (int(part) for part in path.stem.split("-")[2:4])
            piece = self._read_file(path, begin, end, features=True) if begin == position else None
            if piece is None:
                raise HarnessError(f"{path} became unreadable, or does not follow the pieces before it, while its "
                                   f"shard was finished; rerun to redo it")
            parts.append(piece)
            position = end
        covered = [*arrays["indices"], *arrays["skipped"]]
        if covered and min(covered) != position:
            raise HarnessError(f"shard {shard} of {self.directory.name}: its pieces end at item {position}, the rest "
                               f"starts at item {min(covered)}; rerun to redo it")
        parts.append(arrays)
        with_vectors = [p["features"] for p in parts if len(p["indices"])]
        merged = {key: np.concatenate([p[key] for p in parts]) for key in ("labels", "indices", "skipped",
                                                                             "skip_reasons")}
        merged["features"] = np.concatenate(with_vectors) if with_vectors else arrays["features"]
        _save(self.path(shard), merged)
        for path in pieces:
            path.unlink(missing_ok=True)


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_file(path) as handle:
        np.savez(handle, **{key: arrays[key] for key in ("features", "labels", "indices", "skipped",
                                                          "skip_reasons")})


def _npz_member_shape(data: Any, name: str) -> tuple[int, ...]:
    """The shape of one array of an open `.npz`, from its header, without reading the array."""
    with data.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                  np.lib.format.read_array_header_2_0)
        return tuple(header(member)[0])
