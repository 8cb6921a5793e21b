"""The built-in text tower: a bag of hashed character n-grams (fastText-style).

A text (lower case, whitespace collapsed, a space at each end so that n-grams see word
boundaries, its first `max_len` characters) becomes the hashes of its character n-grams
(n = `ngram_min`…`ngram_max`) into `buckets` embedding rows; the tower averages those rows and
projects them. It has no attention and no positions, so it learns from a few thousand pairs,
where a byte transformer trained from scratch cannot (the results page: teachers, from
bench/teachers.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..hashing import mix64
from .layers import to_device

_MULTIPLIERS = mix64(np.arange(1, 17, dtype=np.uint64)) | np.uint64(1)  # odd, fixed


def ngram_ids(text: str, max_len: int, sizes: Iterable[int], buckets: int) -> np.ndarray:
    """The bucket of each character n-gram of `text` (every n in `sizes`), as int64; the same on
    every machine (the hashes are SplitMix64 of a polynomial over the code points)."""
    form = " " + " ".join(text[: 4 * max_len].lower().split())[:max_len] + " "
    codes = np.frombuffer(form.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.uint64)
    parts = []
    with np.errstate(over="ignore"):
        for n in sizes:
            count = len(codes) - n + 1
            if count < 1:
                continue
            h = np.full(count, n, dtype=np.uint64)  # n salts the hash: "ab" ≠ the 3-gram "ab"
            for j in range(n):
                h += codes[j : j + count] * _MULTIPLIERS[j]
            parts.append(mix64(h) % np.uint64(buckets))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.int64)


class NgramTower(nn.Module):
    """Mean of the n-grams' embeddings → LayerNorm → linear projection."""

    def __init__(self, config, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        self.bag = nn.EmbeddingBag(config.buckets, config.d_model, mode="mean")
        self.ln = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, embed_dim)

    def prepare(self, texts: Sequence[str]) -> list[torch.Tensor]:
        sizes = range(self.config.ngram_min, self.config.ngram_max + 1)
        c = self.config
        return [torch.from_numpy(ngram_ids(t, c.max_len, sizes, c.buckets)) for t in texts]

    def forward(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        device = self.bag.weight.device
        lengths = torch.tensor([len(x) for x in items])
        offsets = to_device(torch.cumsum(lengths, 0) - lengths, device)
        return self.head(self.ln(self.bag(to_device(torch.cat(list(items)), device), offsets)))
