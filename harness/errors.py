"""Errors the harness raises for a user to act on; the CLI prints them without a traceback."""

import os
import warnings


class HarnessError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class UnknownNameError(HarnessError, KeyError):
    """A name that no plugin registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(HarnessError):
    """Two plugins registered the same name."""


class BadItemError(HarnessError):
    """A dataset item that cannot be read (a corrupt or truncated image).

    `item` is what lets the user find the item: its file path where it has a file of its own (imagefolder, most
    torchvision sets), else its item id (`DatasetSplit.item_id(index)`). Never a bare index: a position in a split
    means nothing to the user (an index still works, with a DeprecationWarning). `reason` says what went wrong,
    in one line."""

    def __init__(self, item: "str | os.PathLike[str]", reason: str) -> None:
        if not isinstance(item, (str, os.PathLike)):
            # Datasets written before 0.2 may pass an index: still an error the user can act on, with a warning
            # to the plugin's author (an exception here would turn an unreadable image into a crash).
            warnings.warn(f"BadItemError(item, reason): item is the file path or the item id (a string), not "
                          f"{type(item).__name__} {item!r}; for a position, pass split.item_id(index)",
                          DeprecationWarning, stacklevel=2)
            item = f"item at position {item!r}"
        item = os.fspath(item)
        super().__init__(f"cannot read {item}: {reason}")
        self.item = item
        self.reason = reason


class NonFiniteEmbeddingError(HarnessError):
    """An encoder produced NaN or inf; nothing of that extraction is cached."""
