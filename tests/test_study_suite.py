"""examples/suites/clustering-study.toml, Lowe et al.'s comparison as a suite: every name in it resolves offline
(timm's and open_clip's registries of pretrained weights, the harness's datasets and torchvision's classes,
Hugging Face ids in the `hfds:<owner>/<name>` form with known options), the file validates with `load_suite`, and
the run it describes plans without building a model, reading data or touching the network.

`hfds:` datasets resolve in the registry only where `harness.plugins.hf_datasets` is installed; without it, the
form of their names and options is still checked here, and `load_suite` is run on the suite without them."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.errors import HarnessError
from harness.plugin_manager import Plugins
from harness.suite import load_suite, parse_suite_file

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "examples" / "suites" / "clustering-study.toml"
HF_DATASETS_PLUGIN = "harness.plugins.hf_datasets"
#: `hfds:<owner>/<name>`: a hub id (a local path would not be portable in a shipped suite).
HFDS_ID = re.compile(r"^hfds:[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: The keyword options of the `hfds` factory, as issue 13 fixes them for every part; each a string.
HFDS_OPTIONS = frozenset({"config", "train_split", "test_split", "image_column", "label_column", "revision"})
#: What the suite holds: ten rows (two MAE poolings of one network), eight torchvision sets, five hub sets.
N_ENCODERS, N_BUILTIN_DATASETS, N_HUB_DATASETS = 10, 8, 5


def hfds_installed() -> bool:
    return importlib.util.find_spec(HF_DATASETS_PLUGIN) is not None


# -- the checker ------------------------------------------------------------------------------------------------

def timm_pooling_problems(architecture: str, table: dict[str, Any]) -> list[str]:
    """A pooling the encoder takes, and `cls` only on a network that has a class token (built on the meta device:
    no memory, no weights)."""
    import timm
    import torch

    from harness.plugins.timm_encoders import POOLINGS

    pooling = table.get("pooling", "default")
    if pooling not in POOLINGS:
        return [f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}"]
    if pooling == "cls":
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False)
        if not getattr(model, "num_prefix_tokens", 0):
            return [f"pooling 'cls' on {architecture}, which has no class token"]
    return []


def encoder_problems(table: dict[str, Any], plugins: Plugins) -> list[str]:
    import timm

    name = table["name"]
    prefix, _, argument = name.partition(":")
    if prefix in ("timm", "random"):
        model, _, weights = argument.partition("@")
        architecture, _, tag = model.partition(".")
        if not timm.is_model(architecture):
            return [f"timm has no architecture {architecture!r}"]
        if prefix == "timm" and not (weights or "weights" in table):
            if not tag:
                return ["name the pretrained tag (timm:<model>.<tag>), so that the weights are the study's"]
            if model not in timm.list_pretrained():
                return [f"timm has no pretrained weights {model!r}"]
        return timm_pooling_problems(architecture, table)
    if prefix == "open_clip":
        import open_clip

        architecture, _, tag = argument.partition("@")
        if (architecture, tag) not in open_clip.list_pretrained():
            return [f"open_clip has no pretrained ({architecture!r}, {tag!r})"]
        return []
    return [] if name in plugins.encoders else [f"no encoder {name!r} in the harness's registry"]


def dataset_problems(table: dict[str, Any], plugins: Plugins) -> list[str]:
    import torchvision

    from harness.plugins.torchvision_sets import SETS

    name, options = table["name"], table.get("options", {})
    if name.partition(":")[0] == "hfds":
        problems = [] if HFDS_ID.match(name) else [f"{name!r} is not hfds:<owner>/<name>"]
        problems += [f"hfds takes no option {key!r} (it takes {', '.join(sorted(HFDS_OPTIONS))})"
                     for key in sorted(set(options) - HFDS_OPTIONS)]
        problems += [f"option {key} = {value!r} is not a string" for key, value in options.items()
                     if not isinstance(value, str)]
        return problems
    if name not in plugins.datasets:
        return [f"no dataset {name!r} in the harness's registry"]
    if name in SETS and not hasattr(torchvision.datasets, SETS[name].tv_class):
        return [f"torchvision.datasets has no class {SETS[name].tv_class!r}"]
    return []


def name_problems(path: Path, plugins: Plugins) -> list[str]:
    """One line for every name in the suite at `path` that does not resolve offline."""
    data = parse_suite_file(path)
    problems = []
    for kind, check in (("encoders", encoder_problems), ("datasets", dataset_problems)):
        for index, table in enumerate(data[kind]):
            problems += [f"{kind}[{index}] {table['name']!r}: {p}" for p in check(table, plugins)]
    for index, table in enumerate(data.get("evaluators", [])):
        if table["name"] not in plugins.evaluators:
            problems.append(f"evaluators[{index}] {table['name']!r}: no such evaluator")
    return problems


def without_hub_datasets(text: str) -> str:
    """The suite's text without its `hfds:` dataset tables (a table runs to the next `[[` header)."""
    blocks = re.split(r"(?m)^(?=\[\[)", text)
    return "".join(block for block in blocks if not re.search(r'(?m)^name = "hfds:', block))


