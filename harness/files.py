"""Writing files so that a reader sees all of a file or none of it, and hashing files.

Every file the harness writes (cache shards and entries, records, predictions) goes through `atomic_file`: the
bytes go to a temporary name in the same directory, are flushed to disk, and only then renamed into place. A
process killed mid-write leaves at most a hidden temporary file, never a truncated file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(json.dumps(value, indent=2, allow_nan=False, default=str))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
