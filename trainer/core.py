"""What teacher training (`fit.py`) and student training (`loop.py`) share.

- the configs' common parts: `ModelSize` (a fresh model's size) and `Optimization` (steps,
  AdamW's learning rate and weight decay, the warm-up);
- examples and model inputs: `load_examples`, `right_kind_of`, `model_inputs`, `prepare`;
- the loss and the held-out evaluation: `batch_loss`, `evaluate`, and `eval_mode`, the context
  in which a model is scored without training behaviour;
- `Training`: AdamW with the warm-up/cosine schedule (`warmup_cosine`), fresh or resumed at a
  step, and the one training step both trainers take.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import checkpoint_task, load_model
from ..transforms.models import SIZE_KEYS, new_model
from ..transforms.models.documents import document_losses
from ..transforms.models.losses import PAIR_LOSSES, PairEmbeddings
from ..transforms.models.scoring import autocast, embed_pairs, lm_losses, pair_inputs
from ..transforms.readers import read_examples
from ..transforms.records import Example, FieldMap, Rejected, nothing_usable
from ..transforms.vocabulary import check_choice

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ModelSize:
    """The built-in model's size for a fresh model (None: the architecture's default)."""

    d_model: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    max_len: int | None = None
    text_encoder: str | None = None  # a contrastive model's text towers: ngram, transformer
    image_encoder: str | None = None  # its image tower: conv, vit

    @property
    def model_size(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in SIZE_KEYS}


@dataclass(kw_only=True)
class Optimization:
    """How long and how fast to train: AdamW at `lr` after a linear warm-up of `warmup_steps`,
    then a cosine decay to a tenth of it at `steps`."""

    steps: int = 1000
    lr: float | None = None  # None: `default_lr` of the model
    weight_decay: float = 0.01
    warmup_steps: int = 50
    # contrastive: the pair loss to train on, sigmoid (SigLIP) or softmax (CLIP); None: the
    # model's own (sigmoid for a fresh one)
    loss: str | None = None

    def __post_init__(self) -> None:
        if self.loss is not None:
            check_choice("pair loss", self.loss, PAIR_LOSSES)


def fresh_model(config, right_kind: str, device: torch.device) -> nn.Module:
    """A freshly initialised built-in model for a training config (its task, seed and
    `ModelSize`), in train mode."""
    torch.manual_seed(config.seed)
    model = new_model(config.task, right_kind=right_kind, **config.model_size)
    return with_pair_loss(model.to(device).train(), config.loss)


def with_pair_loss(model: nn.Module, loss: str | None) -> nn.Module:
    """The model, set to train on the pair `loss` (None, or an lm model: as it is)."""
    if loss is not None and model.task == "contrastive":
        model.pair_loss = loss
    return model


def initial_model(
    init: str, task: str, right_kind: str, device: torch.device, loss: str | None = None
) -> nn.Module:
    """The `--init` checkpoint (jestflow or Hugging Face) in train mode, refused if it is another
    task's or reads another right input; set to train on the pair `loss` when given."""
    held = checkpoint_task(init)
    if held is not None and held != task:
        raise JestflowError(f"--init {init} is a {held} model, not {task}")
    model = load_model(init, task=task, device=device).train()
    reads = getattr(model, "right_kind", right_kind)
    if reads != right_kind:
        raise JestflowError(
            f"--init {init} pairs text with {reads}, but the data pairs it with {right_kind}"
        )
    return with_pair_loss(model, loss)


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
        raise nothing_usable(inputs, first)
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


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block, and back in the mode it was in after (also when
    the block raises)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module, examples: Sequence[Example], batch_size: int, *, whole_documents: bool = False
) -> tuple[float, float | None]:
    """Held-out loss (and recall@1 within batches of `batch_size`, for contrastive models); an lm
    model's on each text's start, or with `whole_documents` on whole documents, window by window
    (the mean of the documents' losses)."""
    with eval_mode(model):
        if model.task == "lm" and whole_documents:
            return document_losses(model, [ex.text for ex in examples]).loss.mean().item(), None
        if model.task == "lm":
            return lm_losses(model, [ex.text for ex in examples]).mean().item(), None
        emb = embed_pairs(model, *pair_inputs(examples))
        # The sigmoid loss and recall@1 depend on the batch size: score full batches only
        # (all examples as one batch when there are fewer than `batch_size`).
        size = min(batch_size, len(examples))
        losses, hits = [], 0
        for start in range(0, len(examples) - size + 1, size):
            block = torch.arange(start, start + size)
            chunk = PairEmbeddings(emb.left[block], emb.right[block], emb.scale, emb.bias, emb.loss)
            losses.append(chunk.batch_loss().item())
            similarity = chunk.left @ chunk.right.T
            hits += (similarity.argmax(1) == torch.arange(size)).sum().item()
        return sum(losses) / len(losses), hits / (len(losses) * size)


BUILT_IN_LR, FINE_TUNE_LR, CLASSIFIER_LR = 1e-3, 3e-5, 1e-2


def default_lr(model: nn.Module) -> float:
    """The peak learning rate where none is given: 1e-3 for the small built-in models (1e-2 for
    the n-gram classifier, a linear model on sparse features), 3e-5 to fine-tune a pretrained
    Hugging Face model (the usual rate for BERT-size transformers; 1e-3 destroys what they
    learned)."""
    if hasattr(model, "save_pretrained"):
        return FINE_TUNE_LR
    return CLASSIFIER_LR if model.task == "classifier" else BUILT_IN_LR


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear warm-up to 1 over `warmup` steps, then a cosine
    decay to 0.1 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass(kw_only=True)
class Training:
    """A model's optimizer and learning-rate schedule, and the training step."""

    model: nn.Module
    loss: Callable[[list], torch.Tensor]  # of a batch of model inputs (the model's, or DDP's)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    device: torch.device

    def step(self, batch: list) -> torch.Tensor:
        """One optimizer step on a batch of model inputs; returns the batch's loss."""
        with autocast(self.device):
            loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        return loss


def start_training(
    model: nn.Module,
    settings: Optimization,
    device: torch.device,
    *,
    loss: Callable[[list], torch.Tensor] | None = None,
    start: int = 0,
    optimizer_state: dict | None = None,
) -> Training:
    """AdamW and the warm-up/cosine schedule for `model`, from step 0, or (a resumed run) from
    `start` with the optimizer state saved there. `loss`: of a batch (default `batch_loss`)."""
    if settings.warmup_steps >= settings.steps:
        log.warning(
            "--warmup-steps %d ≥ --steps %d: the whole run is warm-up (the learning rate reaches "
            "--lr at most at the last step, and never decays)",
            settings.warmup_steps,
            settings.steps,
        )
    lr = settings.lr or default_lr(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    for group in optimizer.param_groups:  # a resumed schedule continues from `start`
        group.setdefault("initial_lr", lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(settings.warmup_steps, settings.steps), last_epoch=start - 1
    )
    if loss is None:
        loss = functools.partial(batch_loss, model)
    return Training(model=model, loss=loss, optimizer=optimizer, schedule=schedule, device=device)
