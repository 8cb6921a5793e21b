"""Fitting a teacher model on a curated reference set: `jestflow teacher train`.

A fresh built-in model, or (`init`) a pretrained one fine-tuned: a jestflow checkpoint, or a
Hugging Face causal LM, text encoder or image–text dual encoder (at 3e-5 unless `lr` is given).
Plain uniform training: the reference set is small and already clean, so it is read into memory,
tokenized once, and sampled in shuffled epochs. A language model trains on every window of every
document (up to `DEFAULT_SCORE_MAX_TOKENS` tokens of each), cut as curation scores them, so it
learns what whole documents hold and not only how they start; it is judged on whole held-out
documents. The result is a checkpoint directory (a jestflow one, or a Hugging Face one with
(t, β) and the training settings in `jestflow.json`) plus `metrics.json` with the loss curve and
held-out loss. An output directory that holds anything is refused unless `overwrite`.
"""

from __future__ import annotations

import functools
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import save_checkpoint
from ..transforms.memory import peak_rss_mib
from ..transforms.models.classifier import classifier_batch_loss
from ..transforms.models.documents import document_windows
from ..transforms.models.scoring import resolve_device
from ..transforms.paths import write_json
from ..transforms.records import Example, FieldMap
from ..transforms.reporting.logs import progress
from ..transforms.vocabulary import LAYOUTS, MODEL_TASKS, check_choice
from . import output_folder
from .classifier_data import (
    HELD_OUT,
    classifier_items,
    evaluate_classifier,
    labelled,
    sample_negatives,
)
from .core import (
    ModelSize,
    Optimization,
    evaluate,
    fresh_model,
    initial_model,
    load_examples,
    prepare,
    right_kind_of,
    start_training,
)

RECENT = 50  # the training loss reported is the mean over this many last steps


@dataclass(kw_only=True)
class TeacherConfig(ModelSize, Optimization):
    inputs: tuple[str, ...]
    output: str
    task: str
    fields: FieldMap
    eval_inputs: tuple[str, ...] = ()
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    init: str | None = None  # fine-tune this checkpoint instead of a fresh built-in model
    overwrite: bool = False  # replace what `output` holds
    # classifier: the pool a seeded random sample of which is the negatives (the inputs are the
    # positives), and how many (None: as many as the inputs hold)
    negatives: tuple[str, ...] = ()
    negatives_count: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("task", self.task, MODEL_TASKS)
        self._check_classifier()
        if self.fields.layout not in LAYOUTS[self.task]:
            raise JestflowError(
                f"task {self.task} needs {' or '.join(LAYOUTS[self.task])} fields, "
                f"but the field mapping gives {self.fields.layout}"
            )
        if self.steps < 1 or self.batch_size < 2 or not (self.lr is None or self.lr > 0):
            raise JestflowError("steps must be ≥ 1, batch size ≥ 2 and the learning rate > 0")
        sized = sorted(k for k, v in self.model_size.items() if v is not None)
        if self.init is not None and sized:
            raise JestflowError(
                f"--init {self.init} brings its own architecture; drop {', '.join(sized)}"
            )

    def _check_classifier(self) -> None:
        if self.task != "classifier":
            if self.negatives or self.negatives_count is not None:
                raise JestflowError("negatives are for a classifier teacher (task classifier)")
            return
        if not self.negatives:
            raise JestflowError(
                "a classifier learns the reference inputs against a sample of the pool: "
                "negatives (the pool's files) is not set"
            )
        if self.eval_inputs:
            raise JestflowError(
                f"a classifier holds out {HELD_OUT:.0%} of both classes for its figures; "
                "eval_inputs is for lm and contrastive teachers"
            )
        if self.negatives_count is not None and self.negatives_count < 1:
            raise JestflowError(f"negatives_count must be at least 1, not {self.negatives_count}")


@dataclass(kw_only=True)
class TeacherResult:
    output: str
    fingerprint: str
    examples: int
    windows: int | None  # lm: the windows of the examples it trained on
    context: int | None  # lm: the tokens a window predicts at most
    rejected: dict[str, int]
    eval_examples: int
    eval_rejected: dict[str, int]
    mean_train_loss: float  # the mean training loss of the last `mean_train_loss_steps` steps
    mean_train_loss_steps: int  # RECENT, or every step of a shorter run
    eval_loss: float | None
    eval_recall_at_1: float | None
    seconds: float
    curve: list[dict] = field(default_factory=list)
    negatives: int | None = None  # classifier: the pool's examples it learned against
    eval_accuracy: float | None = None  # classifier: on the held-out share of both classes


def train_teacher(config: TeacherConfig) -> TeacherResult:
    if config.task == "classifier":
        return train_classifier(config)
    start = time.perf_counter()
    device = resolve_device(config.device)
    examples, rejected = load_examples(config.inputs, config.fields)
    held_out, eval_rejected = (
        load_examples(config.eval_inputs, config.fields) if config.eval_inputs else ([], Counter())
    )
    inputs = [*config.inputs, *config.eval_inputs, config.init]
    held = output_folder.claim(config.output, overwrite=config.overwrite, inputs=inputs)
    model, curve, recent, lr, items = _fit(config, device, examples)
    eval_loss, recall = (
        evaluate(model, held_out, config.batch_size, whole_documents=True)
        if held_out
        else (None, None)
    )
    output_folder.clear(config.output, held)  # only with `overwrite`
    return _saved(
        config,
        model,
        _meta(config, lr, len(examples)),
        start,
        curve,
        recent,
        examples=len(examples),
        windows=items if config.task == "lm" else None,
        context=model.context if config.task == "lm" else None,
        rejected=dict(rejected),
        eval_examples=len(held_out),
        eval_rejected=dict(eval_rejected),
        eval_loss=eval_loss,
        eval_recall_at_1=recall,
    )


