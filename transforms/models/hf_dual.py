"""Hugging Face image–text dual encoders with the two-tower scoring interface (extra `hf`).

`HFDualEncoder` wraps `CLIPModel`, `SiglipModel` or `VisionTextDualEncoderModel` (any vision
encoder with any text encoder): captions go through the text tower, encoded images (PNG, JPEG…)
through the model's own image processor and vision tower; both embeddings are taken after the
model's projections and L2-normalised. The sigmoid-loss temperature t and bias β start from the
model (t = exp(logit_scale); β = SigLIP's logit_bias, −10 where the model has none) or from a
`jestflow.json` beside it, and are trainable parameters of the adapter.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import JestflowError
from .hf import LOCAL_ONLY, PairAdapter, _load_pretrained, _transformers
from .layers import pad, to_device

# Hugging Face `model_type` → the model class `AutoModel` loads for it.
DUAL_ENCODERS = {
    "clip": "CLIPModel",
    "siglip": "SiglipModel",
    "vision-text-dual-encoder": "VisionTextDualEncoderModel",
}
# SigLIP's text tower pools the last position and was trained on captions padded to its full
# length without an attention mask (`padding="max_length"` in the model's documentation).
FULL_LENGTH_TEXT = ("siglip",)
DEFAULT_BIAS = -10.0  # β for a model trained without one (CLIP's softmax loss)


def is_dual_encoder(config: dict[str, Any]) -> bool:
    """Whether a Hugging Face `config.json` (as a dict) describes an image–text dual encoder."""
    architectures = config.get("architectures") or []
    return config.get("model_type") in DUAL_ENCODERS or any(
        name in DUAL_ENCODERS.values() for name in architectures
    )


def _features(output: Any) -> torch.Tensor:
    """The projected embeddings `get_text_features`/`get_image_features` return: a tensor up to
    transformers 4.x; from 5.0 a `BaseModelOutputWithPooling` holding them in `pooler_output`."""
    if isinstance(output, torch.Tensor):
        return output
    features = getattr(output, "pooler_output", None)
    if features is None:
        raise JestflowError("the model gives no pooled embedding (a vision tower without a head?)")
    return features


class HFDualEncoder(PairAdapter):
    """Captions (left) and images (right) of a Hugging Face image–text dual encoder."""

    architecture = "hf_dual_encoder"
    right_kind = "image"

    def __init__(
        self,
        path: str,
        *,
        scale: float | None = None,
        bias: float | None = None,
        max_len: int | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer, self.model = _load_pretrained(path, "AutoModel")
        model_type = self.model.config.model_type
        if model_type not in DUAL_ENCODERS:
            raise JestflowError(
                f"{path} holds a {model_type} model, not an image–text dual encoder"
            )
        self.processor = _image_processor(path)
        text_config = getattr(self.model.config, "text_config", self.model.config)
        limits = (
            max_len,
            getattr(text_config, "max_position_embeddings", None),
            self.tokenizer.model_max_length,
        )
        self.max_len = min(n for n in limits if n)
        self.full_length = model_type in FULL_LENGTH_TEXT
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        if scale is None:
            scale = float(self.model.logit_scale.detach().exp())
        if bias is None:
            learned = getattr(self.model, "logit_bias", None)
            bias = DEFAULT_BIAS if learned is None else float(learned.detach())
        self.init_scale_bias(scale, bias)

    def prepare_left(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Token ids of each caption, truncated to the text tower's positions (SigLIP: padded
        to them)."""
        padding = "max_length" if self.full_length else False
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_len, padding=padding
        )["input_ids"]
        return [torch.tensor(ids, dtype=torch.long) for ids in encoded]

    def prepare_right(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        """Encoded images → the image processor's pixel tensor [3, H, W] for each."""
        from PIL import Image

        pixels = []
        for data in images:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
            pixels.append(self.processor(images=rgb, return_tensors="pt")["pixel_values"][0])
        return pixels

    def embed_left(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        ids, mask = pad(items, self.pad_id, limit=self.max_len)
        # SigLIP's captions are all full length; its text tower is used without a mask.
        mask = None if self.full_length else to_device(mask.long(), self.device)
        output = self.model.get_text_features(
            input_ids=to_device(ids, self.device), attention_mask=mask
        )
        return F.normalize(_features(output).float(), dim=-1)

    def embed_right(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        pixels = to_device(torch.stack(list(items)), self.device, self.model.dtype)
        output = self.model.get_image_features(pixel_values=pixels)
        return F.normalize(_features(output).float(), dim=-1)


def _image_processor(path: str):
    """The model's own image processor (its `preprocessor_config.json`), on the PIL backend: the
    same pixels whether or not torchvision is installed."""
    tf = _transformers()
    try:
        return tf.AutoImageProcessor.from_pretrained(path, backend="pil", **LOCAL_ONLY)
    except (OSError, ValueError) as e:
        raise JestflowError(f"{path} has no usable image processor: {e}") from e