# -- fixtures ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def no_network_or_downloads(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Iterator[dict[str, Path]]:
    """No host lookup or connection succeeds (each attempt is kept), and the download places point into empty
    folders under `folder`; on the way out, an attempt or a written file is an AssertionError naming it."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[:2])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    homes = {var: folder / var.lower() for var in ("HF_HOME", "TORCH_HOME", "HARNESS_DATA_ROOT", "XDG_CACHE_HOME")}
    for var, home in homes.items():
        home.mkdir(parents=True)
        monkeypatch.setenv(var, str(home))
    yield homes
    assert attempts == [], f"the network was asked for: {attempts}"
    written = [str(p) for home in homes.values() for p in home.rglob("*")]
    assert written == [], f"downloaded or written: {written}"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Path]]:
    with no_network_or_downloads(monkeypatch, tmp_path / "offline") as homes:
        yield homes


@pytest.fixture
def plugins() -> Plugins:
    return Plugins(entry_points=False)


@pytest.fixture
def runnable_suite(tmp_path: Path) -> Path:
    """The suite as shipped where the `hfds` plugin is installed; else a copy without its hub datasets."""
    if hfds_installed():
        return SUITE
    copy = tmp_path / SUITE.name
    copy.write_text(without_hub_datasets(SUITE.read_text()))
    return copy


# -- tests ------------------------------------------------------------------------------------------------------

def test_every_name_in_the_study_suite_resolves_offline(offline, plugins):
    assert name_problems(SUITE, plugins) == []
    data = parse_suite_file(SUITE)
    hub = [t["name"] for t in data["datasets"] if t["name"].startswith("hfds:")]
    assert (len(data["encoders"]), len(data["datasets"]) - len(hub), len(hub)) == \
        (N_ENCODERS, N_BUILTIN_DATASETS, N_HUB_DATASETS)


@pytest.mark.parametrize(("written", "mistyped", "problem"), [
    ('"timm:vit_base_patch16_224.dino"', '"timm:vit_base_patch16_224.dinoo"', "no pretrained weights"),
    ('"timm:resnet50.tv2_in1k"', '"timm:resnet5O.tv2_in1k"', "no architecture 'resnet5O'"),
    ('"timm:resnet50.tv2_in1k"', '"timm:resnet50"', "name the pretrained tag"),
    ('"random:resnet50"', '"random:resnet05"', "no architecture 'resnet05'"),
    ('"open_clip:RN50@openai"', '"open_clip:RN50@opena"', "open_clip has no pretrained ('RN50', 'opena')"),
    ('"timm:resnet50.tv2_in1k"', '"timm:resnet50.tv2_in1k"\npooling = "cls"', "which has no class token"),
    ('name = "fashion-mnist"', 'name = "fashion_mnist"', "no dataset 'fashion_mnist'"),
    ('"hfds:tanganke/stanford_cars"', '"hfds:stanford_cars"', "is not hfds:<owner>/<name>"),
    ('label_column = "variant"', 'label_col = "variant"', "hfds takes no option 'label_col'"),
    ('[[evaluators]]\nname = "clustering-study"', '[[evaluators]]\nname = "clustering-studdy"', "no such evaluator"),
])
def test_the_checker_finds_a_mistyped_name(tmp_path, plugins, written, mistyped, problem):
    text = SUITE.read_text()
    assert text.count(written) == 1, f"{written!r} should occur once in the suite"
    copy = tmp_path / "mistyped.toml"
    copy.write_text(text.replace(written, mistyped))
    problems = name_problems(copy, plugins)
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_study_choices_of_pooling_seeds_and_evaluator():
    """Class token for every ViT row but the one named for its mean pooling; run seed 1 with one clustering seed,
    which is the study's clustering seed 1 (clustering seeds of run seed s: n_seeds * s + i, i < n_seeds)."""
    data = parse_suite_file(SUITE)
    vits = [t for t in data["encoders"] if "vit_" in t["name"]]
    assert {t.get("pooling") for t in vits if "mean" not in t.get("label", "")} == {"cls"}
    assert [t["pooling"] for t in vits if "mean" in t.get("label", "")] == ["mean"]
    assert data["suite"]["seeds"] == [1]
    assert data["evaluators"] == [{"name": "clustering-study", "options": {"n_seeds": 1}}]
    n_seeds, run_seed = 1, 1
    assert [n_seeds * run_seed + i for i in range(n_seeds)] == [1]
    from harness.plugins.clustering.protocol import clustering_seeds

    assert clustering_seeds(run_seed, n_seeds) == [1]


