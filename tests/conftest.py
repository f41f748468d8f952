"""Shared fixtures. The real offline default (three encoders on cifar10-mini at 224 px) is extracted once per
test session into a session cache, and every test that needs real embeddings reads that cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_HOME", str(Path(__file__).parent / "artifacts" / "torch-home"))

# harness.testing: the `harness_plugins` fixture plugin authors use too; the support package's browser module: the
# `open_page` fixture of the site tests (tests/harness_test_support, importable through pytest's `pythonpath`).
pytest_plugins = ["harness.testing", "harness_test_support.browser"]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory):
    """`harness run --eval knn` on the offline default, through the runner API; (report, results, cache)."""
    from harness.plugin_manager import Plugins
    from harness.runner import RunConfig, run

    root = tmp_path_factory.mktemp("default-run")
    # HARNESS_TEST_CACHE keeps the embeddings between local test sessions (CI always starts from an empty cache).
    cache = Path(os.environ.get("HARNESS_TEST_CACHE") or root / "cache")
    config = RunConfig(evaluators=["knn"], results_dir=root / "results", cache_dir=cache, device="cpu",
                       progress=False, command="harness run --eval knn")
    report = run(config, Plugins(entry_points=False))
    return report, root / "results", cache


@pytest.fixture(scope="session")
def full_default_run(default_run, tmp_path_factory):
    """Every evaluator on the offline default, from the session cache (no new extraction); (report, results).

    The results directory holds `default_run`'s kNN records, linear and clustering for efficientnet_lite0 and the
    untrained network (`report` is that run), and clustering for pixels, so each of the three encoders has a UMAP
    layout to plot. The pixels linear probe is left out on purpose: on 3,072 raw-pixel features it costs one to
    three minutes of CPU here and tests nothing the other two cells do not; its cell is shown as missing.
    """
    from harness.plugin_manager import Plugins
    from harness.runner import RunConfig, run

    _, knn_results, cache = default_run
    results = tmp_path_factory.mktemp("full-default-run") / "results"
    shutil.copytree(knn_results, results)
    plugins = Plugins(entry_points=False)
    config = RunConfig(encoders=["efficientnet_lite0", "random:tf_efficientnet_lite0"],
                       evaluators=["linear", "clustering"], results_dir=results, cache_dir=cache, device="cpu",
                       progress=False, command="harness run --eval linear,clustering")
    report = run(config, plugins)
    pixels = run(RunConfig(encoders=["pixels"], evaluators=["clustering"], results_dir=results, cache_dir=cache,
                           device="cpu", progress=False, command="harness run -e pixels --eval clustering"), plugins)
    assert not pixels.failures, pixels.failures
    return report, results


@pytest.fixture(scope="session")
def cifar_embeddings(default_run):
    """Real efficientnet_lite0 embeddings of cifar10-mini (train, test), from the session cache."""
    from harness.store import EmbeddingStore

    report, _, cache = default_run
    record = next(r for r in report.records if r["encoder"]["name"] == "efficientnet_lite0")
    store = EmbeddingStore(cache)
    return store.load(record["cache_keys"]["train"]), store.load(record["cache_keys"]["test"])


SLOW_FIXTURES = {"default_run", "full_default_run", "cifar_embeddings"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that needs the real default run is `slow` (`tox -e fast` leaves it out): say so at collection, so the
    fast lane cannot grow an extraction of 1,500 images at 224 px by accident."""
    unmarked = [item.nodeid for item in items
                if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests use the real default run and need @pytest.mark.slow: "
                                + ", ".join(unmarked))


# -- fault-injection ledger (tests/test_faults.py) ----------------------------------------------------------------


class FaultLedger:
    """What the fault scenarios that ran injected, survived and lost. Each count is added by a scenario only
    after the assertion that proves it (the fault landed; the result equals an uninterrupted run's; the earlier
    records or entries that no longer load), so the summary is measured, never written by hand."""

    def __init__(self) -> None:
        self.injected = self.survived = self.lost = 0

    def summary(self) -> str:
        return f"{self.injected} faults injected, {self.survived} survived, {self.lost} lost"

    def broken(self) -> bool:
        return self.lost > 0 or self.survived < self.injected


_LEDGER = pytest.StashKey[FaultLedger]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LEDGER] = FaultLedger()


@pytest.fixture
def fault_ledger(request: pytest.FixtureRequest) -> FaultLedger:
    return request.config.stash[_LEDGER]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    ledger = config.stash[_LEDGER]
    if ledger.injected or ledger.lost:  # only when fault scenarios ran (also with -k selecting some of them)
        terminalreporter.write_line(ledger.summary(), red=ledger.broken(), green=not ledger.broken(), bold=True)
        if ledger.broken():
            terminalreporter.write_line("fault ledger: a fault was not survived or lost data; the run fails",
                                        red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A second guard beside the scenarios' own assertions: the run fails whenever the ledger does not balance.
    ledger = session.config.stash[_LEDGER]
    if ledger.broken() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
