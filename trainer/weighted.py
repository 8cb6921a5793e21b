"""Learnability-weighted training: the zero-overhead arm beside online selection.

`--mode weighted` draws b examples, as uniform does, and trains on all of them, each weighted by
its learnability ℓ(student) − ℓ(teacher) (RHO-LOSS, DRRho-style soft selection): w = b ·
softmax(s / τ), τ = `--temperature` or WEIGHTING_TEMPERATURE × the scores' spread
(`jest.temperature_of`; selection's relative τ of 0.1 would put nearly all weight on one or two
examples: measured in bench/data_efficiency.py, the weighted arm at 0.1 trains worse than
uniform). The student's
losses come from the training forward itself (detached for the weights), so there is no scoring
pass: per step it costs what a uniform step costs. With equal scores every w is 1 and the loss is
the plain one. For pairs the per-example loss is each pair's share of the batch's sigmoid loss
(ℓ_ii + ½ Σ_{j≠i} (ℓ_ij + ℓ_ji); the shares add up to the batch loss), the teacher's from its
stored embeddings of the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.losses import PairEmbeddings
from ..transforms.models.scoring import pair_loss_shares
from ..transforms.selection.jest import temperature_of
from .core import batch_loss
from .online_selection import teacher_embeddings
from .windows import Windows

WEIGHTING_TEMPERATURE = 1.0  # relative: τ = 1 × the median absolute deviation of the batch's s


@dataclass(frozen=True)
class Weighted:
    """A training batch to weight by learnability: the model inputs, and the teacher's values of
    the same examples (lm: its losses [b]; pairs: its embeddings of the batch)."""

    inputs: list
    teacher: torch.Tensor | PairEmbeddings
    temperature: float | None = None  # absolute τ; None: WEIGHTING_TEMPERATURE × the spread


def teacher_values(
    samples: Sequence[TrainSample], windows: Windows | None, indices: Sequence[int]
) -> torch.Tensor | PairEmbeddings:
    """The teacher's values of the chosen `samples` (at `indices` of their super-batch): its
    losses on their windows or texts (lm), or its stored pair embeddings (contrastive)."""
    if windows is not None:
        return windows.teacher[list(indices)]
    if samples[0].embeddings is None:
        return torch.tensor([s.teacher_loss for s in samples], dtype=torch.float32)
    return teacher_embeddings(samples)


def training_loss(model: nn.Module, batch: list | Weighted) -> torch.Tensor:
    """A batch's training loss: the plain one (`core.batch_loss`), or learnability-weighted."""
    if not isinstance(batch, Weighted):
        return batch_loss(model, batch)
    if model.task == "lm":
        losses = model.sequence_nll(batch.inputs).float()
        teacher = batch.teacher.to(losses.device)
        return (weights(losses.detach() - teacher, batch) * losses).mean()
    left, right = zip(*batch.inputs, strict=True)
    embeddings = model.pair_embeddings(model.embed_left(left), model.embed_right(right))
    shares = _shares(embeddings)
    teacher = pair_loss_shares(batch.teacher).float().to(shares.device)
    return (weights(shares.detach() - teacher, batch) * shares).sum() / embeddings.size


def weights(scores: torch.Tensor, batch: Weighted) -> torch.Tensor:
    """b · softmax(s / τ): mean 1, more on what the student has yet to learn and can."""
    tau = temperature_of(scores.cpu(), batch.temperature, WEIGHTING_TEMPERATURE)
    return torch.softmax(scores.double() / tau, 0).float() * scores.numel()


def _shares(embeddings: PairEmbeddings) -> torch.Tensor:
    """Each pair's share of the batch's sigmoid loss, with gradients (a training batch is small:
    the B × B block is fine)."""
    losses = embeddings.losses()
    diagonal = losses.diagonal()
    return diagonal + 0.5 * (losses.sum(1) + losses.sum(0) - 2 * diagonal)
