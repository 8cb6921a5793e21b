"""Teacher scoring inside Beam: a RunInference `ModelHandler` that scores whole super-batches.

Each element is one super-batch `(id, [Example])` in a fixed order, so the batches the model
sees (length buckets inside the super-batch) never depend on how the runner bundled the data:
scores are the same whatever the parallelism. The model loads once per worker (or is shared
across processes with `large_model`), on CUDA when there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
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


class TeacherHandler(ModelHandler[SuperBatch, ScoredBatch, nn.Module]):
    def __init__(
        self,
        teacher: str,
        *,
        task: str,
        device: str = "auto",
        max_tokens: int = 32_768,
        large_model: bool = False,
        model_copies: int | None = None,
    ) -> None:
        # One super-batch per call: it is already a large, deterministic batch.
        super().__init__(max_batch_size=1, large_model=large_model, model_copies=model_copies)
        self.teacher, self.task, self.device, self.max_tokens = teacher, task, device, max_tokens

    def load_model(self) -> nn.Module:
        return load_model(self.teacher, task=self.task, device=resolve_device(self.device))

    def run_inference(
        self,
        batch: Sequence[SuperBatch],
        model: nn.Module,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[ScoredBatch]:
        for super_batch, examples in batch:
            if self.task == "lm":
                losses = lm_losses(model, [ex.text for ex in examples], max_tokens=self.max_tokens)
                yield ScoredBatch(super_batch=super_batch, examples=examples, loss=losses.numpy())
                continue
            emb = embed_pairs(model, *pair_inputs(examples), max_tokens=self.max_tokens)
            yield ScoredBatch(
                super_batch=super_batch,
                examples=examples,
                loss=pair_loss_shares(emb).numpy(),
                embeddings=np.stack([emb.left.numpy(), emb.right.numpy()], axis=1),
                scale=emb.scale,
                bias=emb.bias,
            )

    def get_num_bytes(self, batch: Sequence[SuperBatch]) -> int:
        return sum(
            len(ex.text) + len(ex.pair or "") + len(ex.image or b"")
            for _, exs in batch
            for ex in exs
        )

    def get_metrics_namespace(self) -> str:
        return "jestflow_teacher"
