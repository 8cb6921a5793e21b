"""The part of JEST only the student can do: re-score a super-batch drawn from the shards with
the student's own loss, combine it with the teacher's values stored in the shards, and choose the
sub-batch to train on.

Per-example tasks (lm): learnability = ℓ(student) − ℓ(teacher) per example, `select_independent`.
Contrastive tasks: the teacher's stored embeddings and (t, β) rebuild the teacher pair losses,
the student's embeddings give its own, and `select_joint` draws the sub-batch in chunks.
`uniform` takes the first b, so comparisons against it are fair.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.shard_samples import TrainSample
from ..transforms.models.losses import PairEmbeddings
from ..transforms.models.scoring import pair_embeddings, sequence_losses
from ..transforms.selection.jest import (
    RELATIVE_TEMPERATURE,
    pair_scores,
    score,
    select_independent,
    select_joint,
)
from ..transforms.vocabulary import DRAW_B_MODES, ONLINE_MODES, check_choice
from .core import eval_mode, model_inputs
from .windows import Windows


@dataclass(frozen=True, kw_only=True)
class OnlineSelection:
    indices: list[int]  # into the super-batch, in selection order
    learnability: float | None  # mean ℓ(student) − ℓ(teacher) of the chosen (per example)
    seconds: float  # the student's scoring pass and the selection
    # each candidate's own score (contrastive: its pair's diagonal term); None for uniform
    scores: torch.Tensor | None = None


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ of two score vectors (ties ranked by position): how alike two scorings
    order the same candidates, e.g. a cheap pass and the full one."""
    ranks = [torch.argsort(torch.argsort(x, stable=True)).double() for x in (a, b)]
    centred = [r - r.mean() for r in ranks]
    return (centred[0] @ centred[1] / (centred[0].norm() * centred[1].norm())).item()


def teacher_embeddings(samples: Sequence[TrainSample], loss: str = "sigmoid") -> PairEmbeddings:
    """The teacher's pair embeddings and (t, β), as stored in the shards, judged by `loss`."""
    first = samples[0]
    if first.teacher_scale is None or first.teacher_bias is None:
        raise JestflowError("contrastive shards lack teacher_scale/teacher_bias: re-run curate")
    stacked = torch.from_numpy(np.stack([s.embeddings for s in samples]).astype(np.float32))
    scale, bias = first.teacher_scale, first.teacher_bias
    return PairEmbeddings(stacked[:, 0], stacked[:, 1], scale, bias, loss)


def scoring_inputs(
    model: nn.Module,
    samples: Sequence[TrainSample],
    *,
    score_max_len: int | None = None,
    windows: Windows | None = None,
) -> list:
    """What the student scores of each sample: its drawn window (lm documents), its first
    `score_max_len` tokens (lm, a cheaper pass; None: all the model reads), or its two towers'
    inputs (contrastive)."""
    if windows is not None:
        return windows.sequences
    texts = [s.text for s in samples]
    if model.task == "lm":
        return model.tokenize(texts, score_max_len)
    return model_inputs(model, texts, [s.right for s in samples])


def student_losses(model: nn.Module, scored: Sequence) -> torch.Tensor | PairEmbeddings:
    """The student's per-example losses of token sequences (lm) or its pair embeddings of
    (left, right) inputs (contrastive), without gradients (in inference mode: they only
    choose)."""
    with eval_mode(model), torch.inference_mode():
        if model.task == "lm":
            return sequence_losses(model, scored)
        left, right = zip(*scored, strict=True)
        return pair_embeddings(model, left, right)


def select_online(
    model: nn.Module,
    samples: Sequence[TrainSample],
    b: int,
    *,
    mode: str = "learnability",
    n_chunks: int = 16,
    temperature: float | None = None,
    relative_temperature: float = RELATIVE_TEMPERATURE,
    generator: torch.Generator | None = None,
    score_max_len: int | None = None,
    windows: Windows | None = None,
    scored: Sequence | None = None,
) -> OnlineSelection:
    """Choose b of the super-batch `samples` for one training step (lm documents scored whole:
    on the drawn `windows`, against the teacher's losses on the same windows). `scored`: the
    student's inputs of the samples, made ahead (`prefetch.prepare`); else made here."""
    check_choice("mode", mode, ONLINE_MODES)
    if not 0 < b <= len(samples):
        raise JestflowError(f"cannot choose {b} of a super-batch of {len(samples)}")
    start = time.perf_counter()
    if mode in DRAW_B_MODES:  # trains on what it drew
        return OnlineSelection(indices=list(range(b)), learnability=None, seconds=0.0)
    if scored is None and mode != "easy_reference":
        scored = scoring_inputs(model, samples, score_max_len=score_max_len, windows=windows)
    student = None if mode == "easy_reference" else student_losses(model, scored)
    options = {
        "temperature": temperature,
        "relative_temperature": relative_temperature,
        "noise": generator,
    }
    # hard_learner needs no teacher values (raw data has none); the learnability of the chosen
    # is logged only where both models' values exist.
    has_teacher = mode != "hard_learner" or not np.isnan(samples[0].teacher_loss)
    if model.task == "lm":
        teacher = (
            windows.teacher
            if windows is not None
            else torch.tensor([s.teacher_loss for s in samples], dtype=torch.float32)
        )
        scores = score(mode, student=student, teacher=teacher)
        chosen = select_independent(scores, b, **options)
        gap = None if student is None or not has_teacher else (student - teacher)[chosen].mean()
    else:
        teacher = teacher_embeddings(samples, model.pair_loss) if has_teacher else None
        pairs = pair_scores(mode, student=student, teacher=teacher)
        chosen = select_joint(pairs, b, n_chunks=n_chunks, **options)
        scores = pairs.first()
        gap = (
            None
            if student is None or teacher is None
            else (own_losses(student) - own_losses(teacher))[chosen].mean()
        )
    return OnlineSelection(
        indices=chosen.tolist(),
        learnability=None if gap is None else gap.item(),
        seconds=time.perf_counter() - start,
        scores=scores,
    )


def own_losses(emb: PairEmbeddings) -> torch.Tensor:
    """Each pair's loss by the first chunk's rule: alone (sigmoid), or against the super-batch
    (softmax: alone it has none)."""
    return emb.diagonal_losses() if emb.loss == "sigmoid" else emb.softmax_losses().float()