def _saved(
    config: TeacherConfig,
    model: nn.Module,
    meta: dict,
    start: float,
    curve: list[dict],
    recent: Sequence[float],
    **figures: Any,
) -> TeacherResult:
    """Save a trained teacher's checkpoint (with `meta`) and its metrics.json: its result, with
    the figures every teacher has (the last steps' mean loss, the seconds since `start`)."""
    result = TeacherResult(
        output=config.output,
        fingerprint=save_checkpoint(model, config.output, meta=meta),
        mean_train_loss=sum(recent) / len(recent),
        mean_train_loss_steps=len(recent),
        seconds=time.perf_counter() - start,
        curve=curve,
        **figures,
    )
    write_json(asdict(result), posixpath.join(config.output, "metrics.json"))
    return result


def _meta(config: TeacherConfig, lr: float, examples: int) -> dict:
    """What a teacher's checkpoint records of its training."""
    return {
        "trained_by": "jestflow teacher train",
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": lr,
        "init": config.init,
        "seed": config.seed,
        "examples": examples,
        "fields": asdict(config.fields),
    }


def train_classifier(config: TeacherConfig) -> TeacherResult:
    """A classifier teacher: the inputs (label 1) against a seeded sample of the negatives' pool
    (label 0), HELD_OUT of each held out for the held-out loss and accuracy."""
    start = time.perf_counter()
    device = resolve_device(config.device)
    positives, rejected = load_examples(config.inputs, config.fields)
    count = config.negatives_count or len(positives)
    negatives, _ = sample_negatives(config.negatives, config.fields, count, config.seed)
    inputs = [*config.inputs, *config.negatives, config.init]
    held = output_folder.claim(config.output, overwrite=config.overwrite, inputs=inputs)
    sets = labelled(positives, negatives, config.seed)
    model = starting_model(config, device)
    items = classifier_items(model, sets.train)
    loss = functools.partial(classifier_batch_loss, model)
    curve, recent, lr = run_steps(model, items, config, device, loss)
    eval_loss, accuracy = evaluate_classifier(model, sets.held_out)
    output_folder.clear(config.output, held)  # only with `overwrite`
    meta = _meta(config, lr, len(positives)) | {"negatives": len(negatives)}
    return _saved(
        config,
        model,
        meta,
        start,
        curve,
        recent,
        examples=len(positives),
        windows=None,
        context=None,
        rejected=dict(rejected),
        eval_examples=len(sets.held_out),
        eval_rejected={},
        eval_loss=eval_loss,
        eval_recall_at_1=None,
        negatives=len(negatives),
        eval_accuracy=accuracy,
    )


def _fit(
    config: TeacherConfig, device: torch.device, examples: Sequence[Example]
) -> tuple[nn.Module, list[dict], list[float], float, int]:
    """A fresh (or `init`) model trained `config.steps` steps; the loss curve (every tenth step
    and the last), the losses of the last RECENT steps, the peak learning rate, and how many
    items (lm: windows) it drew from."""
    model = starting_model(config, device)
    items = training_items(model, examples)
    curve, recent, lr = run_steps(model, items, config, device)
    return model, curve, recent, lr, len(items)


def starting_model(config: TeacherConfig, device: torch.device) -> nn.Module:
    """The model a teacher's training starts from: fresh, or the `init` checkpoint."""
    right_kind = right_kind_of(config.fields.layout)
    if config.init is None:
        return fresh_model(config, right_kind, device)
    torch.manual_seed(config.seed)
    return initial_model(config.init, config.task, right_kind, device, config.loss)


def run_steps(
    model: nn.Module,
    items: Sequence,
    config: TeacherConfig,
    device: torch.device,
    loss: Callable[[list], torch.Tensor] | None = None,
) -> tuple[list[dict], list[float], float]:
    """`config.steps` steps on shuffled batches of `items` (`loss`: of a batch, default the
    model's task's): the loss curve, the last RECENT losses and the peak learning rate."""
    training = start_training(model, config, device, loss=loss)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _shuffled_batches(len(items), min(config.batch_size, len(items)), generator)
    curve: list[dict] = []
    recent: list[float] = []
    smoothed = None
    bar = progress(
        range(config.steps), desc="teacher train", unit="step", examples_per_unit=config.batch_size
    )
    for step in bar:
        value = training.step([items[i] for i in next(batches)]).item()
        recent = [*recent[-(RECENT - 1) :], value]
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{smoothed:.3f}")
            curve.append({"step": step + 1, "loss": value, "peak_rss_mib": peak_rss_mib()})
    return curve, recent, training.optimizer.param_groups[0]["initial_lr"]


def training_items(model: nn.Module, examples: Sequence[Example]) -> list:
    """What the teacher trains on, computed once: for a language model, each document's windows of
    its context (`documents.windows_of`: the first opens with BOS, the others with the token
    before them), as curation scores documents; for pairs, the model's inputs."""
    if model.task != "lm":
        return prepare(model, examples)
    documents = document_windows(model, [ex.text for ex in examples])
    return [torch.tensor(window, dtype=torch.long) for windows in documents for window in windows]


def _shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of indices: each epoch a fresh permutation (the last partial batch dropped)."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
