"""An evaluation harness for frozen encoders: kNN, linear-probe and clustering scores from one extraction."""

__version__ = "0.2.0"

from harness.hookspecs import hookimpl  # noqa: E402


def evaluate_model(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see harness.api
    """Evaluate an in-memory torch module on named datasets; see `harness.api.evaluate_model`."""
    from harness.api import evaluate_model as _evaluate_model

    return _evaluate_model(*args, **kwargs)


def dataset_path(name: str, **options):  # noqa: ANN003, ANN201 - thin lazy re-export, see harness.api
    """The folder holding dataset `name` on disk (e.g. the shipped `cifar10-mini`); see `harness.api.dataset_path`."""
    from harness.api import dataset_path as _dataset_path

    return _dataset_path(name, **options)


__all__ = ["__version__", "hookimpl", "evaluate_model", "dataset_path"]
