"""benchmarks/gpu_check.py, in its CPU smoke mode: it runs without umap, hdbscan or open_clip (as on a GPU image),
and reports every measurement with real numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark script in a subprocess

REPO = Path(__file__).resolve().parents[1]

# Importing any of these makes the run fail, as it would on a machine without them.
RUN_WITHOUT_OPTIONAL = """
import runpy, sys
sys.modules.update(dict.fromkeys(["umap", "hdbscan", "open_clip"]))
sys.argv = [sys.argv[1], "--smoke", "--json", sys.argv[2]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_check_smoke_reports_every_measurement(tmp_path):
    out = tmp_path / "rows.json"
    # The installed harness, as the tests use it: neither PYTHONPATH nor the working directory is the checkout,
    # whose harness/ folder would shadow the installed one (without harness.plugins, which is plugins/ there).
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_OPTIONAL, str(REPO / "benchmarks" / "gpu_check.py"),
                             str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stdout = result.stdout
    assert "device: CPU" in stdout
    expected = [f"extraction {model}, {kind}" for model in ("test_vit", "test_efficientnet")
                for kind in ("pre-decoded tensors", "JPEG files decoded in workers")]
    expected += ["kNN 2,000 x 32, 200 queries", "linear probe 300 x 32, 3 classes"]
    for measurement in expected:
        assert measurement in stdout, measurement
    rows = {row["measurement"]: row for row in json.loads(out.read_text())["rows"]}
    assert len(rows) == len(expected)
    for name, row in rows.items():
        assert float(row["harness"].replace(",", "")) > 0, row
        if not name.startswith("linear"):
            assert row["ratio"] > 0 and float(row["reference"].replace(",", "")) > 0, row
    # Both evaluators really classified: well-separated classes, chance 1/3 for the probe, 1/100 for kNN.
    linear = rows["linear probe 300 x 32, 3 classes (s)"]
    assert float(linear["note"].split("test top-1 ")[1].split(",")[0]) > 0.8
    knn = rows["kNN 2,000 x 32, 200 queries (s)"]
    assert float(knn["note"].split("top-1 (k=20) ")[1].split(";")[0]) > 0.1
