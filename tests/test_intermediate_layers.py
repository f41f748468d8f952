"""The `layers` encoder option: features of intermediate blocks and stages, each choice its own row and cache entry,
several choices of one model from one forward pass per item.

Every expected vector is computed here with timm's (or open_clip's) own API on the same random weights and images,
not with the harness's code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.cli import build_parser, run_config
from harness.errors import HarnessError
from harness.layers import split_choices
from harness.plan import DatasetSpec, EncoderSpec
from harness.plugins.timm_encoders import TimmEncoder, random_encoder
from harness.runner import RunConfig, run
from harness.store import EmbeddingStore

SEED = 0  # the init seed of random: networks (their default)
PER_CLASS = 7  # synthetic: 3 classes -> 21 items per split (kNN needs 20 train items)
BATCH = 8  # 21 items -> 3 forward passes per split
DATASET = DatasetSpec("synthetic", {"classes": 3, "per_class": PER_CLASS})


def config(tmp_path, encoders, **kwargs) -> RunConfig:
    return RunConfig(encoders=encoders, datasets=[DATASET], evaluators=["knn"], results_dir=tmp_path / "results",
                     cache_dir=tmp_path / "cache", device="cpu", batch_size=BATCH, workers=0, progress=False,
                     **kwargs)


def stored(report, cache) -> dict[str, tuple[np.ndarray, dict]]:
    """Row name -> (test features as stored in its cache entry, its record)."""
    store = EmbeddingStore(cache)
    return {r["encoder"]["name"]: (np.asarray(store.load(r["cache_keys"]["test"]).features), r)
            for r in report.records}


def run_choices(tmp_path, plugins, encoder: str, layers: str):
    """Run kNN for `encoder` with the layer choices `layers`: (report, what `stored` reads from it)."""
    report = run(config(tmp_path, [encoder], encoder_options={"layers": layers}), plugins)
    assert not report.failures, report.failures
    return report, stored(report, tmp_path / "cache")


def model_and_batch(model_name: str, **kwargs):
    """The random network the harness builds for `random:<model_name>` (same seed), in eval mode, and the test
    split's images transformed as the encoder transforms them."""
    import timm

    from harness.plugins.synthetic import Synthetic

    torch.manual_seed(SEED)
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs).eval()
    split = Synthetic(classes=3, per_class=PER_CLASS).split("test")
    transform = TimmEncoder(model_name, weights=None).transform
    return model, torch.stack([transform(split[i][0]) for i in range(len(split))])


def test_the_spelling_of_layer_choices():
    assert split_choices("last, LAST4,stages:2,3,dinov2,last4") == ["last", "last4", "stages:2,3", "dinov2"]
    assert split_choices("stages:3, 1") == ["stages:1,3"]  # one spelling, one row and one cache key
    for bad, message in (("first", "unknown layers 'first'"), ("last0", "at least 1"),
                         ("stages:1,1", "names a stage twice"), (",", "names no choice")):
        with pytest.raises(HarnessError, match=message):
            split_choices(bad)


def test_vit_choices_equal_timm_forward_intermediates_from_one_forward_pass(tmp_path, harness_plugins):
    report, features = run_choices(tmp_path, harness_plugins(), "random:test_vit", "last,last4,dinov2,stages:0,2")
    rows = ["random:test_vit", "random:test_vit[layers=last4]", "random:test_vit[layers=dinov2]",
            "random:test_vit[layers=stages:0,2]"]
    assert sorted(features) == sorted(rows)
    # 21 items per split in batches of 8: 3 forward passes per split for the four choices together, not 12
    assert report.forward_passes == 2 * math.ceil(3 * PER_CLASS / BATCH) == 6

    model, batch = model_and_batch("test_vit")
    with torch.inference_mode():
        final, blocks = model.forward_intermediates(batch, indices=[0, 2, 3, 4, 5], norm=True, output_fmt="NLC",
                                                    return_prefix_tokens=True)
        tokens = {i: torch.cat([prefix, spatial], dim=1) for i, (spatial, prefix) in zip([0, 2, 3, 4, 5], blocks)}
        head = {i: model.forward_head(t, pre_logits=True) for i, t in tokens.items()}
        expected = {
            rows[0]: model.forward_head(model.forward_features(batch), pre_logits=True),
            rows[1]: torch.cat([head[i] for i in (2, 3, 4, 5)], dim=1),
            # DINOv2's create_linear_input: the 4 class tokens, then the mean of the last block's patch tokens
            rows[2]: torch.cat([tokens[i][:, 0] for i in (2, 3, 4, 5)] + [blocks[-1][0].mean(dim=1)], dim=1),
            rows[3]: torch.cat([head[0], head[2]], dim=1),
        }
    for row in rows:
        values, record = features[row]
        np.testing.assert_allclose(values, expected[row].numpy(), rtol=1e-5, atol=1e-5, err_msg=row)
        assert record["encoder"]["info"]["embedding_dim"] == expected[row].shape[1]
    layers = features[rows[2]][1]["encoder"]["info"]["layers"]
    assert layers["choice"] == "dinov2" and layers["indices"] == [2, 3, 4, 5] and layers["dim"] == 5 * 64
    assert len(layers["parts"]) == 5 and "class token" in layers["parts"][0]
    assert features[rows[1]][1]["encoder"]["fingerprint"]["layers"] == "last4"
    # one entry per choice and split; the joint entry of the shared pass is gone once cut
    entries = {p.name for p in (tmp_path / "cache" / "entries").iterdir()}
    assert entries == {r["cache_keys"][s] for _, r in features.values() for s in ("train", "test")}
    assert len(entries) == 8


