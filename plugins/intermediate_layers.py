"""Features from intermediate layers, shared by the timm and open_clip encoders (the `layers` option).

An encoder describes what its model can give (`LayerLayout`: token sequences of transformer blocks, or feature
maps of CNN stages, and how many), `needed_levels` checks a choice against it before any work (naming the model
and what it has), and `assemble` builds a choice's vector from the outputs of one forward pass: a pass run for the
union of several choices' levels serves each of them (`harness.shared_forward`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import HarnessError
from harness.layers import LayerChoice

#: DINOv2's linear evaluation concatenates the class tokens of this many last blocks (`n_last_blocks_list=[1, 4]`,
#: dinov2/eval/linear.py `create_linear_input`, with `use_avgpool` adding the last block's mean patch token).
DINOV2_BLOCKS = 4


@dataclass(frozen=True)
class LayerLayout:
    """What a model's intermediate-feature API returns."""

    model: str  # the encoder's name, for messages
    count: int  # how many blocks (tokens) or feature levels (maps) it can return
    tokens: bool  # True: (B, L, C) token sequences of transformer blocks; False: (B, C, H, W) feature maps
    prefix_tokens: int = 0  # leading tokens that are not patches (class token, registers)
    class_token: bool = False

    @property
    def unit(self) -> str:
        return "blocks" if self.tokens else "feature levels"

    def has(self) -> str:
        """What the model has, as errors say it."""
        return f"{self.model} has {self.count} {self.unit}, indexed 0..{self.count - 1}"


def needed_levels(choice: LayerChoice, layout: LayerLayout) -> tuple[int, ...]:
    """The level indices `choice` reads (none for `last`, the model's own output); a HarnessError when the choice
    does not apply to this model."""
    if choice.kind == "last":
        return ()
    if choice.kind == "dinov2":
        if not layout.tokens:
            raise HarnessError(f"layers 'dinov2' (class tokens of the last {DINOV2_BLOCKS} blocks and the mean patch "
                               f"token) is a recipe for vision transformers; {layout.model} gives feature maps "
                               f"({layout.has()}): use last<n> or stages:<i,...>")
        if not layout.class_token:
            raise HarnessError(f"layers 'dinov2' needs a class token; {layout.model} has none: use last<n> instead")
        if layout.count < DINOV2_BLOCKS:
            raise HarnessError(f"layers 'dinov2' needs {DINOV2_BLOCKS} blocks; {layout.has()}")
        return tuple(range(layout.count - DINOV2_BLOCKS, layout.count))
    if choice.kind == "last_n":
        if choice.n > layout.count:
            raise HarnessError(f"layers 'last{choice.n}' asks for {choice.n} {layout.unit}; {layout.has()}")
        return tuple(range(layout.count - choice.n, layout.count))
    too_far = [i for i in choice.indices if i >= layout.count]
    if too_far:
        raise HarnessError(f"layers {choice.spelling!r} asks for index {too_far[0]}; {layout.has()}")
    return choice.indices


def describe(choice: LayerChoice, layout: LayerLayout, pooling: str) -> list[str]:
    """The parts of a choice's vector, in order, as the record lists them."""
    levels = needed_levels(choice, layout)
    if choice.kind == "last":
        return [f"the model's own output (pooling {pooling})"]
    name = "block" if layout.tokens else "feature level"
    if choice.kind == "dinov2":
        return ([f"block {i} class token (final norm applied)" for i in levels]
                + [f"block {levels[-1]} mean patch token (final norm applied)"])
    how = f"pooling {pooling}, final norm applied" if layout.tokens else "global average pool"
    return [f"{name} {i} ({how})" for i in levels]


def assemble(choice: LayerChoice, layout: LayerLayout, outputs: dict[int, Any], final: Callable[[], Any],
             pool: Callable[[Any], Any]) -> Any:
    """A choice's (B, D) features from one forward pass: `outputs` maps level index -> (B, L, C) tokens (final
    norm applied, prefix tokens first) or (B, C, H, W) maps; `final()` is the model's own features (the `last`
    choice); `pool` turns one block's tokens into (B, C) as the encoder's pooling option says."""
    import torch

    if choice.kind == "last":
        return final()
    levels = needed_levels(choice, layout)
    if choice.kind == "dinov2":
        # As DINOv2's create_linear_input(use_n_blocks=4, use_avgpool=True): the normed class tokens, then the
        # mean over the last block's patch tokens (registers excluded, as its get_intermediate_layers drops them).
        last = outputs[levels[-1]]
        parts = [outputs[i][:, 0] for i in levels] + [last[:, layout.prefix_tokens:].mean(dim=1)]
    elif layout.tokens:
        parts = [pool(outputs[i]) for i in levels]
    else:
        parts = [outputs[i].mean(dim=(2, 3)) for i in levels]  # global average pool of each feature map
    return torch.cat(parts, dim=1)
