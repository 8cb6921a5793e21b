"""Loss functions shared by scoring, selection and training: token NLL and sigmoid pair losses.

Sigmoid (SigLIP) pair loss, with L2-normalised embeddings u_i, v_j, temperature t and bias β:
    ℓ_ij = softplus(−z_ij · (t·⟨u_i, v_j⟩ + β)),  z_ii = +1, z_ij = −1 (i ≠ j).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per sequence over the positions where `mask` is true.

    logits [N, T, V], targets [N, T], mask [N, T] → [N] (float32).
    """
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    mask = mask.to(nll.dtype)
    return (nll * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def as_float(value: float | torch.Tensor) -> float:
    """A Python float from a number or a (possibly trainable) scalar tensor."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


@dataclass(frozen=True)
class PairEmbeddings:
    """One two-tower model's view of a batch: u = left[i], v = right[j], temperature, bias."""

    left: torch.Tensor
    right: torch.Tensor
    scale: float | torch.Tensor  # t (a tensor while training, so gradients reach it)
    bias: float | torch.Tensor  # β

    def __post_init__(self) -> None:
        if self.left.ndim != 2 or self.left.shape != self.right.shape:
            raise ValueError(
                f"left and right embeddings must both be [B, d], got "
                f"{tuple(self.left.shape)} and {tuple(self.right.shape)}"
            )

    @property
    def size(self) -> int:
        return self.left.shape[0]

    def diagonal_losses(self) -> torch.Tensor:
        """ℓ_ii for every i: the loss of each matching pair, [B]."""
        logits = self.scale * (self.left * self.right).sum(1) + self.bias
        return F.softplus(-logits.float())

    def losses(
        self, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ℓ_ij for i in `rows`, j in `cols` (index tensors; None = all), as a dense block."""
        u = self.left if rows is None else self.left[rows]
        v = self.right if cols is None else self.right[cols]
        logits = (self.scale * (u @ v.T) + self.bias).float()
        all_ids = torch.arange(self.size, device=u.device)
        row_ids = all_ids if rows is None else rows
        col_ids = all_ids if cols is None else cols
        matching = row_ids[:, None] == col_ids[None, :]  # z = +1 on matching pairs, −1 elsewhere
        return F.softplus(torch.where(matching, -logits, logits))

    def cross_sums(self, chosen: torch.Tensor) -> torch.Tensor:
        """Σ_{j∈chosen} (ℓ_kj + ℓ_jk) for every k, [B], one c×B block per direction.

        Every pair is first taken as a non-match (softplus(x)); the c matching pairs k = j are then
        corrected with softplus(−x) = softplus(x) − x, so no B×c match mask is built.
        """
        u_c, v_c = self.left[chosen], self.right[chosen]
        scale, bias_value = as_float(self.scale), as_float(self.bias)
        bias = torch.tensor(bias_value, dtype=self.left.dtype, device=self.left.device)

        def block_sums(rows: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
            # A c×B block (the faster layout for a tall B×d operand), scale and bias in the GEMM.
            return F.softplus(torch.addmm(bias, rows, others.T, alpha=scale).float()).sum(0)

        into, out_of = block_sums(v_c, self.left), block_sums(u_c, self.right)
        matching = (scale * (u_c * v_c).sum(1) + bias_value).float()
        return (into + out_of).index_add_(0, chosen, -2 * matching)

    def batch_loss(self) -> torch.Tensor:
        """SigLIP training loss: Σ_ij ℓ_ij / B over the whole batch (dense; training-size B)."""
        return self.losses().sum() / self.size