def test_the_default_is_todays_encoder_exactly(tmp_path, harness_plugins):
    """`last` beside other choices (from the shared pass) gives the very vectors, cache keys, fingerprint and row of
    a run without the option."""
    plugins = harness_plugins()
    alone = run(config(tmp_path / "alone", ["random:test_vit"], encoder_options={}), plugins)
    shared = run(config(tmp_path / "shared", ["random:test_vit"],
                        encoder_options={"layers": "last,last2"}), plugins)
    [before] = alone.records
    after = next(r for r in shared.records if r["encoder"]["name"] == "random:test_vit")
    assert after["cache_keys"] == before["cache_keys"] and "layers" not in after["encoder"]["fingerprint"]
    assert after["encoder"]["fingerprint"] == before["encoder"]["fingerprint"]
    assert "layers" not in after["encoder"]["info"]
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            np.asarray(EmbeddingStore(tmp_path / "shared" / "cache").load(after["cache_keys"][split]).features),
            np.asarray(EmbeddingStore(tmp_path / "alone" / "cache").load(before["cache_keys"][split]).features))
    assert alone.forward_passes == shared.forward_passes == 6
    # beside a cache that holds `last` already, the other choices still take one pass per batch (last is a hit)
    more = run(config(tmp_path / "alone", ["random:test_vit"], encoder_options={"layers": "last,last2,dinov2"}),
               plugins)
    assert more.forward_passes == 6 and not more.failures
    hits = {e.key: e.cache_hit for e in more.extractions}
    assert all(hits[key] for key in before["cache_keys"].values())


def test_cnn_stages_are_global_average_pooled_feature_maps(tmp_path, harness_plugins):
    report, features = run_choices(tmp_path, harness_plugins(), "random:test_resnet", "last,last2,stages:1,3")
    assert report.forward_passes == 6
    model, batch = model_and_batch("test_resnet")
    with torch.inference_mode():
        final, maps = model.forward_intermediates(batch, indices=[1, 3, 4])
        pooled = {i: m.mean(dim=(2, 3)) for i, m in zip([1, 3, 4], maps)}
        expected = {"random:test_resnet": model.forward_head(model.forward_features(batch), pre_logits=True),
                    "random:test_resnet[layers=last2]": torch.cat([pooled[3], pooled[4]], dim=1),
                    "random:test_resnet[layers=stages:1,3]": torch.cat([pooled[1], pooled[3]], dim=1)}
    assert sorted(features) == sorted(expected)
    for row, values in expected.items():
        np.testing.assert_allclose(features[row][0], values.numpy(), rtol=1e-5, atol=1e-5, err_msg=row)
    channels = [f["num_chs"] for f in model.feature_info]
    assert features["random:test_resnet[layers=stages:1,3]"][1]["encoder"]["info"]["layers"]["dim"] == \
        channels[1] + channels[3]


def test_dinov2_recipe_leaves_out_register_tokens():
    """DINOv2's get_intermediate_layers: final norm on each block, class token = token 0, patch tokens after the
    class token and the registers. Written out block by block here, on a ViT with 4 registers."""
    import timm

    torch.manual_seed(SEED)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0, reg_tokens=4).eval()
    encoder = TimmEncoder("test_vit", weights=None, layers="dinov2")
    encoder.model = model  # the same architecture with registers (random_encoder takes no model arguments)
    batch = torch.randn(3, 3, 160, 160)
    with torch.inference_mode():
        x = model.norm_pre(model._pos_embed(model.patch_embed(batch)))
        outputs = []
        for block in model.blocks:
            x = block(x)
            outputs.append(model.norm(x))
        last4 = outputs[-4:]
        expected = torch.cat([o[:, 0] for o in last4] + [last4[-1][:, 1 + 4:].mean(dim=1)], dim=1)
        np.testing.assert_allclose(encoder.encode(batch).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_several_suite_entries_of_one_model_share_the_forward_pass(tmp_path, harness_plugins):
    from harness.suite import load_suite

    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "s.toml").write_text('''
[suite]
results_dir = "results"
cache_dir = "cache"
device = "cpu"
batch_size = 8
workers = 0
[[encoders]]
name = "random:test_vit"
[[encoders]]
name = "random:test_vit"
layers = "Last3"
[[encoders]]
name = "random:test_vit"
layers = "dinov2"
label = "vit-dinov2"
[[datasets]]
name = "synthetic"
options = { classes = 3, per_class = 7 }
[[evaluators]]
name = "knn"
''')
    plugins = harness_plugins()
    suite_config = load_suite(folder / "s.toml", plugins, ["knn"]).config
    suite_config.progress = False
    report = run(suite_config, plugins)
    assert not report.failures, report.failures
    assert sorted(r["encoder"]["name"] for r in report.records) == [
        "random:test_vit", "random:test_vit[layers=last3]", "vit-dinov2"]
    assert report.forward_passes == 6  # one pass per batch for the three rows
    again = run(suite_config, plugins)
    assert again.forward_passes == 0 and len(again.already_done) == 3


