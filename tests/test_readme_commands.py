"""Every command the README shows is run here, as written, on the offline default's results, or names the test
that checks it (issue 11: a README example exited 2, and nothing noticed). A command added to the README without
an entry below fails `test_every_readme_command_is_run_or_checked`, so the README cannot drift again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: README command -> what runs instead: the same command with its placeholders filled in (one or more), where the
#: README shows a pattern rather than a command.
FILLED_IN = {
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/harness run": ["harness run"],
    ".venv/bin/pip install . && .venv/bin/harness run": ["harness run"],
    "harness compare efficientnet_lite0 --against pixels random:tf_efficientnet_lite0 [--dataset cifar10-mini] "
    "[--metric NAME] [--format plain|github|latex|csv|html] [--n-boot 2000] [--seed 0]": [
        "harness compare efficientnet_lite0 --against pixels random:tf_efficientnet_lite0",
        "harness compare efficientnet_lite0 --against pixels random:tf_efficientnet_lite0 --dataset cifar10-mini "
        "--metric top5_k20 --format csv --n-boot 2000 --seed 0"],
    "harness cache ls [--cache-dir DIR]": ["harness cache ls", "harness cache ls --cache-dir .harness-cache"],
    "harness cache prune --dry-run ...": ["harness cache prune --dry-run --older-than 30"],
    "harness export ... --out lite0-test.npy": [
        "harness export -e efficientnet_lite0 -d cifar10-mini -s test --out lite0-test.npy"],
    "harness results ls [--failed] [--results-dir DIR]": ["harness results ls",
                                                          "harness results ls --failed --results-dir results"],
    "harness run --suite FILE.toml": ["harness run --suite examples/suites/default.toml"],
}

#: README command -> the test that checks it, where running it here is not possible (no network, no GPUs, a
#: checkpoint we do not have) or is what another test does already.
CHECKED_ELSEWHERE = {
    "python3 -m venv .venv && .venv/bin/pip install torch torchvision --index-url "
    "https://download.pytorch.org/whl/cpu": None,  # download.pytorch.org cannot be reached from CI: unchecked
    "python3 -m pip install tox && tox": ".ci/run",
    "pip install --no-deps ./examples/harness-example-plugin":
        "test_example_plugin.py::test_the_installed_example_plugin_is_the_one_in_this_repository",
    "harness run --encoder timm:vit_small_patch16_224@checkpoints/dino_vits16.pth --encoder pixels --dataset "
    "cifar10-mini --dataset imagefolder:/data/my-set":
        "test_encoders.py::test_timm_weights_file_in_common_checkpoint_shapes",
    # downloads 19 GB and runs for hours on a GPU: its names are resolved and the suite validated and planned offline
    "harness run --suite examples/suites/clustering-study.toml":
        "test_study_suite.py::test_the_run_plans_without_models_data_or_network",
    "harness run --encoder timm:vit_small_patch16_224@checkpoints/dino_vits16.pth --layers last,last4,dinov2":
        "test_intermediate_layers.py::test_vit_choices_equal_timm_forward_intermediates_from_one_forward_pass",
    # a folder with test-sketch/: the same run on a built image folder with a shifted subset split, with pixels
    "harness run -d imagefolder:my-set": "test_eval_splits.py::test_each_split_is_its_own_leaderboard_column",
    # shards we do not have: the same pattern forms on cifar10-mini written as shards, and the options parsed
    'harness run -d "wds:/data/in1k/{train,test}-{000000..000146}.tar"':
        "test_dataset_formats.py::test_image_folder_hf_dataset_and_tar_shards_give_the_same_knn_linear_and_clustering_numbers",
    'harness run -d wds:/data/in1k --dataset-option train="imagenet-train-{0000..1281}.tar" --dataset-option '
    'test="imagenet-val-{00..49}.tar"': "test_webdataset.py::test_train_and_test_options_and_val_standing_in_for_test",
    # the hf extra is installed by tox (extras = test, hf); the run is the suite run on a saved DatasetDict
    'pip install "encoder-harness[hf]"': ".ci/run",
    "harness run -d hfds:/data/my-hf-set --eval knn":
        "test_hf_datasets.py::test_harness_run_knn_on_a_saved_dataset_from_a_suite_equals_the_imagefolder_run",
    "torchrun --nproc_per_node=4 -m harness run -e timm:vit_base_patch16_224 -d imagefolder:/data/imagenet "
    "--cache-dir /shared/harness-cache --results-dir /shared/results":
        "test_distributed.py::test_two_ranks_merge_to_the_single_process_embeddings",
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=node1.example.org:29500 "
    "--rdzv_id=imagenet-vitb -m harness run -e timm:vit_base_patch16_224 -d imagefolder:/data/imagenet --cache-dir "
    "/shared/harness-cache --results-dir /shared/results":
        "test_distributed.py::test_two_ranks_merge_to_the_single_process_embeddings",
}

#: The names of commands, as prose mentions them (`harness compare`): their --help is run.
COMMAND_NAMES = {"harness compare", "harness results", "harness publish", "harness plugins", "harness encoders"}

_PROGRAMS = re.compile(r"^(harness|torchrun|python3|tox|pip|\.venv/bin/\S+)$")


def readme_commands(text: str) -> list[str]:
    """The commands of the README's code blocks (continuation lines joined, trailing comments dropped) and the
    `harness ...` commands quoted in its prose, in order, each once."""
    found: list[str] = []
    in_fence, pending = False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if not (in_fence or line.startswith("    ")):
            found.extend(re.findall(r"`(harness [^`]+)`", line))
            continue
        command = f"{pending} {line.strip()}".strip()
        pending = ""
        if command.endswith("\\"):
            pending = command[:-1].strip()
            continue
        command = re.sub(r"\s+#.*$", "", command)
        program = [word for word in command.split() if not re.match(r"^[A-Z_]+=", word)][:1]
        if program and _PROGRAMS.match(program[0]):
            found.append(command)
    return list(dict.fromkeys(found))


def test_every_readme_command_is_run_or_checked():
    commands = set(readme_commands(README.read_text()))
    runnable = {c for c in commands if c.startswith(("harness ", "HARNESS_"))}
    unaccounted = commands - runnable - set(FILLED_IN) - set(CHECKED_ELSEWHERE)
    assert not unaccounted, f"README commands no test runs or checks (add them to {__file__}): {unaccounted}"
    stale = (set(FILLED_IN) | set(CHECKED_ELSEWHERE)) - commands
    assert not stale, f"entries for commands the README no longer shows: {stale}"
    for command, test in CHECKED_ELSEWHERE.items():
        if test and test != ".ci/run":
            file, name = test.split("::")
            assert f"def {name}(" in (ROOT / "tests" / file).read_text(), f"{test} (for {command!r}) is gone"


@pytest.mark.slow
def test_the_readme_commands_work_on_the_offline_default(full_default_run, default_run, tmp_path):
    """The README's commands, in its order, in a directory holding the default results and cache (so `harness run`
    measures only what the fixtures left out) with a fresh ./site, as a user would type them."""
    _, results = full_default_run
    _, _, cache = default_run
    shutil.copytree(results, tmp_path / "results")
    shutil.copytree(cache, tmp_path / ".harness-cache")  # prune must not touch the session's cache
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs: dict[str, subprocess.CompletedProcess] = {}
    for readme_command in readme_commands(README.read_text()):
        if readme_command in CHECKED_ELSEWHERE:
            continue
        if readme_command in COMMAND_NAMES:
            to_run = [f"{readme_command} --help"]
        else:
            to_run = FILLED_IN.get(readme_command, [readme_command])
        for command in to_run:
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=900)
            assert done.returncode == 0, f"README command {command!r} exited {done.returncode}:\n{done.stderr}"
            outputs.setdefault(command, done)

    board = outputs["harness leaderboard --metric top5_k20"].stdout
    assert "efficientnet_lite0" in board and "—" in board  # clustering has no top5_k20: a dash, not exit 2
    by_ece = outputs["harness leaderboard --metric ece"]
    assert "ece: smaller is better" in by_ece.stderr, by_ece.stderr
    ranked = re.findall(r"^(\d+)\s+\S+.*?\s(\d\.\d{3})\s*$", by_ece.stdout, re.M)
    assert len(ranked) == 3 and [float(v) for _, v in ranked] == sorted(float(v) for _, v in ranked), by_ece.stdout
    first_run = outputs["harness run"]
    assert re.search(r"^1\s+efficientnet_lite0\s", first_run.stdout, re.M), first_run.stdout
    # The README's table of the offline default is what `harness run` prints (its columns in the board's order).
    printed = {m[0]: m[1].split() for m in re.findall(r"^\d+\s+(\S+)(?: \(baseline\))?\s+(.*)$", first_run.stdout,
                                                     re.M)}
    table = re.findall(r"^\| `([^`]+)` \| ([\d.]+) \| ([\d.]+) \| ([\d.]+ ± [\d.]+) \| ([\d.]+) \[[^]]+\] \| ([\d.]+) \|$",
                       README.read_text(), re.M)
    assert sorted(row[0] for row in table) == sorted(printed), "the README's table of the default run moved"
    for encoder, knn, linear, ward, fewshot, retrieval in table:
        clustering = printed[encoder][:3]  # "0.358 ± 0.012" prints as three words
        assert [" ".join(clustering), *printed[encoder][3:7]] == [ward, fewshot, knn, linear, retrieval], encoder
    rerun = outputs["HARNESS_LOAD_PLUGINS= harness run"]  # the same plain run again: nothing is measured
    assert re.search(r"\d+ cell\(s\) skipped: already done", rerun.stderr), rerun.stderr
    assert "evaluating" not in rerun.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "lite0-test.npz").is_file() and (tmp_path / "lite0-test.npy").is_file()
    assert "pixels" not in outputs["HARNESS_BLOCK_PLUGINS=harness-example-plugin,harness.plugins.pixels harness "
                                   "encoders"].stdout.split()
    assert "nearest-centroid" in outputs["harness run --encoder colour-histogram --dataset example-shapes --eval "
                                         "nearest-centroid,knn"].stdout
