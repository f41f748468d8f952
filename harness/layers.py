"""The spelling of an encoder's `layers` option: which layers' features an encoder returns.

    last          the model's own final features (the default; what encoders gave before the option existed)
    last<n>       the last n blocks (ViT) or feature levels (CNN), each pooled, concatenated (`last4`)
    dinov2        DINOv2's linear-eval input: class tokens of the last four blocks, then the mean of the last
                  block's patch tokens, every block through the final norm (ViTs only)
    stages:<i,j>  the feature levels i, j, ... by index (0 is the first; a CNN's levels are its stem and stages),
                  each pooled, concatenated

Several choices are written with commas (`last,last4,dinov2`, as `--layers` takes them): an encoder is built for
each, and the encoders of one model share one forward pass. Digits after a `stages:` item belong to it, so
`last,stages:2,3` is two choices. Which choices a model can give is the encoder's to check (`harness.plugins`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import HarnessError

#: The default choice: the encoder's features exactly as without the option (same cache keys, same rows).
DEFAULT_LAYERS = "last"
SPELLINGS = "last, last<n> (e.g. last4), dinov2, stages:<i,j,...> (e.g. stages:2,3)"


@dataclass(frozen=True)
class LayerChoice:
    """One parsed choice: `kind` is "last", "last_n", "dinov2" or "stages"; `n` for last_n; `indices` for stages."""

    kind: str
    n: int = 0
    indices: tuple[int, ...] = ()

    @property
    def spelling(self) -> str:
        """The canonical text, as rows, fingerprints and records show it."""
        if self.kind == "last_n":
            return f"last{self.n}"
        if self.kind == "stages":
            return "stages:" + ",".join(map(str, self.indices))
        return self.kind

    @property
    def is_default(self) -> bool:
        return self.kind == "last"


def parse_choice(text: str) -> LayerChoice:
    """One choice from its spelling; a HarnessError naming the accepted ones otherwise."""
    value = str(text).strip().lower()
    if value in ("last", "dinov2"):
        return LayerChoice(value)
    if match := re.fullmatch(r"last(\d+)", value):
        n = int(match.group(1))
        if n < 1:
            raise HarnessError(f"layers {text!r}: the number of last blocks must be at least 1")
        return LayerChoice("last_n", n=n)
    if match := re.fullmatch(r"stages:\s*(\d+(?:\s*,\s*\d+)*)", value):
        indices = tuple(int(i) for i in match.group(1).split(","))
        if len(set(indices)) != len(indices):
            raise HarnessError(f"layers {text!r} names a stage twice")
        return LayerChoice("stages", indices=tuple(sorted(indices)))
    raise HarnessError(f"unknown layers {text!r}; write one of: {SPELLINGS}")


def split_choices(text: str) -> list[str]:
    """The choices of a comma-separated list, each in its canonical spelling and each once, in order:
    `last, last4,stages:2,3` -> ["last", "last4", "stages:2,3"]."""
    items: list[str] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if part.isdigit() and items and items[-1].startswith("stages:"):
            items[-1] += f",{part}"  # a stage index continuing the previous `stages:` item
        else:
            items.append(part)
    if not items:
        raise HarnessError(f"layers {text!r} names no choice; write one or more of: {SPELLINGS}")
    choices = [parse_choice(item).spelling for item in items]
    return list(dict.fromkeys(choices))


def single_choice(text: str, where: str) -> LayerChoice:
    """The one choice an encoder takes; several (a comma list) are an error saying how to ask for them."""
    choices = split_choices(text)
    if len(choices) > 1:
        raise HarnessError(f"{where}: layers {text!r} lists {len(choices)} choices; an encoder takes one. Ask for "
                           f"several with --layers (or one suite [[encoders]] table per choice): they make one row "
                           f"each and share one forward pass")
    return parse_choice(choices[0])
