"""The FLOPs a student spends, counted, not guessed from its parameter count.

`torch.utils.flop_counter.FlopCounterMode` counts the matrix products and convolutions of one
forward pass of one input of each shape (a token sequence of a length, an image of a size); the
count is kept per shape, so a run counts each shape once and a step only adds counts up. An
image scored at a lower resolution, a shorter scoring prefix or a smaller window costs what it
really costs; lookups (token and n-gram embeddings) cost nothing, as on the hardware. A training
step costs 3 × its forward (the backward pass is about twice the forward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .core import eval_mode

TRAINING = 3.0  # a training step's FLOPs over its forward pass's


class FlopCount:
    """Forward FLOPs of a model's inputs: token sequences (lm) or (left, right) pairs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._counted: dict[tuple, float] = {}

    def forward(self, inputs: Sequence) -> float:
        """The forward FLOPs of each input, added up."""
        if self.model.task == "lm":
            return sum(self._count(self.model.sequence_nll, x) for x in inputs)
        return sum(
            self._count(self.model.embed_left, left) + self._count(self.model.embed_right, right)
            for left, right in inputs
        )

    def _count(self, run: Callable[[list], torch.Tensor], item: torch.Tensor) -> float:
        key = (run.__name__, tuple(item.shape))
        if key not in self._counted:
            counter = FlopCounterMode(display=False)
            with eval_mode(self.model), torch.no_grad(), counter:
                run([item])
            self._counted[key] = float(counter.get_total_flops())
        return self._counted[key]
