"""One row name, one encoder: a run refuses a name that the results already give to another encoder, and never
mistakes the same encoder for another one (issue 11; the second and third tests are the false alarms a review
found: float16 storage, and a transform whose repr holds a memory address)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.errors import HarnessError
from harness.plugin_manager import Plugins
from harness.plan import EncoderSpec
from harness.plugins.pixels import Pixels
from harness.runner import RunConfig, run
from harness_test_support.helpers import EncoderPlugin


def config(tmp_path, **kw) -> RunConfig:
    return RunConfig(**{"encoders": ["pixels"], "datasets": ["synthetic"], "evaluators": ["knn"],
                        "results_dir": tmp_path / "results", "cache_dir": tmp_path / "cache", "device": "cpu",
                        "progress": False, "resume": True, **kw})


def test_float16_storage_reruns_under_its_own_name(tmp_path):
    plugins = Plugins(entry_points=False)
    first = run(config(tmp_path, storage_dtype="float16"), plugins)
    again = run(config(tmp_path, storage_dtype="float16"), plugins)
    assert not first.failures and len(again.already_done) == 1 and not again.records


SCRIPT = """
import sys, torch
from torchvision import transforms
import harness
from harness.errors import HarnessError

def to_tensor(image):  # a plain function: its repr holds a memory address that differs in every process
    return transforms.ToTensor()(image.resize((16, 16)))

torch.manual_seed(int(sys.argv[2]))
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
try:
    harness.evaluate_model(model, to_tensor, name="tiny", datasets=["synthetic"], evaluators=["knn"],
                           results_dir=sys.argv[1] + "/results", cache_dir=sys.argv[1] + "/cache", device="cpu",
                           progress=False)
except HarnessError as error:
    print(error)
    sys.exit(2)
"""


def test_the_same_model_and_transform_in_another_process_is_the_same_row(tmp_path):
    def evaluate(weights_seed: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(weights_seed)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    assert evaluate(0).returncode == 0
    again = evaluate(0)
    assert again.returncode == 0, again.stdout + again.stderr
    other = evaluate(1)  # other weights under the same name: refused
    assert other.returncode == 2 and "differs in: weights_sha256;" in other.stdout, other.stdout + other.stderr


class OtherPixels(Pixels):
    """Another encoder (its fingerprint differs from pixels')."""

    def fingerprint(self):
        return {**super().fingerprint(), "variant": "other"}


def test_a_suite_label_naming_another_encoders_row_is_refused_until_forced(tmp_path, harness_plugins):
    plugins = harness_plugins(EncoderPlugin("other-pixels", OtherPixels))
    run(config(tmp_path), plugins)
    as_pixels = [EncoderSpec(name="other-pixels", label="pixels")]
    with pytest.raises(HarnessError, match=r"a row named 'pixels' from another encoder \(it differs in: variant;"):
        run(config(tmp_path, encoders=as_pixels), plugins)
    assert not list((tmp_path / "cache" / "entries").iterdir())[2:]  # refused before any extraction (2: pixels')
    replaced = run(config(tmp_path, encoders=as_pixels, force=True), plugins)
    assert not replaced.failures and replaced.records[0]["encoder"]["fingerprint"]["variant"] == "other"
