"""Models and scoring: the built-in models (`lm`: a byte-level causal LM; `towers`: the two-tower
contrastive encoder with its towers in `ngram_tower`, `conv_tower`, `images`, `layers`), the
Hugging Face adapters (`hf`, `hf_dual`), batched scoring (`scoring`) and the losses (`losses`).
`new_model` makes a fresh built-in model."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import JestflowError
from ..vocabulary import MODEL_TASKS, check_choice
from .classifier import ClassifierConfig, NgramClassifier
from .lm import CausalLM, LMConfig
from .losses import PairEmbeddings
from .scoring import embed_pairs, lm_losses, resolve_device, scoring_length
from .towers import TowerConfig, TwoTower, TwoTowerConfig

__all__ = [
    "CausalLM",
    "ClassifierConfig",
    "LMConfig",
    "NgramClassifier",
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
    """A freshly initialised built-in model for `task` (`lm`, `contrastive` or `classifier`).

    `size` sets d_model, n_layer, n_head, max_len (for both towers of a contrastive model), and
    a contrastive model's `text_encoder` (`ngram` or `transformer`) and `image_encoder` (`conv` or
    `vit`); `right_kind` is `text` (text pairs) or `image` (image-text pairs). A classifier
    takes d_model (its embedding width) and max_len (the characters of a text it reads).
    """
    unknown = set(size) - set(SIZE_KEYS)
    if unknown:
        raise JestflowError(f"unknown model size options: {', '.join(sorted(unknown))}")
    size = {k: v for k, v in size.items() if v is not None}
    check_choice("task", task, MODEL_TASKS)
    if task == "classifier":
        return _classifier(size)
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


def _classifier(size: dict[str, Any]) -> nn.Module:
    other = sorted(set(size) - {"d_model", "max_len"})
    if other:
        raise JestflowError(
            f"the classifier is sized by d_model and max_len, not {', '.join(other)}"
        )
    try:
        return NgramClassifier(ClassifierConfig(**size))
    except ValueError as e:
        raise JestflowError(f"bad model size: {e}") from e
