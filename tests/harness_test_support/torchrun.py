"""Launching two local CPU ranks with torchrun, and reading what each rank wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun(args: list[str], log_dir: Path, monitor_interval_s: float = 0.1) -> subprocess.Popen:
    """Two local ranks; --standalone picks a free port itself; each rank's output goes to its own files.

    `monitor_interval_s`: how often torchrun looks for a failed rank (its default, 0.1 s). Once it sees one it
    stops the others at once, so a test that reads what a surviving rank says of a dead one gives it longer."""
    # The worker script finds the support package itself; the repository root stays off sys.path (and is not the
    # working directory), as its harness/ folder would shadow the installed harness.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HARNESS_DIST_TIMEOUT_S": "120"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--log-dir", str(log_dir), "--redirects", "3", f"--monitor_interval={monitor_interval_s}", *args]
    return subprocess.Popen(command, env=env, cwd=log_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def rank_output(log_dir: Path, rank: int, stream: str) -> str:
    return next(log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")).read_text()
