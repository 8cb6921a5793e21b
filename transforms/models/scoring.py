"""Scoring examples with a model: per-example LM loss, and two-tower embeddings for pair losses.

Both work on any model with the scoring interface (the built-in models and the Hugging Face
adapters): batches are bucketed by length under a token budget (an image counts its pixels in
16×16 patches), run without gradients, and under bf16 autocast on CUDA. A batch that runs out of
GPU memory is split in halves, and the call goes on with half the budget. Results come back on
the CPU in the order of the inputs, one per input.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from ..errors import JestflowError
from ..records import Example
from .layers import padded_length
from .losses import PairEmbeddings, as_float

log = logging.getLogger(__name__)


class LanguageModel(Protocol):
    device: torch.device

    def tokenize(self, texts: Sequence[str], max_len: int | None = None) -> list[torch.Tensor]: ...

    def sequence_nll(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor: ...


class TwoTowerModel(Protocol):
    device: torch.device
    right_kind: str

    def prepare_left(self, texts: Sequence[str]) -> list[torch.Tensor]: ...

    def prepare_right(self, items: Sequence) -> list[torch.Tensor]: ...

    def embed_left(self, items: Sequence[torch.Tensor]) -> torch.Tensor: ...

    def embed_right(self, items: Sequence[torch.Tensor]) -> torch.Tensor: ...

    @property
    def scale(self) -> float | torch.Tensor: ...

    @property
    def bias(self) -> float | torch.Tensor: ...


def scoring_length(task: str, score_seq_len: int | None) -> int | None:
    """The first tokens of each text an lm model scores for a `--score-seq-len` (None: the whole
    document, window by window, the default; 0 says the same); checks the option."""
    if score_seq_len is not None and task != "lm":
        raise JestflowError("--score-seq-len shortens lm scoring only")
    if score_seq_len is not None and score_seq_len < 0:
        raise JestflowError("--score-seq-len is a token count (0: the whole document)")
    if task != "lm" or not score_seq_len:
        return None
    return score_seq_len


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JestflowError(f"device {name!r} asked for, but CUDA is not available")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except RuntimeError as e:
        raise JestflowError(f"unusable device {name!r}: {str(e).splitlines()[0]}") from e
    return device


def precision(device: torch.device) -> str:
    """What scoring computes in on a device: `bf16` (autocast) on CUDA, `fp32` elsewhere."""
    return "bf16" if device.type == "cuda" else "fp32"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision elsewhere."""
    if precision(device) == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# An image's length, in tokens: its pixels in 16×16 patches (a ViT-B/16's tokens). A 64-pixel
# image is 16 tokens, a 224-pixel one 196, so a batch of images fills the budget a batch of texts
# does; `len` of an image tensor [3, H, W] would be 3, whatever its size.
PIXELS_PER_TOKEN = 16 * 16

