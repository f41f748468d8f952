"""The same images kept as an image folder, as a Hugging Face dataset (save_to_disk) and as WebDataset shards give
the same numbers: `harness run` with kNN, the linear probe and clustering (its full default protocol) on
cifar10-mini and on its images written in the other two forms, rows in the image folder's order, compared record
by record."""

from __future__ import annotations

import pytest

from harness.cli import main as harness
from harness.plugins.cifar10_mini import ROOT as CIFAR10_MINI
from harness.records import load_records
from harness_test_support.dataset_forms import save_as_hf_dataset, write_shards


def metrics_by_dataset(results) -> dict[str, dict[str, dict]]:
    by_dataset: dict[str, dict[str, dict]] = {}
    for record in load_records(results):
        assert record["status"] == "ok", record
        metrics = {k: v for k, v in record["metrics"].items() if k not in ("runtime", "timing_s")}
        by_dataset.setdefault(record["dataset"]["name"], {})[record["evaluator"]["name"]] = metrics
    return by_dataset


@pytest.mark.slow  # three evaluators, clustering's UMAP included, on two copies of cifar10-mini
def test_image_folder_hf_dataset_and_tar_shards_give_the_same_knn_linear_and_clustering_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WDS_INDEX_DIR", str(tmp_path / "wds-index"))
    write_shards(CIFAR10_MINI, tmp_path / "shards", per_shard=300)  # train-000..003, test-000..001
    shards = f"wds:{tmp_path}/shards/{{train-{{000..003}},test-{{000..001}}}}.tar"
    pytest.importorskip("datasets")
    save_as_hf_dataset(CIFAR10_MINI, tmp_path / "saved")
    hf = f"hfds:{tmp_path}/saved"
    code = harness(["run", "-e", "pixels", "-d", "cifar10-mini", "-d", shards, "-d", hf,
                    "--eval", "knn,linear,clustering",
                    "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                    "--no-progress"])
    assert code == 0
    by_dataset = metrics_by_dataset(tmp_path / "results")
    assert set(by_dataset) == {"cifar10-mini", shards, hf}
    folder = by_dataset["cifar10-mini"]
    assert set(folder) == {"knn", "linear", "clustering"}
    for other in (shards, hf):
        assert by_dataset[other] == folder, other  # every metric of every evaluator, to the last digit
    assert folder["knn"]["top1_k20"] == pytest.approx(0.210)  # what pixels scores on cifar10-mini (README)
