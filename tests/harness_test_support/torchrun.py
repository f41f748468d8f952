"""Launching two local CPU ranks with torchrun, and reading what each rank wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun(args: list[str], log_dir: Path) -> subprocess.Popen:
    """Two local ranks; --standalone picks a free port itself; each rank's output goes to its own files."""
    # The worker script finds the support package itself; the repository root stays off sys.path (and is not the
    # working directory), as its harness/ folder would shadow the installed harness.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HARNESS_DIST_TIMEOUT_S": "120"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--log-dir", str(log_dir), "--redirects", "3", *args]
    return subprocess.Popen(command, env=env, cwd=log_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def rank_output(log_dir: Path, rank: int, stream: str) -> str:
    return next(log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")).read_text()
