"""A small two-tower contrastive encoder (SigLIP-style): text tower, and a text or image tower.

Each tower maps its input to an L2-normalised embedding; the model learns a temperature t and a
bias β for the sigmoid pair loss (`losses.PairEmbeddings`). A tower's `encoder` says what it is:
text towers are a bag of hashed character n-grams (`ngram`, the default: `ngram_tower.py`) or a
byte transformer (`transformer`); image towers a small convolutional network (`conv`, the
default: `conv_tower.py`) or a ViT (`vit`). Checkpoints saved before towers had an `encoder`
load as the transformer and the ViT they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .conv_tower import ConvTower
from .images import decode_image
from .layers import Block, byte_tokens, init_weights, pad, to_device
from .losses import PAIR_LOSSES, PairEmbeddings
from .ngram_tower import NgramTower

TOWER_KINDS = ("text", "image")
ENCODERS = {"text": ("ngram", "transformer"), "image": ("conv", "vit")}  # the first: default
LEGACY_ENCODERS = {"text": "transformer", "image": "vit"}  # configs without an `encoder`
MAX_LEN = {"ngram": 512, "transformer": 128}  # characters (ngram) or bytes read per text
D_MODEL = {"ngram": 256}  # the width where None is given; 128 for the others


@dataclass(kw_only=True)
class TowerConfig:
    kind: str = "text"
    encoder: str | None = None  # None: the kind's default (ENCODERS)
    d_model: int | None = None  # None: D_MODEL of the encoder
    n_layer: int = 2  # transformer, vit
    n_head: int = 4  # transformer, vit
    max_len: int | None = None  # text: None is MAX_LEN of the encoder
    # ngram: embedding rows the n-grams hash into. On the demo pairs (1,500 for training) 8,192
    # rows of 256 generalise better than 16,384 × 128 (held-out recall@1 0.40 against 0.30 at the
    # default learning rate) and
    # train 2–3× faster than 65,536 rows.
    buckets: int = 1 << 13
    ngram_min: int = 2
    ngram_max: int = 5
    image_size: int = 64  # image: square side in pixels after resizing
    patch_size: int = 8  # vit

    def __post_init__(self) -> None:
        if self.kind not in TOWER_KINDS:
            raise ValueError(f"unknown tower kind {self.kind!r}; expected one of {TOWER_KINDS}")
        self.encoder = self.encoder or ENCODERS[self.kind][0]
        if self.encoder not in ENCODERS[self.kind]:
            raise ValueError(
                f"unknown {self.kind} encoder {self.encoder!r}; expected one of "
                f"{', '.join(ENCODERS[self.kind])}"
            )
        if self.max_len is None:
            self.max_len = MAX_LEN.get(self.encoder, 128)
        if self.d_model is None:
            self.d_model = D_MODEL.get(self.encoder, 128)
        if not 1 <= self.ngram_min <= self.ngram_max or self.buckets < 1:
            raise ValueError("ngram sizes must satisfy 1 ≤ ngram_min ≤ ngram_max, buckets ≥ 1")

    @classmethod
    def saved(cls, config: dict) -> TowerConfig:
        """A tower's config from a checkpoint (one without an `encoder` is the legacy tower)."""
        kind = config.get("kind", "text")
        return cls(**{"encoder": LEGACY_ENCODERS.get(kind), **config})


@dataclass(kw_only=True)
class TwoTowerConfig:
    left: TowerConfig = field(default_factory=TowerConfig)  # captions / queries: always text
    right: TowerConfig = field(default_factory=TowerConfig)  # documents (text) or images
    embed_dim: int = 128
    init_scale: float = 10.0  # t = exp(log_scale)
    init_bias: float = -10.0
    loss: str = "sigmoid"  # the pair loss it trains on: sigmoid (SigLIP) or softmax (CLIP)

    def __post_init__(self) -> None:
        if self.loss not in PAIR_LOSSES:
            raise ValueError(f"unknown pair loss {self.loss!r}; expected one of {PAIR_LOSSES}")
        if isinstance(self.left, dict):
            self.left = TowerConfig.saved(self.left)
        if isinstance(self.right, dict):
            self.right = TowerConfig.saved(self.right)
        if self.left.kind != "text":
            raise ValueError("the left tower reads text (captions or queries)")


