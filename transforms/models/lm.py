"""A small byte-level causal language model (nanoGPT-shaped); no tokenizer download needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, byte_tokens, init_weights, pad, to_device
from .losses import token_nll

BOS = 256  # token ids 0..255 are bytes


@dataclass(kw_only=True)
class LMConfig:
    max_len: int = 256  # bytes of context: longer documents are scored and trained window by window
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    dropout: float = 0.0

    vocab_size: int = 257


class CausalLM(nn.Module):
    """Predicts each byte of a text from the bytes before it (tied input/output embeddings)."""

    architecture = "causal_lm"
    task = "lm"

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_head, config.dropout) for _ in range(config.n_layer)
        )
        self.ln = nn.LayerNorm(config.d_model)
        self.apply(init_weights)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [N, T] → next-token logits [N, T, vocab]."""
        t = ids.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_len={self.config.max_len}")
        x = self.tokens(ids) + self.positions(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x, causal=True)
        return F.linear(self.ln(x), self.tokens.weight)

    # The scoring interface shared with the Hugging Face adapter.

    def tokenize(self, texts: Sequence[str], max_len: int | None = None) -> list[torch.Tensor]:
        """BOS + UTF-8 bytes, at most `max_len` (default: the model's) bytes scored per text."""
        limit = min(max_len or self.config.max_len, self.config.max_len)
        return [byte_tokens(text, limit + 1, bos=BOS) for text in texts]

    bos = BOS  # a document's first window starts with it (models/documents.py)
    token_kind = "bytes"  # how it cuts text into tokens: UTF-8 bytes (hf.tokenizer_id for others)

    @property
    def context(self) -> int:
        """The tokens one scored sequence predicts at most."""
        return self.config.max_len

    def token_ids(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Each text's UTF-8 bytes, at most `limit` of them, without BOS."""
        return [list(text.encode("utf-8")[:limit]) for text in texts]

    def sequence_nll(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean next-token NLL of each tokenized text, padding masked: [N]."""
        ids, mask = pad(sequences, limit=self.config.max_len + 1)
        ids, mask = to_device(ids, self.device), to_device(mask, self.device)
        logits = self(ids[:, :-1])
        return token_nll(logits, ids[:, 1:], mask[:, 1:])

    @property
    def device(self) -> torch.device:
        return self.tokens.weight.device
