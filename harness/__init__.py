"""An evaluation harness for frozen encoders: kNN, linear-probe and clustering scores from one extraction."""

__version__ = "0.2.0"


def _run_from_a_checkout() -> None:
    """In a source checkout (`python -m harness` or `torchrun -m harness` started in the repository root, where
    this folder shadows any installed copy), `harness.plugins` and `harness.leaderboard` are the repository's
    top-level folders `plugins/` and `leaderboard/`, as pyproject.toml's package-dir installs them: look for
    subpackages there too. An installed `harness` holds them itself and is left alone."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isdir(os.path.join(here, "plugins")):
        return
    if all(os.path.isfile(os.path.join(root, *parts)) for parts in
           (("pyproject.toml",), ("plugins", "__init__.py"), ("leaderboard", "__init__.py"))):
        __path__.append(root)  # noqa: F821 - the package's own search path


_run_from_a_checkout()

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
