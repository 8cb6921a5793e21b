"""Model scoring inside Beam: a RunInference `ModelHandler` that scores whole super-batches.

Each element is one super-batch `(id, [Example])` in a fixed order, so the batches the models
see (length buckets inside the super-batch) never depend on how the runner bundled the data:
scores are the same whatever the parallelism. The teacher — and the student, for learnability —
load once per worker (or are shared across processes with `large_model`), on CUDA when there is
one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from apache_beam.ml.inference.base import ModelHandler
from torch import nn

from ..transforms.checkpoint import load_model
from ..transforms.curation import ScoredBatch
from ..transforms.records import Example
from ..transforms.scoring import (
    embed_pairs,
    lm_losses,
    pair_inputs,
    pair_loss_shares,
    resolve_device,
)

SuperBatch = tuple[int, list[Example]]


class Scored(NamedTuple):
    teacher: ScoredBatch
    student: ScoredBatch | None
    seconds: float = 0.0  # scoring time of the super-batch


def score_super_batch(
    model: nn.Module,
    super_batch: int,
    examples: list[Example],
    *,
    task: str,
    max_tokens: int | None = None,
) -> ScoredBatch:
    """One model's outputs for a super-batch: losses, and embeddings for contrastive tasks."""
    if task == "lm":
        losses = lm_losses(model, [ex.text for ex in examples], max_tokens=max_tokens)
        return ScoredBatch(super_batch=super_batch, examples=examples, loss=losses.numpy())
    emb = embed_pairs(model, *pair_inputs(examples), max_tokens=max_tokens)
    return ScoredBatch(
        super_batch=super_batch,
        examples=examples,
        loss=pair_loss_shares(emb).numpy(),
        embeddings=np.stack([emb.left.numpy(), emb.right.numpy()], axis=1),
        scale=emb.scale,
        bias=emb.bias,
    )


@dataclass(frozen=True)
class Models:
    """The loaded teacher (and student). Not a tuple: Beam keeps a weak reference to it. With
    `large_model`/`model_copies` Beam hands out a proxy that forwards method calls only, so
    scoring is a method."""

    teacher: nn.Module
    student: nn.Module | None
    task: str
    max_tokens: int | None

    def score(self, super_batch: int, examples: list[Example]) -> Scored:
        start = time.perf_counter()
        options = {"task": self.task, "max_tokens": self.max_tokens}
        teacher = score_super_batch(self.teacher, super_batch, examples, **options)
        student = (
            None
            if self.student is None
            else score_super_batch(self.student, super_batch, examples, **options)
        )
        return Scored(teacher, student, time.perf_counter() - start)


class ScoringHandler(ModelHandler[SuperBatch, Scored, Models]):
    def __init__(
        self,
        teacher: str,
        *,
        task: str,
        student: str | None = None,
        device: str = "auto",
        max_tokens: int | None = None,  # padded tokens per batch [scoring.batch_tokens]
        large_model: bool = False,
        model_copies: int | None = None,
        torch_threads: int | None = None,
    ) -> None:
        # One super-batch per call: it is already a large, deterministic batch.
        super().__init__(max_batch_size=1, large_model=large_model, model_copies=model_copies)
        self.teacher, self.student, self.task = teacher, student, task
        self.device, self.max_tokens, self.torch_threads = device, max_tokens, torch_threads

    def load_model(self) -> Models:
        if self.torch_threads:  # local workers share the machine's cores
            torch.set_num_threads(self.torch_threads)
        device = resolve_device(self.device)
        teacher = load_model(self.teacher, task=self.task, device=device)
        student = (
            None
            if self.student is None
            else load_model(self.student, task=self.task, device=device)
        )
        return Models(teacher, student, self.task, self.max_tokens)

    def run_inference(
        self,
        batch: Sequence[SuperBatch],
        model: Models,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Scored]:
        return [model.score(super_batch, examples) for super_batch, examples in batch]

    def get_num_bytes(self, batch: Sequence[SuperBatch]) -> int:
        return sum(
            len(ex.text) + len(ex.pair or "") + len(ex.image or b"")
            for _, exs in batch
            for ex in exs
        )

    def get_metrics_namespace(self) -> str:
        return "jestflow_scoring"
