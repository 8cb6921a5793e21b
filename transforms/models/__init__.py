"""Models and scoring: the built-in models (`lm`: a byte-level causal LM; `towers`: the two-tower
contrastive encoder with its towers in `ngram_tower`, `conv_tower`, `images`, `layers`), the
Hugging Face adapters (`hf`, `hf_dual`), batched scoring (`scoring`) and the losses (`losses`).
`new_model` makes a fresh built-in model."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import JestflowError
from ..vocabulary import TASKS, check_choice
from .lm import CausalLM, LMConfig
from .losses import PairEmbeddings
from .scoring import embed_pairs, lm_losses, resolve_device, scoring_length
from .towers import TowerConfig, TwoTower, TwoTowerConfig

__all__ = [
    "CausalLM",
    "LMConfig",
    "PairEmbeddings",
    "TowerConfig",
    "TwoTower",
    "TwoTowerConfig",
    "embed_pairs",
    "lm_losses",
    "new_model",
    "resolve_device",
    "scoring_length",
]

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
