"""Errors the harness raises for a user to act on; the CLI prints them without a traceback."""


class HarnessError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class UnknownNameError(HarnessError, KeyError):
    """A name that no plugin registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(HarnessError):
    """Two plugins registered the same name."""


class BadItemError(HarnessError):
    """A dataset item that cannot be read (a corrupt or truncated image); names the file."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"cannot read {item}: {reason}")
        self.item = item
        self.reason = reason


class NonFiniteEmbeddingError(HarnessError):
    """An encoder produced NaN or inf; nothing of that extraction is cached."""
