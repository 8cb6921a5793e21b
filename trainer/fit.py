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

import posixpath
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import save_checkpoint
from ..transforms.memory import peak_rss_mib
from ..transforms.models.documents import document_windows
from ..transforms.models.scoring import resolve_device
from ..transforms.paths import write_json
from ..transforms.records import Example, FieldMap
from ..transforms.reporting.logs import progress
from ..transforms.vocabulary import LAYOUTS, TASKS, check_choice
from . import output_folder
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

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("task", self.task, TASKS)
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


def train_teacher(config: TeacherConfig) -> TeacherResult:
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
    meta = {
        "trained_by": "jestflow teacher train",
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": lr,
        "init": config.init,
        "seed": config.seed,
        "examples": len(examples),
        "fields": asdict(config.fields),
    }
    result = TeacherResult(
        output=config.output,
        fingerprint=save_checkpoint(model, config.output, meta=meta),
        examples=len(examples),
        windows=items if config.task == "lm" else None,
        context=model.context if config.task == "lm" else None,
        rejected=dict(rejected),
        eval_examples=len(held_out),
        eval_rejected=dict(eval_rejected),
        mean_train_loss=sum(recent) / len(recent),
        mean_train_loss_steps=len(recent),
        eval_loss=eval_loss,
        eval_recall_at_1=recall,
        seconds=time.perf_counter() - start,
        curve=curve,
    )
    write_json(asdict(result), posixpath.join(config.output, "metrics.json"))
    return result


def _fit(
    config: TeacherConfig, device: torch.device, examples: Sequence[Example]
) -> tuple[nn.Module, list[dict], list[float], float, int]:
    """A fresh (or `init`) model trained `config.steps` steps; the loss curve (every tenth step
    and the last), the losses of the last RECENT steps, the peak learning rate, and how many
    items (lm: windows) it drew from."""
    right_kind = right_kind_of(config.fields.layout)
    if config.init is None:
        model = fresh_model(config, right_kind, device)
    else:
        torch.manual_seed(config.seed)
        model = initial_model(config.init, config.task, right_kind, device, config.loss)
    items = training_items(model, examples)
    training = start_training(model, config, device)
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
    return model, curve, recent, training.optimizer.param_groups[0]["initial_lr"], len(items)


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