def test_a_choice_that_does_not_apply_is_refused_before_any_work(tmp_path, harness_plugins):
    plugins = harness_plugins()
    cases = [("random:test_resnet", "dinov2", r"random:test_resnet gives feature maps .*has 5 feature levels"),
             ("random:test_vit", "last7", r"'last7' asks for 7 blocks; random:test_vit has 6 blocks"),
             ("random:test_vit", "stages:1,6", r"asks for index 6; random:test_vit has 6 blocks, indexed 0\.\.5"),
             ("random:test_vit", "middle", r"unknown layers 'middle'")]
    for encoder, layers, message in cases:
        with pytest.raises(HarnessError, match=message):
            run(config(tmp_path, [encoder, "pixels"], encoder_options={"layers": layers}), plugins)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()
    with pytest.raises(HarnessError, match=r"lists 2 choices; an encoder takes one"):
        random_encoder("test_vit", layers="last,last4")
    with pytest.raises(HarnessError, match=r"dinov2' fixes its own pooling"):
        random_encoder("test_vit", layers="dinov2", pooling="mean")
    with pytest.raises(HarnessError, match=r"pooling 'cls' needs a model with a class token; test_resnet"):
        random_encoder("test_resnet", layers="last2", pooling="cls")


def test_command_line_and_suite_spellings(tmp_path, harness_plugins):
    plugins = harness_plugins()
    args = build_parser().parse_args(["run", "-e", "random:test_vit", "-e", "pixels", "--layers", "last,dinov2",
                                      "--eval", "knn"])
    cli = run_config(args, plugins)
    assert cli.encoder_options["layers"] == "last,dinov2"
    from harness.plan import build_encoders

    planned = build_encoders(cli, plugins)
    assert [p.label for p in planned] == ["random:test_vit", "random:test_vit[layers=dinov2]", "pixels"]
    assert planned[0].siblings == planned[1].siblings == [planned[0].encoder, planned[1].encoder]
    assert planned[2].siblings == []
    suite = tmp_path / "s.toml"
    suite.write_text('[[encoders]]\nname = "random:test_vit"\nlayers = "last,last4"\n'
                     '[[datasets]]\nname = "synthetic"\n')
    from harness.suite import load_suite

    with pytest.raises(HarnessError, match=r"encoders\[0\]\.layers: .*lists 2 choices"):
        load_suite(suite, plugins, ["knn"])
    with pytest.raises(HarnessError, match="--layers cannot be combined with --suite"):
        run_config(build_parser().parse_args(["run", "--suite", str(suite), "--layers", "last4"]), plugins)
    spec = EncoderSpec("random:test_vit", {"layers": "last4"})
    assert build_encoders(RunConfig(encoders=[spec]), plugins)[0].label == "random:test_vit[layers=last4]"


def test_open_clip_blocks_from_the_towers_forward_intermediates():
    """A small open_clip ViT, randomly initialised (no download): each choice against the tower's own API, and
    the `last` choice from the shared pass equal to encode_image."""
    open_clip = pytest.importorskip("open_clip")
    from harness.plugins.open_clip_encoders import OpenClipEncoder

    torch.manual_seed(SEED)
    model = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    encoders = [OpenClipEncoder("ViT-S-32", "random", layers=choice) for choice in ("last", "last2", "dinov2")]
    for encoder in encoders:
        encoder.model = model  # what load() builds, without weights to download
    assert len({e.forward_group() for e in encoders}) == 1
    batch = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        together = encoders[0].encode_together(batch, encoders)
        out = model.visual.forward_intermediates(batch, indices=[8, 9, 10, 11], normalize_intermediates=True,
                                                 output_fmt="NLC", output_extra_tokens=True, intermediates_only=True)
        classes = [prefix[:, 0] for prefix in out["image_intermediates_prefix"]]
        expected = [model.encode_image(batch), torch.cat(classes[2:], dim=1),
                    torch.cat(classes + [out["image_intermediates"][-1].mean(dim=1)], dim=1)]
    for encoder, got, want in zip(encoders, together, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5, err_msg=encoder.layers.spelling)
    assert encoders[2].info()["layers"]["dim"] == together[2].shape[1] == 5 * 384
    assert "layers" not in encoders[0].fingerprint() and encoders[1].fingerprint()["layers"] == "last2"
    with pytest.raises(HarnessError, match=r"'last13' asks for 13 blocks; open_clip:ViT-S-32@random has 12 blocks"):
        OpenClipEncoder("ViT-S-32", "random", layers="last13")
    with pytest.raises(HarnessError, match=r"RN50@random: its image tower is not an open_clip vision transformer"):
        OpenClipEncoder("RN50", "random", layers="last2")