def test_the_offline_guard_catches_a_download(monkeypatch, tmp_path, plugins):
    """The guard the other tests run under fails when something does reach for the network: a torchvision set
    asked for its test split with an empty data root tries to download it."""
    with pytest.raises(AssertionError, match="the network was asked for"):
        with no_network_or_downloads(monkeypatch, tmp_path) as homes:
            dataset = plugins.dataset("mnist", data_root=str(homes["HARNESS_DATA_ROOT"]))
            with pytest.raises(HarnessError):
                dataset.split("test")


def test_the_suite_validates_with_load_suite(offline, plugins, runnable_suite):
    suite = load_suite(runnable_suite, plugins, default_evaluators=["knn"])
    config = suite.config
    assert suite.name == "clustering-study"
    assert config.seeds == [1]
    assert config.evaluators == ["clustering-study"]  # the file's, not the default list given above
    assert config.evaluator_options == {"clustering-study": {"n_seeds": 1}}
    assert len(config.encoders) == N_ENCODERS
    expected = N_BUILTIN_DATASETS + (N_HUB_DATASETS if hfds_installed() else 0)
    assert len(config.datasets) == expected
    # Nowhere to write is named: results and cache go where the person running it is, as with `harness run`.
    defaults = type(config)()
    assert (config.results_dir, config.cache_dir, config.dataset_options) == \
        (defaults.results_dir, defaults.cache_dir, defaults.dataset_options)


def test_the_hub_datasets_resolve_in_the_registry(plugins):
    pytest.importorskip(HF_DATASETS_PLUGIN)  # the `hfds` prefix is another part of issue 13
    import inspect

    from harness.plan import options_for

    for table in parse_suite_file(SUITE)["datasets"]:
        if not table["name"].startswith("hfds:"):
            continue
        entry, argument = plugins.datasets.resolve(table["name"])
        assert entry.name == "hfds" and argument == table["name"][len("hfds:"):]
        assert HFDS_OPTIONS <= set(inspect.signature(entry.factory).parameters)
        accepted, _ = options_for(entry.factory, table.get("options", {}))
        assert accepted == table.get("options", {})


