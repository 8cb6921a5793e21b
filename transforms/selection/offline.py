"""Offline selection inside one scored super-batch: the per-super-batch step of `jestflow curate`.

A model's outputs are quantised before selection (numerics differ in the last bits between CPU
kernels and devices), and each example's Gumbel noise is keyed by (seed, example key, chunk), so
the same inputs, options and seed select the same examples whatever the runner's parallelism, and
a record added to or edited in the pool changes only its own draw. The decisions carry the
quantised values, so everything written (shards, manifest) follows from them alone. Each selected
example also gets a soft weight (`jest.soft_weights` of the kept scores of its super-batch: mean
1), for trainers that weight their loss instead of selecting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import JestflowError
from ..models.losses import PAIR_LOSSES, PairEmbeddings
from ..records import Example
from ..vocabulary import METHODS, OFFLINE_MODES, PAIR_SCORE_MODES, check_choice
from .jest import (
    RELATIVE_TEMPERATURE,
    KeyedNoise,
    check_temperatures,
    pair_scores,
    score,
    select_independent,
    select_joint,
    soft_weights,
)
from .scores import ensemble_score


@dataclass(frozen=True, kw_only=True)
class ScoredBatch:
    """A super-batch with a model's outputs.

    `loss[i]` is example i's mean token NLL (lm; a classifier teacher's −log-odds) or its share of
    the super-batch's sigmoid loss (contrastive); `ensemble[i]` the other teachers' losses of
    example i (lm, several teachers); `embeddings` [n, 2, d] are the (left, right) embeddings with the model's
    temperature `scale` and `bias` (contrastive only); `windows[i]` are example i's windows'
    losses and `window` their width in tokens (lm, whole documents: kept for the shards, not
    selected on).
    """

    super_batch: int
    examples: list[Example]
    loss: np.ndarray
    embeddings: np.ndarray | None = None
    scale: float | None = None
    bias: float | None = None
    windows: list[tuple[float, ...] | None] | None = None
    window: int | None = None
    ensemble: np.ndarray | None = None  # [n, m]: the m other teachers' losses

    def quantised(self, quantum: float) -> ScoredBatch:
        """The batch with its losses and embeddings rounded to the selection grid."""
        embeddings = None if self.embeddings is None else quantise(self.embeddings, quantum)
        ensemble = None if self.ensemble is None else quantise(self.ensemble, quantum)
        loss = quantise(self.loss, quantum)
        return dataclasses.replace(self, loss=loss, embeddings=embeddings, ensemble=ensemble)

    def pair_embeddings(self, loss: str = "sigmoid") -> PairEmbeddings:
        if self.embeddings is None or self.scale is None or self.bias is None:
            raise ValueError("contrastive selection needs embeddings, scale and bias")
        emb = torch.from_numpy(self.embeddings)
        return PairEmbeddings(emb[:, 0], emb[:, 1], self.scale, self.bias, loss)


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    keep: float  # fraction of each super-batch to keep, in (0, 1]
    mode: str = "easy_reference"
    temperature: float | None = None  # absolute τ; None: relative_temperature × the spread
    relative_temperature: float = RELATIVE_TEMPERATURE
    n_chunks: int = 16
    method: str = "sample"
    seed: int = 0
    quantum: float = 1e-4  # losses and embeddings are rounded to this grid before selection
    # contrastive: the pair loss selection judges by, sigmoid or softmax (None: the teacher's,
    # which the job fills in; sigmoid where nothing does)
    loss: str | None = None
    # several teachers: the weight of each one's z-score (`scores.ensemble_score`), in the order
    # the teachers are given; all 1 when empty
    teacher_weights: tuple[float, ...] = ()

    @property
    def pair_loss(self) -> str:
        return self.loss or "sigmoid"

    def __post_init__(self) -> None:
        if not 0 < self.keep <= 1:
            raise JestflowError(f"keep must be in (0, 1], got {self.keep}")
        check_choice("offline score mode", self.mode, OFFLINE_MODES)
        check_choice("selection method", self.method, METHODS)
        check_temperatures(self.temperature, self.relative_temperature)
        if self.n_chunks < 1:
            raise JestflowError(f"chunks must be at least 1, got {self.n_chunks}")
        if self.loss is not None:
            check_choice("pair loss", self.loss, PAIR_LOSSES)
        if not all(math.isfinite(w) for w in self.teacher_weights):
            raise JestflowError(f"teacher weights must be finite, not {self.teacher_weights}")


@dataclass(frozen=True, kw_only=True)
class Decision:
    example: Example
    super_batch: int
    teacher_loss: float  # on the selection grid, as are the score and embeddings
    score: float
    order: int | None  # selection order inside the super-batch; None if not selected
    embeddings: np.ndarray | None = None  # the teacher's [2, d] for the shard's npy
    scale: float | None = None  # the teacher's t and β: with the embeddings they rebuild
    bias: float | None = None  # the teacher pair losses in the online trainer
    windows: tuple[float, ...] | None = None  # lm, whole documents: the teacher's window losses
    window: int | None = None  # … and the tokens a window predicts
    weight: float | None = None  # a selected example's soft weight among its super-batch's kept

    @property
    def selected(self) -> bool:
        return self.order is not None


def quantise(values: np.ndarray, quantum: float) -> np.ndarray:
    return (np.round(np.asarray(values, dtype=np.float64) / quantum) * quantum).astype(np.float32)


def kept_count(n: int, keep: float) -> int:
    """How many of a super-batch of n are kept: ⌈keep · n⌉, at least 1."""
    return min(n, max(1, math.ceil(keep * n - 1e-9)))


def select_super_batch(
    teacher: ScoredBatch, config: SelectionConfig, student: ScoredBatch | None = None
) -> list[Decision]:
    """Decide for every example of one super-batch whether it is kept (and in which order).

    Per-example tasks (no embeddings) use `select_independent`, on the ensemble's score where
    several teachers scored (`scores.ensemble_score`: the teacher's score by the mode, the others'
    −loss); contrastive tasks `select_joint` on lazy pair scores, or `select_independent` on a
    per-pair score (CLIP-score, negCLIPLoss). Learnability needs the student's outputs for the
    same super-batch.
    """
    n = len(teacher.examples)
    if config.mode == "learnability" and student is None:
        raise JestflowError("learnability needs a student checkpoint (--student)")
    if config.mode in PAIR_SCORE_MODES and teacher.embeddings is None:
        raise JestflowError(f"{config.mode} scores image–text or text pairs (--task contrastive)")
    k = kept_count(n, config.keep)
    teacher = teacher.quantised(config.quantum)
    student = None if student is None else student.quantised(config.quantum)
    scores = example_scores(teacher, config, student)
    options = {
        "temperature": config.temperature,
        "relative_temperature": config.relative_temperature,
        "method": config.method,
        "noise": KeyedNoise([example.key for example in teacher.examples], config.seed),
    }
    if teacher.embeddings is None or config.mode in PAIR_SCORE_MODES:
        chosen = select_independent(scores, k, **options)
    else:
        loss = config.pair_loss
        pairs = pair_scores(
            config.mode,
            teacher=teacher.pair_embeddings(loss),
            student=None if student is None else student.pair_embeddings(loss),
        )
        chosen = select_joint(pairs, k, n_chunks=config.n_chunks, **options)
    order = {int(i): rank for rank, i in enumerate(chosen.tolist())}
    kept_weights = soft_weights(scores[chosen], config.temperature).tolist()
    weight = dict(zip(chosen.tolist(), kept_weights, strict=True))
    return [
        Decision(
            example=example,
            super_batch=teacher.super_batch,
            teacher_loss=float(teacher.loss[i]),
            score=float(scores[i]),
            order=order.get(i),
            embeddings=None if teacher.embeddings is None else teacher.embeddings[i],
            scale=teacher.scale,
            bias=teacher.bias,
            windows=None if teacher.windows is None else teacher.windows[i],
            window=teacher.window,
            weight=weight.get(i),
        )
        for i, example in enumerate(teacher.examples)
    ]


def example_scores(
    teacher: ScoredBatch, config: SelectionConfig, student: ScoredBatch | None
) -> torch.Tensor:
    """Each example's score of a (quantised) super-batch: a per-pair score, or the mode's score of
    the losses, combined with the other teachers' where there are (`scores.ensemble_score`)."""
    if config.mode in PAIR_SCORE_MODES:
        return pair_score(config.mode, teacher.pair_embeddings("softmax"))
    student_loss = None if student is None else torch.from_numpy(student.loss)
    scores = score(config.mode, student=student_loss, teacher=torch.from_numpy(teacher.loss))
    if teacher.ensemble is None:
        return scores
    others = [-torch.from_numpy(column) for column in teacher.ensemble.T]
    return ensemble_score([scores, *others], config.teacher_weights)


def pair_score(mode: str, emb: PairEmbeddings) -> torch.Tensor:
    """A per-pair score of a super-batch, float64: `clip_score`, the cosine similarity ⟨u_i, v_i⟩
    (DataComp's CLIP-score filter); `neg_clip_loss`, t·⟨u_i, v_i⟩ − ½ (log Σ_j e^{t⟨u_i, v_j⟩} +
    log Σ_j e^{t⟨u_j, v_i⟩}), minus the pair's softmax (CLIP) loss with the super-batch's other
    pairs as negatives (negCLIPLoss: a pair that matches everything scores lower)."""
    if mode == "clip_score":
        return (emb.left.double() * emb.right.double()).sum(1)
    return -emb.softmax_losses()
