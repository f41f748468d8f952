"""Progress of a long stage (an extraction, a linear probe's C search, a clustering cell's clusterers).

On a terminal it is a tqdm bar. Anywhere else (a CI log, `nohup`, a pipe) a bar prints nothing useful, so the stage
logs a line when it starts, one at most every `every_s` seconds while it runs, and one when it ends, each with the
elapsed time: a log never stays silent for minutes. `enabled=False` (`--no-progress`) keeps only the last line,
and `summary=False` drops that one too (for a caller that reports the stage's end itself).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("harness.progress")

#: How often a stage logs where it is when stderr is not a terminal.
LOG_EVERY_S = 30.0


class Progress:
    """`with Progress(total, "what", unit="img") as progress: ... progress.update(n, note)`."""

    def __init__(self, total: int, what: str, *, unit: str = "step", enabled: bool = True,
                 every_s: float = LOG_EVERY_S, summary: bool = True) -> None:
        self.total, self.what, self.unit, self.enabled, self.every_s = total, what, unit, enabled, every_s
        self.summary = summary
        self.done = 0
        self.note = ""
        self.started = self.logged = time.monotonic()
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=what, file=sys.stderr, dynamic_ncols=True)
        elif enabled:
            log.info("%s: %d %s(s) to do", what, total, unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.close(failed=kind is not None)

    def update(self, n: int = 1, note: str = "") -> None:
        """`n` more steps done; a stage that finds more work than it expected (a refined search) grows `total`."""
        self.done += n
        self.note = note or self.note
        if self.done > self.total:
            self.total = self.done
            if self.bar is not None:
                self.bar.total = self.total
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
        elif self.enabled and time.monotonic() - self.logged >= self.every_s:
            self.logged = time.monotonic()
            log.info("%s: %d of %d %s(s), %s%s", self.what, self.done, self.total, self.unit, self._elapsed(),
                     f"; {self.note}" if self.note else "")

    def close(self, failed: bool = False) -> None:
        if self.bar is not None:
            if self.note:  # the last word (a chosen C) stays on the finished bar
                self.bar.set_postfix_str(self.note, refresh=False)
            self.bar.close()
            self.bar = None
        elif self.summary and not failed and self.done:
            log.info("%s: %d %s(s) done, %s%s", self.what, self.done, self.unit, self._elapsed(),
                     f"; {self.note}" if self.note else "")

    def _elapsed(self) -> str:
        seconds = time.monotonic() - self.started
        rate = f", {self.done / seconds:.1f} {self.unit}/s" if seconds > 0 and self.unit == "img" else ""
        return f"{seconds:.1f} s{rate}"