def test_the_run_plans_without_models_data_or_network(offline, plugins, runnable_suite):
    """The rows, columns and cells of the run, built as the runner builds them before extraction: no weights
    loaded, no dataset read or downloaded, nothing asked of the network."""
    from harness.plan import build_dataset, build_encoders, build_evaluators
    from harness.records import cell_key

    config = load_suite(runnable_suite, plugins, default_evaluators=[]).config
    planned = build_encoders(config, plugins)
    assert all(getattr(p.encoder, "model", None) is None for p in planned)
    labels = [p.label for p in planned]
    assert len(set(labels)) == N_ENCODERS, labels
    # The two MAE rows read one forward pass; no other rows share one.
    shared = sorted(p.label for p in planned if len(p.siblings) > 1)
    assert shared == ["mae-vitb16 (mean of patch tokens)", "timm:vit_base_patch16_224.mae[pooling=cls]"], shared
    evaluators = build_evaluators(config, plugins)
    assert [(e.name, e.protocol, e.options["n_seeds"]) for e in evaluators] == \
        [("clustering-study", "clustering/lowe-study-v1", 1)]
    datasets = [build_dataset(spec, config, plugins) for spec in config.datasets
                if not spec.name.startswith("hfds:")]  # a hub dataset may ask the hub who it is when built
    assert len(datasets) == N_BUILTIN_DATASETS
    # The clustering evaluator reads `test` alone: one cell per row, dataset and seed.
    cells = {cell_key(p.label, d.name, e.name, e.protocol, e.options, seed, "test")
             for p in planned for d in datasets for e in evaluators for seed in config.seeds}
    assert len(cells) == N_ENCODERS * N_BUILTIN_DATASETS


# -- the README's estimate --------------------------------------------------------------------------------------

#: Test images of the hub sets, from their published descriptions (they cannot be counted offline).
HUB_TEST_IMAGES = {"hfds:HuggingFaceM4/FGVC-Aircraft": 3_333, "hfds:tanganke/stanford_cars": 8_041,
                   "hfds:axiong/imagenet-r": 30_000, "hfds:songweig/imagenet_sketch": 50_889,
                   "hfds:flwrlabs/celeba": 19_962}


def builtin_test_images(name: str) -> int:
    """A torchvision set's test images, read from the harness's own description of it (EuroSAT: its test
    fraction of the 27,000 images)."""
    from harness.plugins import torchvision_sets as tvs

    description = tvs.SETS[name].description
    if name == "eurosat":
        total = int(re.search(r"([\d,]+) images", description)[1].replace(",", ""))
        return round(total * tvs.EUROSAT_TEST_FRACTION)
    return int(re.search(r"([\d,]+) (?:train / val / )?test", description)[1].replace(",", ""))


def feature_dim(table: dict[str, Any]) -> int:
    """The length of one row's feature vector, from the libraries' model configs (meta device: no weights)."""
    import timm
    import torch

    from harness.plugins.pixels import SIDE

    prefix, _, argument = table["name"].partition(":")
    if prefix in ("timm", "random"):
        with torch.device("meta"):
            return timm.create_model(argument.partition(".")[0], pretrained=False, num_classes=0).num_features
    if prefix == "open_clip":
        import open_clip

        return open_clip.get_model_config(argument.partition("@")[0])["embed_dim"]
    assert table["name"] == "pixels"
    return 3 * SIDE * SIDE


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### The clustering study as a suite")
    return " ".join(text[start:text.index("\n## ", start)].split())  # one line: figures wrap across lines


