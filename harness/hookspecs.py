"""Every hook a plugin can implement. Each receives a `register` callback and returns nothing.

The host calls each plugin's implementation separately, inside its own guard, once per plugin manager, right
after the plugins are loaded; the `register` callback records which plugin registered which name.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def register_encoders(register: Callable[..., None]) -> None:
    """Register encoder factories: `register(name, factory, description, prefix=False)`."""


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register dataset factories: `register(name, factory, description, prefix=False)`."""


@hookspec
def register_evaluators(register: Callable[..., None]) -> None:
    """Register evaluator classes: `register(name, factory, description)`."""
