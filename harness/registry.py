"""Named registries of factories: collisions are errors, unknown names suggest close matches."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import DuplicateNameError, HarnessError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered name: the factory, a one-line description and the plugin that registered it."""

    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    prefix: bool = False  # `timm` with prefix=True handles every `timm:<argument>` name

    @property
    def display_name(self) -> str:
        return f"{self.name}:<...>" if self.prefix else self.name


class Registry(Generic[T]):
    """Names -> factories for one kind of component (encoders, datasets or evaluators).

    A prefix entry such as `timm` builds any `timm:<model>` name, so thousands of models need no listing.
    """

    def __init__(self, kind: str, *, path_arguments: bool = False) -> None:
        self.kind = kind
        #: Whether a prefix entry's argument is a path (datasets: `imagefolder:<path>`): then `canonical` normalises
        #: it, because the name is the component's identity (its column, results folder and cache key).
        self.path_arguments = path_arguments
        self._entries: dict[str, Entry] = {}
        self._conflicts: dict[str, list[str]] = {}  # name -> every plugin that registered it

    def add(self, name: str, factory: Callable[..., T], description: str, *, plugin: str,
            prefix: bool = False) -> None:
        if not isinstance(name, str) or not name or ":" in name:
            raise HarnessError(f"plugin {plugin!r} registered an invalid {self.kind} name {name!r} "
                               f"(a non-empty string without ':')")
        if name in self._entries:
            # Neither plugin wins silently: the name becomes unusable until one of them goes, and every use
            # (and `harness plugins`) says which plugins collide. Their other names keep working.
            self._conflicts.setdefault(name, [self._entries[name].plugin]).append(plugin)
            raise DuplicateNameError(self._conflict_message(name))
        self._entries[name] = Entry(name, factory, description, plugin, prefix)

    def _conflict_message(self, name: str) -> str:
        plugins = self._conflicts[name]
        return (f"{self.kind} {name!r} is registered by more than one plugin: "
                f"{' and '.join(repr(p) for p in plugins)}; uninstall one, or block it with "
                f"HARNESS_BLOCK_PLUGINS={plugins[-1]}")

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted((e for n, e in self._entries.items() if n not in self._conflicts), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except UnknownNameError:
            return False
        return True

    def resolve(self, name: str) -> tuple[Entry, str | None]:
        """The entry that handles `name`, and the argument after `prefix:` (None for plain names)."""
        head = name.partition(":")[0]
        for candidate in (name, head):
            if candidate in self._conflicts:
                raise DuplicateNameError(self._conflict_message(candidate))
        if name in self._entries and not self._entries[name].prefix:
            return self._entries[name], None
        head, sep, argument = name.partition(":")
        entry = self._entries.get(head)
        if sep and entry is not None and entry.prefix:
            if not argument:
                raise HarnessError(f"{self.kind} {name!r} needs an argument after '{head}:'")
            return entry, argument
        if entry is not None and entry.prefix:
            raise UnknownNameError(f"{self.kind} {name!r} needs an argument: write {head}:<...>")
        raise UnknownNameError(self._unknown_message(name))

    def canonical(self, name: str) -> str:
        """The one spelling of `name`: with `path_arguments`, a prefix entry's argument normalised as a path
        (`os.path.normpath`: `data/x`, `./data/x` and `data/x/` are all `data/x`; relative stays relative, since it
        resolves against the current folder either way). Arguments holding `://` (URLs) are left as they are."""
        head, sep, argument = name.partition(":")
        entry = self._entries.get(head)
        if not (self.path_arguments and sep and argument and entry is not None and entry.prefix
                and "://" not in argument):
            return name
        return f"{head}:{os.path.normpath(argument)}"

    def create(self, name: str, **options: Any) -> T:
        """Build the component called `name`; the object's `name` is set to the full name the user gave, in its
        canonical spelling (see `canonical`)."""
        name = self.canonical(name)
        entry, argument = self.resolve(name)
        obj = entry.factory(argument, **options) if entry.prefix else entry.factory(**options)
        obj.name = name
        return obj

    def _unknown_message(self, name: str) -> str:
        candidates = [e.name for e in self._entries.values()]
        candidates += [f"{e.name}:" for e in self._entries.values() if e.prefix]
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        head = name.partition(":")[0]
        close += [c for c in difflib.get_close_matches(head, candidates, n=3, cutoff=0.6) if c not in close]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        known = ", ".join(e.display_name for e in self)
        return f"unknown {self.kind} {name!r}.{hint} Installed {self.kind}s: {known}."