def test_the_readme_figures_are_the_suites():
    """The counts, dimensions and sums the README's estimate rests on, recomputed from the suite, the harness's
    dataset descriptions, timm's and open_clip's model configs and the measured figures it quotes."""
    from harness.memory import format_bytes
    from harness.plugins.clustering.clusterers import quadratic_memory_bytes

    section = readme_section()
    data = parse_suite_file(SUITE)
    builtin = [builtin_test_images(t["name"]) for t in data["datasets"] if not t["name"].startswith("hfds:")]
    hub = [HUB_TEST_IMAGES[t["name"]] for t in data["datasets"] if t["name"].startswith("hfds:")]
    n = sum(builtin) + sum(hub)
    assert (sum(builtin), sum(hub), n) == (79_461, 112_225, 191_686)
    assert f"{sum(builtin):,} in the torchvision sets" in section and f"{sum(hub):,} on the hub" in section
    assert f"{n:,} images" in section

    dims = [feature_dim(t) for t in data["encoders"]]
    assert sorted(dims) == sorted([3_072, 2_048, 2_048, 1_024, 512] + [768] * 5)
    assert f"= {sum(dims):,} numbers per test image" in section
    embeddings_gb = sum(dims) * 4 * n / 1e9
    umap_gb = 50 * 4 * len(dims) * n / 1e9
    assert f"embeddings {embeddings_gb:.1f} GB" in section and f"{umap_gb:.1f} GB of 50-D UMAP" in section
    parts = [3.2, 32, 2.1, round(embeddings_gb, 1), round(umap_gb, 1)]
    assert f"{' + '.join(f'{p:g}' for p in parts)} = {sum(parts):.1f} GB" in section
    torchvision_gb = [0.35, 0.35, 0.07, 0.09, 0.25, 0.69, 1.25, 0.19]
    hub_gb = [2.76, 1.9, 2.15, 7.8, 1.4]
    assert (round(sum(torchvision_gb), 1), round(sum(hub_gb), 1), round(2 * sum(hub_gb))) == (3.2, 16.0, 32)
    assert round(0.1 + 3 * 0.34 + 0.4 + 0.6, 1) == 2.1

    sketch = HUB_TEST_IMAGES["hfds:songweig/imagenet_sketch"]
    assert f"8 × {sketch:,}² bytes = {format_bytes(quadratic_memory_bytes('ward', sketch))}" in section

    networks = len({t["name"] for t in data["encoders"]} - {"pixels"})  # the MAE pair: one name, one forward pass
    assert networks == 8 and f"{networks} × {n:,} = {networks * n / 1e6:.2f} M images" in section
    assert f"/ 500 = {round(networks * n / 500 / 60)} minutes" in section
    per_row_s = n * 115.7 / 5_000
    assert f"= {round(per_row_s / 60)} minutes per row, {per_row_s * len(dims) / 3600:.1f} h for ten" in section
    ward_s = sum(2.1 * (count / 5_000) ** 2 for count in builtin + hub)
    assert f"= {round(ward_s)} s per row, {ward_s * len(dims) / 3600:.1f} h" in section
    hdbscan_h = 5.0 * n / 5_000 * len(dims) / 3600
    assert f"HDBSCAN {hdbscan_h:.1f} h" in section
    small = [c for c in builtin + hub if c <= 5_000]
    assert len(small) == 2 and (30.2 + 70.4) * sum(small) / 5_000 * len(dims) / 3600 <= 0.3
    cpu = (3 * n / 13 / 3600, 5 * n / 3 / 3600)
    assert f"= {cpu[0]:.0f} h + {cpu[1]:.0f} h" in section


def test_the_moco_v3_conversion_in_the_suite_loads_the_base_encoder(tmp_path):
    """The one-line conversion the suite gives for MoCo v3 checkpoints, run as written on a checkpoint in MoCo v3's
    layout (a torchvision ResNet as `module.base_encoder.*` with its projection head, a momentum encoder and a
    predictor): timm's ResNet then loads the base encoder, and only it."""
    import subprocess
    import sys

    import torch
    import torchvision

    from harness.plugins.timm_encoders import TimmEncoder

    command = re.search(r"(?m)^#\s+(python3 -c .*)$", SUITE.read_text())[1]
    base, momentum = (torchvision.models.resnet18(weights=None).state_dict() for _ in range(2))
    state = {f"module.base_encoder.{k}": v for k, v in base.items() if not k.startswith("fc.")}
    state |= {f"module.momentum_encoder.{k}": v for k, v in momentum.items() if not k.startswith("fc.")}
    state |= {"module.base_encoder.fc.0.weight": torch.zeros(4096, 512),  # MoCo's projection MLP
              "module.predictor.0.weight": torch.zeros(4096, 256)}
    torch.save({"epoch": 1000, "arch": "resnet18", "state_dict": state}, tmp_path / "r-50-1000ep.pth.tar")
    subprocess.run(command.replace("python3", sys.executable, 1), shell=True, cwd=tmp_path, check=True)

    encoder = TimmEncoder("resnet18", weights=str(tmp_path / "mocov3_resnet50.pth"))
    encoder.load("cpu")
    loaded = encoder.model.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.weight"], base["layer4.1.conv2.weight"])
    assert not torch.equal(loaded["layer4.1.conv2.weight"], momentum["layer4.1.conv2.weight"])
    assert encoder.load_report["unexpected"] == []  # neither the projection head nor the momentum encoder came
