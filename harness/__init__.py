"""An evaluation harness for frozen encoders: kNN, linear-probe and clustering scores from one extraction."""

__version__ = "0.1.0"

from harness.hookspecs import hookimpl  # noqa: E402


def evaluate_model(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see harness.api
    """Evaluate an in-memory torch module on named datasets; see `harness.api.evaluate_model`."""
    from harness.api import evaluate_model as _evaluate_model

    return _evaluate_model(*args, **kwargs)


__all__ = ["__version__", "hookimpl", "evaluate_model"]
