"""Writing files so that a reader sees all of a file or none of it, and hashing files.

Every file the harness writes (cache shards and entries, records, predictions) goes through `atomic_file`: the
bytes go to a temporary name in the same directory, are flushed to disk, and only then renamed into place. A
process killed mid-write leaves at most a hidden temporary file, never a truncated file under the real name;
`remove_stale_temps` clears such leftovers of dead processes on the next write into that directory.

`writes_into` turns "disk full" and "permission denied" into a `HarnessError` that names the directory and what
to do, instead of a traceback from deep inside numpy.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from harness.errors import HarnessError

_HOST = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname()) or "host"
#: `.<name>.tmp-<host>-<pid>` (or `.trash-`): the host is part of the name so that a cache shared between
#: machines never has one machine remove another's file in flight.
_TEMP_NAME = re.compile(r"^\..+\.(?:tmp|trash)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)$")

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def temp_path(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A hidden sibling of `path` owned by this process (readers skip names starting with a dot)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{_HOST}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temp_target(name: str) -> str | None:
    """The name of what a temporary file or directory was for (`key` for `.key.tmp-host-pid`), when `name` is
    one of ours left by a dead process of this host; None for anything else (a live writer's included)."""
    match = _TEMP_NAME.match(name)
    if not match or match["host"] != _HOST or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
        return None
    return name[1:].rsplit(".", 1)[0]


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Remove temporary files and directories left in `directory` by dead processes of this host; their count."""
    removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if stale_temp_target(name) is None:
            continue
        path = Path(directory, name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


class AtomicWrites:
    """Several files written to temporary names, flushed to disk, and only then renamed into place in the order
    they were written. A failure (disk full, killed) while writing any of them leaves every file under its real
    name as it was: records use it so that a failed rewrite never pairs an old record with new predictions."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    @contextmanager
    def file(self, path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
        path = Path(path)
        tmp = temp_path(path)
        self._staged.append((tmp, path))
        try:
            with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            if error.filename is None:  # write() and fsync() errors name no file; say which one it was
                error.filename = str(path)
            raise

    def __enter__(self) -> "AtomicWrites":
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if kind is None:
                for tmp, path in self._staged:
                    os.replace(tmp, path)
        finally:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    with AtomicWrites() as writes, writes.file(path, mode) as handle:
        yield handle


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(json.dumps(value, indent=2, allow_nan=False, default=str))


@contextmanager
def writes_into(directory: str | os.PathLike, what: str, option: str) -> Iterator[None]:
    """Report a full disk or a refused write under `directory` as a HarnessError saying what to do.

    Only errors about files under `directory` are translated (an unreadable input image stays what it is)."""
    try:
        yield
    except OSError as error:
        if error.errno not in NO_SPACE | NO_PERMISSION or not _under(error.filename, directory):
            raise
        advice = _advice(error, option)
        raise HarnessError(f"cannot write to the {what} {str(directory)!r}: {error.strerror or error} "
                           f"({error.filename}); {advice}. Nothing half-written was left behind.") from error


def _advice(error: OSError, option: str) -> str:
    if error.errno in NO_SPACE:
        return f"free some space there, or choose another {option}"
    return f"make it writable (permissions, a read-only mount), or choose another {option}"


def check_writable_dir(directory: str | os.PathLike, what: str, option: str) -> None:
    """Raise a HarnessError naming `directory` and `option` unless a file can be written there (into its nearest
    existing ancestor, when it is still to be created): a run checks its results and cache directories before any
    work, so that a read-only directory is not found only after an hour of extraction. Leaves nothing behind."""
    problem = writable_dir_problem(directory, what, option)
    if problem is not None:
        raise HarnessError(f"{problem} (nothing was computed yet)")


def writable_dir_problem(directory: str | os.PathLike, what: str, option: str) -> str | None:
    """Why no file can be written into `directory` (see `check_writable_dir`), or None when one can."""
    path = existing = Path(directory).absolute()
    try:
        existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
        if existing.is_symlink() and not existing.exists():
            return (f"the {what} {str(directory)!r} cannot be a directory: {str(existing)!r} is a symbolic link to "
                    f"nothing; fix or remove it, or choose another {option}")
        if not existing.is_dir():
            return (f"the {what} {str(directory)!r} cannot be a directory: {str(existing)!r} is a file; remove it "
                    f"or choose another {option}")
        probe = temp_path(existing / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:  # also a parent this user may not enter
        where = "" if existing == path else f" (it would be created in {str(existing)!r})"
        return (f"cannot write to the {what} {str(directory)!r}{where}: {error.strerror or error}; "
                f"{_advice(error, option)}")
    return None


def _under(filename: Any, directory: str | os.PathLike) -> bool:
    if filename is None:
        return False
    try:
        return Path(os.path.abspath(os.fsdecode(filename))).is_relative_to(os.path.abspath(directory))
    except (TypeError, ValueError):
        return False


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
