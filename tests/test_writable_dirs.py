"""A results or cache directory that cannot be written is reported before any work, in one line naming it and the
option to change (issue 11: a read-only results directory was found only after the extraction)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

RUN = ["-m", "harness", "run", "-e", "pixels", "-d", "synthetic", "--eval", "knn", "--no-progress"]


def _as_another_user() -> list[str]:
    """Permission bits do not stop root (CI runs as root): there, the command runs as `nobody`, through setpriv."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux) to drop to another user")
    nobody = pwd.getpwnam("nobody")
    user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    if subprocess.run([*user, sys.executable, "-c", "import harness"], capture_output=True).returncode != 0:
        # tox makes its .tox folder 0700: `nobody` cannot import this environment's packages there. The refusal
        # is also checked in-process: test_faults.py::test_disk_full_or_not_writable_is_a_clear_error_...
        pytest.skip("`nobody` cannot import harness from this environment (tox's .tox is private to root)")
    return user


def _run(*args: str, cwd: Path, user: list[str] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*user, sys.executable, *RUN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_read_only_results_directory_is_refused_before_extraction():
    base = Path(tempfile.mkdtemp())  # not tmp_path: `nobody` must be able to enter it
    try:
        base.chmod(0o755)
        results, cache = base / "results", base / "cache"
        results.mkdir(mode=0o555)
        results.chmod(0o555)
        cache.mkdir()
        cache.chmod(0o777)
        done = _run("--results-dir", str(results), "--cache-dir", str(cache), cwd=base, user=_as_another_user())
        assert done.returncode == 2, done.stderr
        assert (f"error: cannot write to the results directory {str(results)!r}: Permission denied; make it "
                f"writable") in done.stderr
        assert "--results-dir" in done.stderr and "Traceback" not in done.stderr
        assert list(cache.iterdir()) == []  # refused before the first extraction
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_results_directory_below_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "results.txt").write_text("not a directory")
    done = _run("--results-dir", str(tmp_path / "results.txt" / "run1"), "--cache-dir", str(tmp_path / "cache"),
                cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (f"the results directory {str(tmp_path / 'results.txt' / 'run1')!r} cannot be a directory: "
            f"{str(tmp_path / 'results.txt')!r} is a file") in done.stderr
    assert "NotADirectoryError" not in done.stderr
    assert not (tmp_path / "cache").exists()  # nothing extracted


def test_a_cache_directory_that_is_a_file_is_refused_and_nothing_is_created(tmp_path):
    from harness.errors import HarnessError
    from harness.files import check_writable_dir

    (tmp_path / "cache").write_text("")
    with pytest.raises(HarnessError, match="the embedding cache .* is a file; remove it or choose another "
                                           "--cache-dir"):
        check_writable_dir(tmp_path / "cache", "embedding cache", "--cache-dir")
    check_writable_dir(tmp_path / "new" / "cache", "embedding cache", "--cache-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the check leaves nothing behind


def test_a_broken_symbolic_link_as_results_directory_is_named(tmp_path):
    from harness.errors import HarnessError
    from harness.files import check_writable_dir

    (tmp_path / "results").symlink_to(tmp_path / "gone")
    with pytest.raises(HarnessError, match="is a symbolic link to nothing; fix or remove it"):
        check_writable_dir(tmp_path / "results" / "sub", "results directory", "--results-dir")


def test_a_read_only_cache_that_holds_the_embeddings_still_serves_them():
    """A shared cache others filled, read-only here: every split it holds is used; the run warns, not refuses."""
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        cache = base / "cache"
        first = _run("--results-dir", str(base / "mine"), "--cache-dir", str(cache), cwd=base)  # fills it
        assert first.returncode == 0, first.stderr
        for folder in [cache, *cache.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o555)
        results = base / "theirs"
        results.mkdir()
        results.chmod(0o777)
        again = _run("--results-dir", str(results), "--cache-dir", str(cache), cwd=base, user=_as_another_user())
        assert again.returncode == 0, again.stderr
        assert f"cannot write to the embedding cache {str(cache)!r}" in again.stderr
        assert "only the embeddings it already holds can be used" in again.stderr
        assert "came from the cache: no forward pass was run" in again.stderr
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
