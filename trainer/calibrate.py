"""`jestflow teacher calibrate`: fit a pretrained two-tower model's sigmoid-loss temperature t and
bias β on clean reference pairs (or, `--loss softmax`, the softmax (CLIP) loss's t alone).

A pretrained encoder (a Hugging Face sentence encoder, or an image–text dual encoder: CLIP,
SigLIP, a VisionTextDualEncoder) gives good embeddings but no (t, β) of its own, or ones made for
another loss or other data, and the pair losses JEST selects on,
ℓ_ij = softplus(−z_ij(t⟨u_i, v_j⟩ + β)), depend on both.
With the encoder frozen, the reference pairs are embedded once and (log t, β) are fitted by
L-BFGS on the SigLIP batch loss of fixed random batches of `batch_size` (the loss depends on the
batch size: its negatives are the batch's other pairs): a two-parameter fit, seconds on a CPU.
A held-out part of the pairs (or `--eval` data) gives the loss and recall@1 before and after.

The output is a copy of the model's directory with (t, β) and the loss in `jestflow.json`, which
the loader
reads and the fingerprint covers (a new calibration is a new teacher for the score cache), and the
figures in `calibration.json`.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import (
    copy_tree,
    fingerprint,
    is_causal_lm,
    is_huggingface,
    load_model,
    read_config,
)
from ..transforms.models.losses import PAIR_LOSSES
from ..transforms.models.scoring import embed_pairs, pair_inputs, resolve_device
from ..transforms.paths import same_location, write_json
from ..transforms.records import FieldMap
from ..transforms.vocabulary import check_choice
from . import output_folder
from .core import eval_mode, evaluate, load_examples, right_kind_of

FIT_EPOCHS = 4  # random partitions of the fitting pairs into batches


@dataclass(kw_only=True)
class CalibrateConfig:
    model: str  # a pretrained two-tower model's directory (Hugging Face)
    inputs: tuple[str, ...]  # clean reference pairs
    output: str  # the calibrated teacher's directory
    fields: FieldMap
    eval_inputs: tuple[str, ...] = ()  # held-out pairs (default: a `held_out` share of inputs)
    held_out: float = 0.2
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False
    loss: str | None = None  # the pair loss to calibrate for: sigmoid (t, β; None) or softmax (t)

    def __post_init__(self) -> None:
        self.loss = self.loss or "sigmoid"
        check_choice("pair loss", self.loss, PAIR_LOSSES)
        if not 0 < self.held_out < 1:
            raise JestflowError(f"--held-out must be in (0, 1), got {self.held_out}")
        if self.batch_size < 2:
            raise JestflowError("--batch-size must be at least 2: a batch needs negatives")


@dataclass(kw_only=True)
class Calibration:
    output: str
    fingerprint: str
    scale: float  # t
    bias: float  # β
    fit_examples: int
    eval_examples: int
    before: tuple[float, float]  # held-out (loss, recall@1) with the model's (t, β)
    after: tuple[float, float]


def calibrate(config: CalibrateConfig) -> Calibration:
    _check_encoder(config.model)
    if same_location(config.model, config.output):
        raise JestflowError("the calibrated teacher needs its own --output, not the model's")
    inputs = [config.model, *config.inputs, *config.eval_inputs]
    held = output_folder.claim(config.output, overwrite=config.overwrite, inputs=inputs)
    model = load_model(config.model, task="contrastive", device=resolve_device(config.device))
    model.pair_loss = config.loss
    if model.right_kind != right_kind_of(config.fields.layout):
        raise JestflowError(
            f"{config.model} pairs text with {model.right_kind}, but the reference data pairs "
            f"it with {right_kind_of(config.fields.layout)}"
        )
    fit, held_out = _split(config)
    if len(fit) < config.batch_size:
        raise JestflowError(
            f"{len(fit)} pairs to fit on, fewer than one batch of {config.batch_size}"
        )
    before = evaluate(model, held_out, config.batch_size)
    with eval_mode(model), torch.no_grad():
        emb = embed_pairs(model, *pair_inputs(fit))
    # From the model's (t, β), which `embed_pairs` gives as floats.
    scale, bias = fit_scale_bias(
        emb.left, emb.right, config.batch_size, emb.scale, emb.bias, config.seed, config.loss
    )
    model.scale, model.bias = scale, bias  # a dual encoder's setters fill its (t, β) parameters
    after = evaluate(model, held_out, config.batch_size)
    output_folder.clear(config.output, held)  # only with `overwrite`
    copy_tree(config.model, config.output)
    extra = {"scale": scale, "bias": bias, "loss": config.loss}
    write_json(extra, posixpath.join(config.output, "jestflow.json"))
    result = Calibration(
        output=config.output,
        fingerprint=fingerprint(config.output),
        scale=scale,
        bias=bias,
        fit_examples=len(fit),
        eval_examples=len(held_out),
        before=before,
        after=after,
    )
    write_json(asdict(result), posixpath.join(config.output, "calibration.json"))
    return result


def _check_encoder(model: str) -> None:
    """Refuse what is not a pretrained text encoder or image–text dual encoder, naming it."""
    found = read_config(model)
    if not is_huggingface(found):
        kind = {"lm": "a built-in language model", "contrastive": "a built-in two-tower model"}
        raise JestflowError(
            f"{model} is a jestflow checkpoint ({kind.get(found.get('task'), 'built-in')}); "
            "calibrate fits t and β of a pretrained Hugging Face text encoder (e.g. MiniLM) or "
            "image–text dual encoder (CLIP, SigLIP). Built-in two-tower teachers learn their own "
            "t and β in `jestflow teacher train --task contrastive`"
        )
    if is_causal_lm(found):
        raise JestflowError(
            f"{model} is a Hugging Face causal language model ({found.get('model_type')}): "
            "calibrate fits a text encoder (e.g. MiniLM) or an "
            "image–text dual encoder (CLIP, SigLIP); a causal LM is an lm teacher as it is "
            "(curate --task lm --teacher DIR)"
        )


def _split(config: CalibrateConfig) -> tuple[list, list]:
    """(pairs to fit on, held-out pairs): the --eval data, or a seeded share of the inputs."""
    examples, _ = load_examples(config.inputs, config.fields)
    if config.eval_inputs:
        return examples, load_examples(config.eval_inputs, config.fields)[0]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed))
    cut = max(1, round(len(examples) * config.held_out))
    held = [examples[i] for i in sorted(order[:cut].tolist())]
    fit = [examples[i] for i in sorted(order[cut:].tolist())]
    return fit, held


def fit_scale_bias(
    left: torch.Tensor,
    right: torch.Tensor,
    batch_size: int,
    scale: float,
    bias: float,
    seed: int,
    loss: str = "sigmoid",
) -> tuple[float, float]:
    """(t, β) minimising the mean SigLIP batch loss Σ_ij softplus(−z_ij(t⟨u_i, v_j⟩ + β)) / B over
    FIT_EPOCHS random partitions of the pairs into batches of `batch_size`, from (scale, bias);
    for the softmax loss, t alone minimising the mean CLIP loss (β is kept: it plays no part)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(left) // batch_size * batch_size
    blocks = []
    for _ in range(FIT_EPOCHS):
        order = torch.randperm(len(left), generator=generator)[:n].view(-1, batch_size)
        blocks.append(torch.einsum("kid,kjd->kij", left[order], right[order]))
    similarities = torch.cat(blocks).double()
    signs = 2 * torch.eye(batch_size, dtype=torch.float64) - 1  # z = +1 on matching pairs
    log_t = torch.tensor(float(torch.tensor(scale).log()), dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    fitted = [log_t, beta] if loss == "sigmoid" else [log_t]
    optimizer = torch.optim.LBFGS(fitted, max_iter=200, line_search_fn="strong_wolfe")
    target = torch.arange(batch_size).repeat(len(similarities))

    def batch_loss() -> torch.Tensor:
        optimizer.zero_grad()
        if loss == "sigmoid":
            value = F.softplus(-signs * (log_t.exp() * similarities + beta)).sum((1, 2)).mean()
            value = value / batch_size
        else:
            logits = log_t.exp() * similarities
            rows = F.cross_entropy(logits.reshape(-1, batch_size), target)
            cols = F.cross_entropy(logits.transpose(1, 2).reshape(-1, batch_size), target)
            value = 0.5 * (rows + cols)
        value.backward()
        return value

    optimizer.step(batch_loss)
    return float(log_t.detach().exp()), float(beta.detach())
