"""Test doubles shared by the test modules: real encoders that also count (or fail) on purpose."""

from __future__ import annotations

from typing import Any, Callable

from harness import hookimpl
from harness.plugins.pixels import Pixels


class CountingPixels(Pixels):
    """The pixel encoder, counting forward passes and items; optionally failing after some batches (an
    interruption, as Ctrl-C would)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.items = 0
        self.fail_after = fail_after
        self.name = "counting-pixels"

    def encode(self, batch):
        self.calls += 1
        self.items += batch.shape[0]
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return super().encode(batch)


class EncoderPlugin:
    """A plugin object registering one encoder factory under `name`, for `harness_plugins(...)`."""

    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.name, self.factory = name, factory

    @hookimpl
    def register_encoders(self, register):
        register(self.name, self.factory, f"{self.name} (test plugin)")


class EvaluatorPlugin:
    """A plugin object registering one evaluator factory under `name`, for `harness_plugins(...)`."""

    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.name, self.factory = name, factory

    @hookimpl
    def register_evaluators(self, register):
        register(self.name, self.factory, f"{self.name} (test plugin)")

