"""Loss functions shared by scoring, selection and training: token NLL and the two contrastive
losses of a batch of pairs, with L2-normalised embeddings u_i, v_j, temperature t and bias β.

Sigmoid (SigLIP) pair loss, a sum of pair terms:
    ℓ_ij = softplus(−z_ij · (t·⟨u_i, v_j⟩ + β)),  z_ii = +1, z_ij = −1 (i ≠ j).
Softmax (InfoNCE, CLIP) loss, with logits s_ij = t·⟨u_i, v_j⟩ (no bias): each pair's loss is the
mean of its two cross-entropies against the batch,
    ℓ_i = −s_ii + ½ (log Σ_j e^{s_ij} + log Σ_j e^{s_ji}),
and the batch loss is their mean (CLIP's loss).
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


PAIR_LOSSES = ("sigmoid", "softmax")


@dataclass(frozen=True)
class PairEmbeddings:
    """One two-tower model's view of a batch: u = left[i], v = right[j], temperature, bias, and
    the contrastive loss they are judged by (`sigmoid` or `softmax`; β serves the sigmoid only)."""

    left: torch.Tensor
    right: torch.Tensor
    scale: float | torch.Tensor  # t (a tensor while training, so gradients reach it)
    bias: float | torch.Tensor  # β
    loss: str = "sigmoid"

    def __post_init__(self) -> None:
        if self.left.ndim != 2 or self.left.shape != self.right.shape:
            raise ValueError(
                f"left and right embeddings must both be [B, d], got "
                f"{tuple(self.left.shape)} and {tuple(self.right.shape)}"
            )
        if self.loss not in PAIR_LOSSES:
            raise ValueError(f"unknown pair loss {self.loss!r}; expected one of {PAIR_LOSSES}")

    @property
    def size(self) -> int:
        return self.left.shape[0]

    def _sigmoid_only(self, what: str) -> None:
        if self.loss != "sigmoid":
            raise ValueError(f"{what} are the sigmoid loss's pair terms; the softmax loss has none")

    def diagonal_losses(self) -> torch.Tensor:
        """ℓ_ii for every i: the loss of each matching pair, [B] (sigmoid)."""
        self._sigmoid_only("diagonal losses")
        logits = self.scale * (self.left * self.right).sum(1) + self.bias
        return F.softplus(-logits.float())

    def losses(
        self, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ℓ_ij for i in `rows`, j in `cols` (index tensors; None = all), as a dense block."""
        self._sigmoid_only("pair losses")
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
        self._sigmoid_only("pair sums")
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
        """The training loss (dense; training-size B): SigLIP's Σ_ij ℓ_ij / B, or CLIP's mean of
        the two cross-entropies."""
        if self.loss == "sigmoid":
            return self.losses().sum() / self.size
        return self.example_losses().mean()

    def example_losses(self) -> torch.Tensor:
        """Each pair's loss in the batch, with gradients (dense: a training-size batch). Sigmoid:
        its share ℓ_ii + ½ Σ_{j≠i} (ℓ_ij + ℓ_ji); softmax: −s_ii + ½ (LSE_row + LSE_col). Both
        sum to B × `batch_loss`."""
        if self.loss == "sigmoid":
            losses = self.losses()
            diagonal = losses.diagonal()
            return diagonal + 0.5 * (losses.sum(1) + losses.sum(0) - 2 * diagonal)
        logits = (self.scale * (self.left @ self.right.T)).float()
        rows, cols = torch.logsumexp(logits, 1), torch.logsumexp(logits, 0)
        return -logits.diagonal() + 0.5 * (rows + cols)

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """t·⟨u_i, v_j⟩ for i in `rows` and every j (softmax: no bias): the product in the
        embeddings' precision, the result in float64."""
        return as_float(self.scale) * (self.left[rows] @ self.right.T).double()

    def softmax_losses(self, *, block_size: int = 1024) -> torch.Tensor:
        """ℓ_i = −s_ii + ½ (log Σ_j e^{s_ij} + log Σ_j e^{s_ji}) for every i against the whole
        batch, float64, from blocks of at most `block_size` (and B/16) rows (never B×B)."""
        n = self.size
        block_size = min(block_size, max(64, n // 16))  # a large batch: B/16 rows at a time
        rows = torch.empty(n, dtype=torch.float64, device=self.left.device)
        cols = torch.full((n,), float("-inf"), dtype=torch.float64, device=self.left.device)
        for start in range(0, n, block_size):
            block = torch.arange(start, min(start + block_size, n), device=self.left.device)
            s = self.logits(block)
            rows[block] = torch.logsumexp(s, 1)
            cols = torch.logaddexp(cols, torch.logsumexp(s, 0))
        own = as_float(self.scale) * (self.left.double() * self.right.double()).sum(1)
        return -own + 0.5 * (rows + cols)