# What a batch too big for the GPU raises (torch.OutOfMemoryError from torch 2.5 on).
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def item_length(item: torch.Tensor) -> int:
    """What a model input costs a batch, in tokens: a token tensor [T] its length; an image
    [C, H, W] its pixels in 16×16 patches (`PIXELS_PER_TOKEN`), rounded up."""
    if item.dim() <= 1:
        return len(item)
    return -(-item.shape[-1] * item.shape[-2] // PIXELS_PER_TOKEN)


def _same_width(length: int) -> int:
    return length


class _Budget:
    """One scoring call's limits on a batch: padded tokens and items, halved after a batch ran out
    of memory (and kept so for the rest of the call: later batches hold longer items)."""

    def __init__(self, max_tokens: int, max_batch: int, width: Callable[[int], int]) -> None:
        self.max_tokens, self.max_batch, self.width = max_tokens, max_batch, width

    def halve(self, size: int, longest: int, device: torch.device, error: str) -> None:
        """After a batch of `size` items, the longest `longest` tokens, ran out of memory."""
        self.max_batch = min(self.max_batch, -(-size // 2))
        self.max_tokens = min(self.max_tokens, self.max_batch * self.width(longest))
        log.warning(
            "a scoring batch of %d items (%d tokens each, padded) ran out of memory on %s (%s); "
            "scoring it in halves, and at most %d items, %d padded tokens a batch from now on",
            size,
            self.width(longest),
            device,
            error,
            self.max_batch,
            self.max_tokens,
        )


def _batch_end(order: Sequence[int], lengths: Sequence[int], start: int, budget: _Budget) -> int:
    """Where the batch that starts at `order[start]` ends: it takes the next (longer or as long)
    items while the batch, padded to its longest, stays within the budget."""
    end = start + 1
    while end < len(order) and end - start < budget.max_batch:
        if (end - start + 1) * budget.width(lengths[order[end]]) > budget.max_tokens:
            break
        end += 1
    return end


def length_batches(lengths: Sequence[int], *, max_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, each with at most `max_tokens` tokens once
    padded (`padded_length`) and `max_batch` items (ties in length keep input order, so batching is deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    budget = _Budget(max_tokens, max_batch, padded_length)
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        end = _batch_end(order, lengths, start, budget)
        batches.append(order[start:end])
        start = end
    return batches


def batch_tokens(device: torch.device) -> int:
    """Padded tokens per scoring batch when not given: large on a GPU; on a CPU small enough for
    the activations to stay in cache (4096 scores 1.4× faster than 32768 on a 2-core EPYC)."""
    return 32_768 if device.type == "cuda" else 4096


def _attempt(
    run: Callable[[list[torch.Tensor]], torch.Tensor], inputs: list[torch.Tensor]
) -> tuple[torch.Tensor | None, str]:
    """(`run`'s result as float32 on the CPU, "") or, when the device ran out of memory,
    (None, the error's first line), its cache emptied."""
    try:
        return run(inputs).float().cpu(), ""
    except OUT_OF_MEMORY as e:
        error = str(e).strip().splitlines()[0] if str(e).strip() else "out of memory"
    # Out of the handler, the traceback and with it the failed batch's tensors are gone.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return None, error


def _too_big(length: int, device: torch.device, error: str) -> JestflowError:
    return JestflowError(
        f"one input of {length} tokens (images: 16×16-pixel patches) does not fit in the memory "
        f"of {device} even alone ({error}); score fewer tokens of each text (a smaller "
        "--score-seq-len, or a model with a smaller --max-len), or use a device with more free "
        "memory"
    )


def batched(
    items: list[torch.Tensor],
    run: Callable[[list[torch.Tensor]], torch.Tensor],
    device: torch.device,
    *,
    max_tokens: int | None,
    max_batch: int,
) -> torch.Tensor:
    """`run` over length-bucketed batches of `items`, results stacked back in input order.

    A batch that runs out of memory halves the budget (`_Budget.halve`) and is scored again
    from its first item: in halves, smaller again if a half does not fit either. An input that
    does not fit alone is a JestflowError.
    """
    lengths = [item_length(x) for x in items]
    padded = all(x.dim() <= 1 for x in items)  # token sequences pad; images are all one size
    budget = _Budget(
        max_tokens or batch_tokens(device), max_batch, padded_length if padded else _same_width
    )
    order = sorted(range(len(items)), key=lambda i: (lengths[i], i))
    out: torch.Tensor | None = None
    start = 0
    with torch.no_grad(), autocast(device):
        while start < len(order):
            end = _batch_end(order, lengths, start, budget)
            batch = order[start:end]
            result, error = _attempt(run, [items[i] for i in batch])
            if result is None:
                if len(batch) == 1:
                    raise _too_big(lengths[batch[0]], device, error)
                budget.halve(len(batch), lengths[batch[-1]], device, error)
                continue  # the same start, under the smaller budget
            if out is None:
                out = torch.empty((len(items), *result.shape[1:]), dtype=torch.float32)
            out[batch] = result
            start = end
    return out if out is not None else torch.empty(0)


def lm_losses(
    model: LanguageModel,
    texts: Sequence[str],
    *,
    max_len: int | None = None,
    max_tokens: int | None = None,
    max_batch: int = 256,
) -> torch.Tensor:
    """Mean token NLL of each text under a causal LM, [N] on the CPU.

    `max_len` scores only the first tokens (a cheaper pass, as Flexi-JEST's low resolution).
    """
    return sequence_losses(
        model, model.tokenize(texts, max_len), max_tokens=max_tokens, max_batch=max_batch
    )


def sequence_losses(
    model: LanguageModel,
    sequences: Sequence[torch.Tensor],
    *,
    max_tokens: int | None = None,
    max_batch: int = 256,
) -> torch.Tensor:
    """Mean token NLL of each token sequence (its first token given) under a causal LM, [N] on
    the CPU: what `lm_losses` computes once the texts are tokenized, and what whole documents'
    windows are scored with."""
    return batched(
        list(sequences),
        model.sequence_nll,
        model.device,
        max_tokens=max_tokens,
        max_batch=max_batch,
    )


def pair_inputs(examples: Sequence[Example]) -> tuple[list[str], list]:
    """(left tower inputs, right tower inputs): captions/queries, and images/documents."""
    left = [ex.text for ex in examples]
    right = [ex.image if ex.layout == "image_text" else ex.pair for ex in examples]
    if any(item is None for item in right):
        raise ValueError("contrastive scoring needs image-text or text-pair examples")
    return left, right


def embed_pairs(
    model: TwoTowerModel,
    left: Sequence[str],
    right: Sequence,
    *,
    max_tokens: int | None = None,
    max_batch: int = 256,
) -> PairEmbeddings:
    """Both towers' L2-normalised embeddings and the model's (t, β), on the CPU."""
    options = {"max_tokens": max_tokens, "max_batch": max_batch}
    return pair_embeddings(
        model, model.prepare_left(list(left)), model.prepare_right(list(right)), **options
    )


def pair_embeddings(
    model: TwoTowerModel,
    left: Sequence[torch.Tensor],
    right: Sequence[torch.Tensor],
    *,
    max_tokens: int | None = None,
    max_batch: int = 256,
) -> PairEmbeddings:
    """`embed_pairs` of inputs the towers prepared already (`prepare_left`, `prepare_right`)."""
    options = {"max_tokens": max_tokens, "max_batch": max_batch}
    u = batched(list(left), model.embed_left, model.device, **options)
    v = batched(list(right), model.embed_right, model.device, **options)
    return PairEmbeddings(u, v, as_float(model.scale), as_float(model.bias), model.pair_loss)


def pair_loss_shares(embeddings: PairEmbeddings, *, block_size: int = 1024) -> torch.Tensor:
    """Each example's share of the batch's loss, float32. Sigmoid: ℓ_ii + ½ Σ_{j≠i} (ℓ_ij + ℓ_ji),
    the shares summing to Σ_ij ℓ_ij; softmax: its loss against the batch (`softmax_losses`),
    summing to B × the batch loss. Computed in row blocks, never as a B×B matrix.
    """
    if embeddings.loss == "softmax":
        return embeddings.softmax_losses(block_size=block_size).float()
    b = embeddings.size
    rows = torch.zeros(b, dtype=torch.float64)
    cols = torch.zeros(b, dtype=torch.float64)
    for start in range(0, b, block_size):
        block = torch.arange(start, min(start + block_size, b))
        losses = embeddings.losses(rows=block).double()
        rows[block] += losses.sum(1)
        cols += losses.sum(0)
    diagonal = embeddings.diagonal_losses().double()
    return (diagonal + 0.5 * (rows + cols - 2 * diagonal)).float()
