"""Model scoring inside Beam: a RunInference `ModelHandler` that scores chunks of examples as
they stream in from the inputs, before any grouping.

Each element is one `Chunk` of an input file's examples, cut the same way whatever the runner,
so the batches the models see (length buckets inside the chunk, under a token budget) never
depend on how the runner bundled the data: scores are the same whatever the parallelism. What a
model gives each example does not depend on the other examples of its super-batch (an LM's loss;
a two-tower model's embeddings, from which selection rebuilds the pair losses), so scoring comes
before the grouping into super-batches, and only the outputs travel on. The teacher — and the student, for learnability —
load once per worker (or are shared across processes with `large_model`), on CUDA when there is
one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from apache_beam.ml.inference.base import ModelHandler
from torch import nn

from ..transforms.formats.model_files import load_model
from ..transforms.formats.score_cache import Candidate, ModelOutput
from ..transforms.models.classifier import classifier_loss, log_odds
from ..transforms.models.documents import LmScoring
from ..transforms.models.losses import PairEmbeddings
from ..transforms.models.scoring import (
    embed_pairs,
    pair_inputs,
    pair_loss_shares,
    precision,
    resolve_device,
)
from ..transforms.records import Example
from ..transforms.selection.offline import ScoredBatch


class Chunk(NamedTuple):
    """Examples of one input file (`file`), cut from its spilled payloads; `name` says where
    (the file, its buckets, the part) and names what is spilled of it."""

    file: int
    name: str
    candidates: list[Candidate]


class Scored(NamedTuple):
    file: int
    name: str
    examples: list[Example]
    outputs: dict[str, list[ModelOutput]]  # role → each example's output
    fresh: dict[str, dict[str, ModelOutput]]  # role → outputs not from the cache, by example id
    seconds: float = 0.0  # scoring time of the chunk
    capped: int = 0  # lm: examples with more tokens than were scored of them (the teacher's)

    def counts(self) -> Counter[str]:
        """`teacher.scored`, `teacher.cached` (and the student's): examples, not distinct ids."""
        n = len(self.examples)
        counts: Counter[str] = Counter()
        for role, fresh in self.fresh.items():
            scored = sum(ex.id in fresh for ex in self.examples)
            counts[f"{role}.scored"] += scored
            counts[f"{role}.cached"] += n - scored
        if self.capped:
            counts["capped"] += self.capped
        return counts


def model_outputs(
    model: nn.Module,
    examples: list[Example],
    *,
    task: str,
    max_tokens: int | None = None,
    lm_scoring: LmScoring | None = None,
) -> list[ModelOutput]:
    """One model's output for each example: its LM loss (on what `lm_scoring` says: the first
    tokens, or the whole document window by window), a classifier's −log-odds, or its pair
    embeddings with t and β."""
    if not examples:
        return []
    computed_in = precision(model.device)
    if model.task == "classifier":
        values = classifier_loss(log_odds(model, [ex.text for ex in examples]))
        return [ModelOutput(loss=value, precision=computed_in) for value in values.tolist()]
    if task == "lm":
        texts = [ex.text for ex in examples]
        losses, documents = (lm_scoring or LmScoring()).score(model, texts, batch_tokens=max_tokens)
        if documents is None:
            return [ModelOutput(loss=loss, precision=computed_in) for loss in losses.tolist()]
        return [
            ModelOutput(
                loss=loss, windows=float16(windows), window=documents.width, precision=computed_in
            )
            for loss, windows in zip(losses.tolist(), documents.windows, strict=True)
        ]
    emb = embed_pairs(model, *pair_inputs(examples), max_tokens=max_tokens)
    pairs = torch.stack([emb.left, emb.right], dim=1).numpy()
    return [
        ModelOutput(embeddings=pair, scale=emb.scale, bias=emb.bias, precision=computed_in)
        for pair in pairs
    ]


def scored_batch(
    super_batch: int,
    examples: list[Example],
    outputs: list[ModelOutput],
    *,
    task: str,
    loss: str = "sigmoid",
    ensemble: np.ndarray | None = None,
) -> ScoredBatch:
    """A super-batch's losses from its examples' outputs (lm: with the other teachers' losses,
    `ensemble`); for contrastive tasks each example's share of the super-batch's pair loss
    (`loss`: sigmoid or softmax), rebuilt from the embeddings."""
    if task == "lm":
        loss = np.asarray([out.loss for out in outputs], dtype=np.float32)
        windows = [out.windows for out in outputs]
        return ScoredBatch(
            super_batch=super_batch,
            examples=examples,
            loss=loss,
            windows=windows if any(w is not None for w in windows) else None,
            window=next((out.window for out in outputs if out.window is not None), None),
            ensemble=ensemble,
        )
    pairs = np.stack([out.embeddings for out in outputs])
    scale, bias = outputs[0].scale, outputs[0].bias
    left, right = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    emb = PairEmbeddings(left, right, scale, bias, loss)
    return ScoredBatch(
        super_batch=super_batch,
        examples=examples,
        loss=pair_loss_shares(emb).numpy(),
        embeddings=pairs,
        scale=scale,
        bias=bias,
    )


@dataclass(frozen=True)
class Models:
    """The loaded models by role (teacher, the other teachers, student). Not a tuple: Beam keeps
    a weak reference to it. With `large_model`/`model_copies` Beam hands out a proxy that
    forwards method calls only, so scoring is a method."""

    models: dict[str, nn.Module]
    task: str
    max_tokens: int | None
    lm_scoring: LmScoring | None

    def score(self, chunk: Chunk) -> Scored:
        """Every model's outputs for a chunk, running each model only on the examples it has no
        cached output for."""
        start = time.perf_counter()
        candidates = chunk.candidates
        examples = [c.example for c in candidates]
        every, fresh = {}, {}
        for role, model in self.models.items():
            outputs = [c.output(role, precision(model.device)) for c in candidates]
            missing = [i for i, out in enumerate(outputs) if out is None]
            new = model_outputs(
                model,
                [examples[i] for i in missing],
                task=self.task,
                max_tokens=self.max_tokens,
                lm_scoring=self.lm_scoring,
            )
            for i, out in zip(missing, new, strict=True):
                outputs[i] = out
            fresh[role] = {examples[i].id: out for i, out in zip(missing, new, strict=True)}
            every[role] = outputs
        seconds = time.perf_counter() - start
        teacher = self.models["teacher"]
        capped = (
            0
            if self.lm_scoring is None or teacher.task != "lm"
            else self.lm_scoring.capped(teacher, [ex.text for ex in examples])
        )
        return Scored(chunk.file, chunk.name, examples, every, fresh, seconds, capped)


class ScoringHandler(ModelHandler[Chunk, Scored, Models]):
    def __init__(
        self,
        models: dict[str, str],  # role → checkpoint (teacher, teacher_2 …, student)
        *,
        task: str,
        device: str = "auto",
        max_tokens: int | None = None,  # padded tokens per batch [scoring.batch_tokens]
        lm_scoring: LmScoring | None = None,  # lm: what is scored of each text
        large_model: bool = False,
        model_copies: int | None = None,
        torch_threads: int | None = None,
    ) -> None:
        # One chunk per call: it is already a large, deterministic batch.
        super().__init__(max_batch_size=1, large_model=large_model, model_copies=model_copies)
        self.models, self.task = dict(models), task
        self.device, self.max_tokens, self.torch_threads = device, max_tokens, torch_threads
        self.lm_scoring = lm_scoring

    def load_model(self) -> Models:
        if self.torch_threads:  # local workers share the machine's cores
            torch.set_num_threads(self.torch_threads)
        device = resolve_device(self.device)
        loaded = {role: load_model(path, device=device) for role, path in self.models.items()}
        return Models(loaded, self.task, self.max_tokens, self.lm_scoring)

    def run_inference(
        self,
        batch: Sequence[Chunk],
        model: Models,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Scored]:
        return [model.score(chunk) for chunk in batch]

    def get_num_bytes(self, batch: Sequence[Chunk]) -> int:
        return sum(
            len(c.example.text) + len(c.example.pair or "") + len(c.example.image or b"")
            for chunk in batch
            for c in chunk.candidates
        )

    def get_metrics_namespace(self) -> str:
        return "jestflow_scoring"


def float16(values: torch.Tensor) -> tuple[float, ...]:
    """Per-window losses as the shards keep them: rounded to float16 (3 significant digits)."""
    return tuple(values.to(torch.float16).float().tolist())
