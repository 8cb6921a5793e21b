"""The built-in models: a byte-level causal LM and a two-tower contrastive encoder."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import JestflowError
from ..vocabulary import TASKS, check_choice
from .lm import CausalLM, LMConfig
from .towers import TowerConfig, TwoTower, TwoTowerConfig

SIZE_KEYS = ("d_model", "n_layer", "n_head", "max_len")


def new_model(task: str, *, right_kind: str = "text", **size: Any) -> nn.Module:
    """A freshly initialised built-in model for `task` (`lm` or `contrastive`).

    `size` sets d_model, n_layer, n_head, max_len (for both towers of a contrastive model);
    `right_kind` is `text` (text pairs) or `image` (image-text pairs).
    """
    unknown = set(size) - set(SIZE_KEYS)
    if unknown:
        raise JestflowError(f"unknown model size options: {', '.join(sorted(unknown))}")
    size = {k: v for k, v in size.items() if v is not None}
    check_choice("task", task, TASKS)
    try:
        if task == "lm":
            return CausalLM(LMConfig(**size))
        return TwoTower(
            TwoTowerConfig(left=TowerConfig(**size), right=TowerConfig(kind=right_kind, **size))
        )
    except ValueError as e:
        raise JestflowError(f"bad model size: {e}") from e
