"""An evaluation harness for frozen encoders: kNN, linear-probe and clustering scores from one extraction."""

__version__ = "0.1.0"

from harness.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl"]
