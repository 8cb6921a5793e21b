"""Learnability-weighted training: the zero-overhead arm beside online selection.

`--mode weighted` draws b examples, as uniform does, and trains on all of them, each weighted by
its learnability ℓ(student) − ℓ(teacher) (RHO-LOSS, DRRho-style soft selection): w = b ·
softmax(s / τ), τ = `--temperature` or WEIGHTING_TEMPERATURE × the scores' spread
(`jest.soft_weights`). `--mode curated_weights` draws b as well and weights each by the `weight`
curation wrote into its json (the same rule on the kept scores of its super-batch). The student's
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

from ..transforms.errors import JestflowError
from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.losses import PairEmbeddings
from ..transforms.models.scoring import pair_loss_shares
from ..transforms.selection.jest import soft_weights
from .core import batch_loss
from .online_selection import teacher_embeddings
from .windows import Windows


@dataclass(frozen=True)
class Weighted:
    """A training batch to weight by learnability: the model inputs, and the teacher's values of
    the same examples (lm: its losses [b]; pairs: its embeddings of the batch)."""

    inputs: list
    teacher: torch.Tensor | PairEmbeddings
    temperature: float | None = None  # absolute τ; None: WEIGHTING_TEMPERATURE × the spread


@dataclass(frozen=True)
class Curated:
    """A training batch whose examples carry the soft weights curation gave them [b]."""

    inputs: list
    weights: torch.Tensor


def curated_weights(samples: Sequence[TrainSample]) -> torch.Tensor:
    """The `weight` of each sample's json; a JestflowError for shards written without them."""
    found = [s.weight for s in samples]
    if None in found:
        missing = next(s for s in samples if s.weight is None)
        raise JestflowError(
            f"sample {missing.key!r} has no soft weight: --mode curated_weights needs shards "
            "written by a jestflow curate that weights what it keeps (re-curate them), or pass "
            "another --mode"
        )
    return torch.tensor(found, dtype=torch.float32)


def step_batch(
    config, samples: Sequence[TrainSample], windows: Windows | None, inputs: list, chosen: list
) -> list | Weighted | Curated:
    """What a step of a `TrainConfig` trains on: the chosen's inputs (weighted: with the
    teacher's values; curated_weights: with their curated weights)."""
    picked = [samples[i] for i in chosen]
    if config.mode == "curated_weights":
        return Curated(inputs, curated_weights(picked))
    if config.mode != "weighted":
        return inputs
    teacher = teacher_values(picked, windows, chosen, config.loss or "sigmoid")
    return Weighted(inputs, teacher, config.temperature)


def teacher_values(
    samples: Sequence[TrainSample],
    windows: Windows | None,
    indices: Sequence[int],
    loss: str = "sigmoid",
) -> torch.Tensor | PairEmbeddings:
    """The teacher's values of the chosen `samples` (at `indices` of their super-batch): its
    losses on their windows or texts (lm), or its stored pair embeddings (contrastive, judged by
    the pair `loss`)."""
    if windows is not None:
        return windows.teacher[list(indices)]
    if samples[0].embeddings is None:
        return torch.tensor([s.teacher_loss for s in samples], dtype=torch.float32)
    return teacher_embeddings(samples, loss)


def training_loss(model: nn.Module, batch: list | Weighted | Curated) -> torch.Tensor:
    """A batch's training loss: the plain one (`core.batch_loss`), learnability-weighted, or
    weighted by the curated weights."""
    if not isinstance(batch, Weighted | Curated):
        return batch_loss(model, batch)
    if model.task == "lm":
        losses = model.sequence_nll(batch.inputs).float()
        return (_weights_of(batch, losses, model.task) * losses).mean()
    left, right = zip(*batch.inputs, strict=True)
    embeddings = model.pair_embeddings(model.embed_left(left), model.embed_right(right))
    shares = _shares(embeddings)
    return (_weights_of(batch, shares, model.task) * shares).sum() / embeddings.size


def _weights_of(batch: Weighted | Curated, losses: torch.Tensor, task: str) -> torch.Tensor:
    """Each example's weight: curated, or from its learnability (student losses − teacher's)."""
    if isinstance(batch, Curated):
        return batch.weights.to(losses.device)
    teacher = batch.teacher if task == "lm" else pair_loss_shares(batch.teacher).float()
    return weights(losses.detach() - teacher.to(losses.device), batch)


def weights(scores: torch.Tensor, batch: Weighted) -> torch.Tensor:
    """b · softmax(s / τ): mean 1, more on what the student has yet to learn and can."""
    return soft_weights(scores, batch.temperature, torch.float32)


def _shares(embeddings: PairEmbeddings) -> torch.Tensor:
    """Each pair's share of the batch's loss, with gradients (a training batch is small: the
    B × B block is fine)."""
    return embeddings.example_losses()
