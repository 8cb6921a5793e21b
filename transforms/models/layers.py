"""Transformer pieces shared by the built-in models, and padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block; causal (language model) or bidirectional with a padding mask."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(
        self, x: torch.Tensor, *, causal: bool, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [N, T, D]; keep [N, T] marks real (non-padding) positions for bidirectional attention."""
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(n, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        mask = None if causal or keep is None else keep[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.proj(y.transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.ln2(x))


def padded_length(longest: int, limit: int | None = None) -> int:
    """The length a batch whose longest sequence is `longest` is padded to: rounded up to one of
    a few lengths (four per doubling: at most a quarter, or 7 tokens, longer), never beyond `limit`.

    Batches of every length in between would each need tensors of their own size, and the
    allocator, handed ever-new sizes, fragments: a long `jestflow train` grew by 17 MiB a step
    (2.4 GiB at step 150) scoring texts of every length, and stays flat with these lengths.
    """
    step = max(8, 1 << max(0, longest.bit_length() - 3))
    rounded = -(-longest // step) * step
    return max(longest, min(rounded, limit)) if limit is not None else rounded


def pad(
    sequences: Sequence[torch.Tensor], pad_id: int = 0, *, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D token tensors to `padded_length` (at most `limit`, the longest the model
    takes): (ids [N, T], mask [N, T] true on real tokens)."""
    ids = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=pad_id)
    width = padded_length(ids.shape[1], limit)
    ids = F.pad(ids, (0, width - ids.shape[1]), value=pad_id)
    lengths = torch.tensor([len(s) for s in sequences])
    return ids, torch.arange(width)[None, :] < lengths[:, None]


def to_device(
    tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """`tensor` on `device` (then as `dtype`). A host tensor bound for a GPU is pinned and copied
    asynchronously (`non_blocking`): the host goes on queueing the batch's kernels while the copy
    runs, and the caching host allocator keeps the pinned buffer until the copy is done. Elsewhere
    a plain `.to`: on the CPU nothing changes."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor if dtype is None else tensor.to(dtype)  # converted on the device


def byte_tokens(text: str, max_len: int, bos: int | None = None) -> torch.Tensor:
    """UTF-8 bytes of `text` (at most max_len tokens in all), optionally after a BOS id."""
    head = [] if bos is None else [bos]
    data = list(text.encode("utf-8")[: max_len - len(head)])
    return torch.tensor(head + data, dtype=torch.long)


def init_weights(module: nn.Module) -> None:
    """GPT-2 style initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
