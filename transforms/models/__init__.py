"""The built-in models: a byte-level causal LM and a two-tower contrastive encoder."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import JestflowError
from ..vocabulary import TASKS, check_choice
from .lm import CausalLM, LMConfig
from .towers import TowerConfig, TwoTower, TwoTowerConfig

SIZE_KEYS = ("d_model", "n_layer", "n_head", "max_len", "text_encoder", "image_encoder")


def new_model(task: str, *, right_kind: str = "text", **size: Any) -> nn.Module:
    """A freshly initialised built-in model for `task` (`lm` or `contrastive`).

    `size` sets d_model, n_layer, n_head, max_len (for both towers of a contrastive model), and
    a contrastive model's `text_encoder` (`ngram` or `transformer`) and `image_encoder` (`conv` or
    `vit`); `right_kind` is `text` (text pairs) or `image` (image-text pairs).
    """
    unknown = set(size) - set(SIZE_KEYS)
    if unknown:
        raise JestflowError(f"unknown model size options: {', '.join(sorted(unknown))}")
    size = {k: v for k, v in size.items() if v is not None}
    check_choice("task", task, TASKS)
    text, image = size.pop("text_encoder", None), size.pop("image_encoder", None)
    try:
        if task == "lm":
            return CausalLM(LMConfig(**size))
        right = text if right_kind == "text" else image
        return TwoTower(
            TwoTowerConfig(
                left=TowerConfig(encoder=text, **size),
                right=TowerConfig(kind=right_kind, encoder=right, **size),
            )
        )
    except ValueError as e:
        raise JestflowError(f"bad model size: {e}") from e
