"""Fitting a built-in reference (teacher) model on a curated reference set: `jestflow teacher train`.

Plain uniform training: the reference set is small and already clean, so it is read into memory,
tokenized once, and sampled in shuffled epochs. The result is a checkpoint directory
(config.json + model.safetensors) plus `metrics.json` with the loss curve and held-out loss.
"""

from __future__ import annotations

import math
import posixpath
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..transforms.checkpoint import save_checkpoint
from ..transforms.errors import JestflowError
from ..transforms.losses import PairEmbeddings
from ..transforms.models import SIZE_KEYS, new_model
from ..transforms.paths import writable_directory, write_json
from ..transforms.readers import read_examples
from ..transforms.records import Example, FieldMap, Rejected
from ..transforms.scoring import autocast, embed_pairs, lm_losses, pair_inputs, resolve_device
from ..transforms.vocabulary import LAYOUTS, TASKS, check_choice


@dataclass(kw_only=True)
class ModelSize:
    """The built-in model's size for a fresh model (None: the architecture's default)."""

    d_model: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    max_len: int | None = None

    @property
    def model_size(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in SIZE_KEYS}


@dataclass(kw_only=True)
class TeacherConfig(ModelSize):
    inputs: tuple[str, ...]
    output: str
    task: str
    fields: FieldMap
    eval_inputs: tuple[str, ...] = ()
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        if self.fields.layout not in LAYOUTS[self.task]:
            raise JestflowError(
                f"task {self.task} needs {' or '.join(LAYOUTS[self.task])} fields, "
                f"but the field mapping gives {self.fields.layout}"
            )
        if self.steps < 1 or self.batch_size < 2 or not self.lr > 0:
            raise JestflowError("steps must be ≥ 1, batch size ≥ 2 and the learning rate > 0")


@dataclass(kw_only=True)
class TeacherResult:
    output: str
    fingerprint: str
    examples: int
    rejected: dict[str, int]
    eval_examples: int
    eval_rejected: dict[str, int]
    train_loss: float  # mean of the last 50 steps
    eval_loss: float | None
    eval_recall_at_1: float | None
    seconds: float
    curve: list[dict] = field(default_factory=list)


def right_kind_of(layout: str) -> str:
    """A two-tower model's right tower for a field layout: `image` for image-text pairs."""
    return "image" if layout == "image_text" else "text"


def load_examples(inputs: Sequence[str], fields: FieldMap) -> tuple[list[Example], Counter]:
    """All examples of the inputs, and the count of rejected records by reason."""
    examples: list[Example] = []
    rejected: Counter = Counter()
    first: Rejected | None = None
    for record in read_examples(inputs, fields):
        if isinstance(record, Rejected):
            rejected[record.reason] += 1
            first = first or record
        else:
            examples.append(record)
    if not examples:
        why = (
            f"; first problem: {first.source} record {first.position}: {first.detail}"
            if first
            else ""
        )
        raise JestflowError(f"no usable examples in {', '.join(inputs)}{why}")
    return examples, rejected


def model_inputs(model: nn.Module, texts: Sequence[str], right: Sequence | None = None) -> list:
    """Training inputs: token tensors (lm), or (left, right) pairs of a two-tower model's inputs
    (`right`: the documents or images)."""
    if model.task == "lm":
        return model.tokenize(list(texts))
    return list(zip(model.prepare_left(list(texts)), model.prepare_right(list(right)), strict=True))


def prepare(model: nn.Module, examples: Sequence[Example]) -> list:
    """Model inputs for each example, computed once."""
    if model.task == "lm":
        return model_inputs(model, [ex.text for ex in examples])
    return model_inputs(model, *pair_inputs(examples))


def batch_loss(model: nn.Module, batch: Sequence) -> torch.Tensor:
    """The training loss of one batch: mean token NLL, or the sigmoid loss Σ_ij ℓ_ij / B."""
    if model.task == "lm":
        return model.sequence_nll(batch).mean()
    left, right = zip(*batch, strict=True)
    return model.pair_embeddings(model.embed_left(left), model.embed_right(right)).batch_loss()


def evaluate(
    model: nn.Module, examples: Sequence[Example], batch_size: int
) -> tuple[float, float | None]:
    """Held-out loss (and recall@1 within batches of `batch_size`, for contrastive models)."""
    was_training = model.training
    model.eval()
    try:
        if model.task == "lm":
            return lm_losses(model, [ex.text for ex in examples]).mean().item(), None
        emb = embed_pairs(model, *pair_inputs(examples))
        # The sigmoid loss and recall@1 depend on the batch size: score full batches only
        # (all examples as one batch when there are fewer than `batch_size`).
        size = min(batch_size, len(examples))
        losses, hits = [], 0
        for start in range(0, len(examples) - size + 1, size):
            block = torch.arange(start, start + size)
            chunk = PairEmbeddings(emb.left[block], emb.right[block], emb.scale, emb.bias)
            losses.append(chunk.batch_loss().item())
            similarity = chunk.left @ chunk.right.T
            hits += (similarity.argmax(1) == torch.arange(size)).sum().item()
        return sum(losses) / len(losses), hits / (len(losses) * size)
    finally:
        model.train(was_training)


def train_teacher(config: TeacherConfig) -> TeacherResult:
    start = time.perf_counter()
    device = resolve_device(config.device)
    examples, rejected = load_examples(config.inputs, config.fields)
    held_out, eval_rejected = (
        load_examples(config.eval_inputs, config.fields) if config.eval_inputs else ([], Counter())
    )
    writable_directory(config.output)  # fail now, not after training

    torch.manual_seed(config.seed)
    right_kind = right_kind_of(config.fields.layout)
    model = new_model(config.task, right_kind=right_kind, **config.model_size).to(device).train()
    items = prepare(model, examples)

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.steps)
    )
    generator = torch.Generator().manual_seed(config.seed)
    batches = _shuffled_batches(len(items), min(config.batch_size, len(items)), generator)

    curve: list[dict] = []
    recent: list[float] = []  # the last losses, whose mean is reported as the final training loss
    smoothed = None
    bar = tqdm(range(config.steps), desc="teacher train", unit="step", disable=not config.progress)
    for step in bar:
        with autocast(device):
            loss = batch_loss(model, [items[i] for i in next(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        value = loss.item()
        recent = [*recent[-49:], value]
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{smoothed:.3f}")
            curve.append({"step": step + 1, "loss": value})

    eval_loss, recall = evaluate(model, held_out, config.batch_size) if held_out else (None, None)
    meta = {
        "trained_by": "jestflow teacher train",
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "examples": len(examples),
        "fields": asdict(config.fields),
    }
    fingerprint = save_checkpoint(model, config.output, meta=meta)
    result = TeacherResult(
        output=config.output,
        fingerprint=fingerprint,
        examples=len(examples),
        rejected=dict(rejected),
        eval_examples=len(held_out),
        eval_rejected=dict(eval_rejected),
        train_loss=sum(recent) / len(recent),
        eval_loss=eval_loss,
        eval_recall_at_1=recall,
        seconds=time.perf_counter() - start,
        curve=curve,
    )
    _write_metrics(config.output, result)
    return result


def _shuffled_batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless batches of indices: each epoch a fresh permutation (the last partial batch dropped)."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _write_metrics(directory: str, result: TeacherResult) -> None:
    write_json(asdict(result), posixpath.join(directory, "metrics.json"))
