"""Make `harness` importable for the benchmark scripts: the installed one when there is one, else the checkout,
assembled the way an install lays it out.

The checkout cannot go on sys.path as it is: its top-level `plugins/` and `leaderboard/` install as
`harness.plugins` and `harness.leaderboard` (pyproject.toml's package-dir), so the checkout's `harness/` alone has
neither. A temporary folder holding a `harness/` of symbolic links (every entry of the checkout's `harness/`, plus
`plugins` and `leaderboard`) is that layout without pip, for a machine where installing is not wanted (a GPU
image with its own torch).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure_harness() -> str:
    """Where `harness` will be imported from, making it importable first if it is not installed."""
    spec = importlib.util.find_spec("harness")
    if spec is not None and importlib.util.find_spec("harness.plugins") is not None:
        return f"installed {spec.origin}"
    target = Path(tempfile.mkdtemp(prefix="harness-checkout-"))
    package = target / "harness"
    package.mkdir()
    for entry in (REPO / "harness").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "plugins").symlink_to(REPO / "plugins")
    (package / "leaderboard").symlink_to(REPO / "leaderboard")
    sys.path.insert(0, str(target))
    return f"checkout {REPO} (laid out as installed in {target})"