class TextTower(nn.Module):
    """A byte transformer: bidirectional blocks over UTF-8 bytes, mean pooling."""

    def __init__(self, config: TowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(256, config.d_model)
        self.positions = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_head) for _ in range(config.n_layer)
        )
        self.ln = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, embed_dim)

    def prepare(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return [byte_tokens(text, self.config.max_len) for text in texts]

    def forward(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        device = self.tokens.weight.device
        ids, keep = pad(items, limit=self.config.max_len)
        ids, keep = to_device(ids, device), to_device(keep, device)
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=device))
        for block in self.blocks:
            x = block(x, causal=False, keep=keep)
        x = self.ln(x)
        weights = keep.to(x.dtype)[..., None]
        pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(pooled)


class ImageTower(nn.Module):
    """A small ViT: square patches, bidirectional blocks, mean pooling."""

    def __init__(self, config: TowerConfig, embed_dim: int) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        self.config = config
        n_patches = (config.image_size // config.patch_size) ** 2
        self.patches = nn.Conv2d(3, config.d_model, config.patch_size, stride=config.patch_size)
        self.positions = nn.Parameter(torch.zeros(n_patches, config.d_model))
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_head) for _ in range(config.n_layer)
        )
        self.ln = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, embed_dim)

    def prepare(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        return [decode_image(data, self.config.image_size) for data in images]

    def forward(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.patches(to_device(torch.stack(list(items)), self.patches.weight.device))
        x = x.flatten(2).transpose(1, 2) + self._positions(x.shape[-2], x.shape[-1])
        for block in self.blocks:
            x = block(x, causal=False)
        return self.head(self.ln(x).mean(1))

    def _positions(self, rows: int, cols: int) -> torch.Tensor:
        """The position embeddings of a grid of rows × cols patches: the trained ones, resized
        bilinearly for another image size (FlexiViT), so the tower reads any multiple of its
        patch size, e.g. a lower resolution that is cheaper to score."""
        side = self.config.image_size // self.config.patch_size
        if (rows, cols) == (side, side):
            return self.positions
        grid = self.positions.T.reshape(1, -1, side, side)
        resized = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)
        return resized.reshape(-1, rows * cols).T


def _tower(config: TowerConfig, embed_dim: int) -> nn.Module:
    towers = {"ngram": NgramTower, "transformer": TextTower, "conv": ConvTower, "vit": ImageTower}
    return towers[config.encoder](config, embed_dim)


class TwoTower(nn.Module):
    architecture = "two_tower"
    task = "contrastive"

    def __init__(self, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.left = _tower(config.left, config.embed_dim)
        self.right = _tower(config.right, config.embed_dim)
        self.apply(init_weights)
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(config.init_bias))

    # The scoring interface shared with the Hugging Face adapter.

    @property
    def right_kind(self) -> str:
        return self.config.right.kind

    def prepare_left(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return self.left.prepare(texts)

    def prepare_right(self, items: Sequence[str] | Sequence[bytes]) -> list[torch.Tensor]:
        return self.right.prepare(items)  # type: ignore[arg-type]

    def embed_left(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.left(items).float(), dim=-1)

    def embed_right(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.right(items).float(), dim=-1)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @property
    def bias(self) -> torch.Tensor:
        return self.logit_bias

    @property
    def pair_loss(self) -> str:
        """The pair loss the model trains on (`sigmoid` or `softmax`)."""
        return self.config.loss

    @pair_loss.setter
    def pair_loss(self, value: str) -> None:
        self.config.loss = value

    def pair_embeddings(self, left: torch.Tensor, right: torch.Tensor) -> PairEmbeddings:
        """Embeddings plus this model's (t, β) and loss, with gradients (training)."""
        return PairEmbeddings(left, right, self.scale, self.bias, self.pair_loss)

    @property
    def device(self) -> torch.device:
        return self.logit_bias.device
