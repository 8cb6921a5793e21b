"""Scoring batches: splitting a batch that runs out of GPU memory, and image batches sized by
their pixels. An out-of-memory error cannot happen on a CPU, so a real small model is wrapped to
raise one (CUDA's own exception type) when it is given more than `limit` inputs."""

from __future__ import annotations

import io
import logging
import random

import pytest
import torch

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.models import new_model
from jestflow.transforms.models.scoring import (
    PIXELS_PER_TOKEN,
    embed_pairs,
    item_length,
    length_batches,
    lm_losses,
)

TIGHT = {"rtol": 1e-5, "atol": 1e-5}
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "Zebra",
    "42",
    "(x)",
    "résumé",
    "{}",
    ";;",
    "\n",
    "~~",
]
TEXTS = [" ".join(random.Random(i).choices(WORDS, k=1 + 7 * (i % 6))) for i in range(40)]


def simulated_oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory (simulated)")


class OomLM:
    """A language model that runs out of memory on more than `limit` sequences at once."""

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.calls = model, limit, []

    @property
    def device(self) -> torch.device:
        return self.model.device

    def tokenize(self, texts, max_len=None):
        return self.model.tokenize(texts, max_len)

    def sequence_nll(self, sequences):
        self.calls.append(len(sequences))
        if len(sequences) > self.limit:
            raise simulated_oom()
        return self.model.sequence_nll(sequences)


class OomTowers:
    """A two-tower model whose towers run out of memory on more than `limit` inputs at once."""

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.calls = model, limit, []
        self.device, self.right_kind = model.device, model.right_kind
        self.prepare_left, self.prepare_right = model.prepare_left, model.prepare_right
        self.scale, self.bias, self.pair_loss = model.scale, model.bias, model.pair_loss

    def _embed(self, tower, items):
        self.calls.append(len(items))
        if len(items) > self.limit:
            raise simulated_oom()
        return tower(items)

    def embed_left(self, items):
        return self._embed(self.model.embed_left, items)

    def embed_right(self, items):
        return self._embed(self.model.embed_right, items)


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    model = new_model("lm", d_model=32, n_layer=1, n_head=2).eval()
    with torch.no_grad():  # larger embeddings: losses that differ from text to text
        model.tokens.weight.normal_(0.0, 1.0)
    return model


def one_by_one(model, texts) -> torch.Tensor:
    return torch.cat([lm_losses(model, [t]) for t in texts])


def assert_same_in_order(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal within float rounding, and each value nearest its own expected value, not another
    input's (the losses differ far more between texts than rounding moves them)."""
    torch.testing.assert_close(actual, expected, **TIGHT)
    nearest = (actual[:, None] - expected[None, :]).abs().argmin(1)
    assert nearest.tolist() == list(range(len(expected)))


def test_losses_differ_between_texts(lm):
    """The order checks mean something: no two texts score alike (rounding moves a loss ~1e-6)."""
    losses = one_by_one(lm, TEXTS)
    gaps = (losses[:, None] - losses[None, :]).abs() + torch.eye(len(TEXTS))
    assert gaps.min() > 5e-5 and losses.max() - losses.min() > 1.0


def test_out_of_memory_batches_are_split_and_every_text_scored_once_in_order(lm, caplog):
    wrapped = OomLM(lm, limit=3)
    with caplog.at_level(logging.WARNING, logger="jestflow.transforms.models.scoring"):
        losses = lm_losses(wrapped, TEXTS, max_batch=16, max_tokens=100_000)
    assert losses.shape == (len(TEXTS),)
    assert_same_in_order(losses, one_by_one(lm, TEXTS))
    torch.testing.assert_close(losses, lm_losses(lm, TEXTS, max_batch=16), **TIGHT)
    # What ran is every text once: the successful calls cover the 40 texts exactly.
    assert sum(n for n in wrapped.calls if n <= 3) == len(TEXTS)
    # 16 → 8 → 4 → 2: three failures, then the halved budget holds for the rest of the call.
    failures = [i for i, n in enumerate(wrapped.calls) if n > 3]
    assert failures == [0, 1, 2]
    assert max(wrapped.calls[3:]) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "out of memory" in warnings[0].getMessage()


def test_the_smaller_budget_lasts_only_for_its_call(lm):
    wrapped = OomLM(lm, limit=5)
    lm_losses(wrapped, TEXTS[:12], max_batch=12)
    wrapped.calls.clear()
    wrapped.limit = 100
    lm_losses(wrapped, TEXTS[:12], max_batch=12)
    assert wrapped.calls == [12]


def test_an_odd_batch_splits_into_halves(lm):
    wrapped = OomLM(lm, limit=4)
    losses = lm_losses(wrapped, TEXTS[:7], max_batch=7)
    assert wrapped.calls == [7, 4, 3]
    assert_same_in_order(losses, one_by_one(lm, TEXTS[:7]))


def test_token_budget_is_halved_too(lm):
    """Long texts fill the token budget before the item cap: the halving shrinks both."""
    texts = ["x" * (200 + i) for i in range(12)]  # 201–212 tokens each, padded to 224
    wrapped = OomLM(lm, limit=2)
    losses = lm_losses(wrapped, texts, max_tokens=224 * 6)
    assert wrapped.calls[:3] == [6, 3, 2]
    assert max(wrapped.calls[3:]) <= 2
    assert_same_in_order(losses, one_by_one(lm, texts))


def test_an_input_that_never_fits_is_a_clear_error(lm):
    wrapped = OomLM(lm, limit=0)
    with pytest.raises(JestflowError) as caught:
        lm_losses(wrapped, TEXTS[:5], max_batch=8)
    message = str(caught.value)
    assert "does not fit" in message and "cpu" in message and "--score-seq-len" in message
    assert "tokens" in message and "simulated" in message
    assert wrapped.calls == [5, 3, 2, 1]  # halved down to a single input, then given up


def test_embed_pairs_split_batches_and_keep_every_pair(caplog):
    torch.manual_seed(0)
    model = new_model("contrastive", d_model=32, n_layer=1, n_head=2).eval()
    queries, docs = TEXTS, [t[::-1] + " doc" for t in TEXTS]
    wrapped = OomTowers(model, limit=5)
    with caplog.at_level(logging.WARNING, logger="jestflow.transforms.models.scoring"):
        split = embed_pairs(wrapped, queries, docs, max_batch=32)
    whole = embed_pairs(model, queries, docs, max_batch=32)
    alone = [embed_pairs(model, [q], [d]) for q, d in zip(queries, docs, strict=True)]
    torch.testing.assert_close(split.left, whole.left, **TIGHT)
    torch.testing.assert_close(split.right, whole.right, **TIGHT)
    torch.testing.assert_close(split.left, torch.cat([a.left for a in alone]), **TIGHT)
    torch.testing.assert_close(split.right, torch.cat([a.right for a in alone]), **TIGHT)
    assert (split.left @ split.left.T).diagonal().sub(1).abs().max() < 1e-5
    assert sum(n for n in wrapped.calls if n <= 5) == 2 * len(TEXTS)  # both towers, each once
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) >= 2
    with pytest.raises(JestflowError, match="does not fit"):
        embed_pairs(OomTowers(model, limit=0), queries[:2], docs[:2])


def png(seed: int, size: int) -> bytes:
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(out, format="PNG")
    return out.getvalue()


def test_an_image_counts_its_pixels_not_its_channels():
    assert item_length(torch.zeros(3, 64, 64)) == 64 * 64 // PIXELS_PER_TOKEN == 16
    assert item_length(torch.zeros(3, 224, 224)) == 196
    assert item_length(torch.zeros(3, 30, 30)) == 4  # rounded up
    assert item_length(torch.zeros(17, dtype=torch.long)) == 17
    batches = length_batches([16] * 10, max_tokens=64, max_batch=256)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_image_batches_stay_within_the_pixel_budget():
    torch.manual_seed(0)
    model = new_model("contrastive", right_kind="image", d_model=32).eval()
    images = [png(i, 48) for i in range(11)]  # resized to the tower's 64 pixels: 16 tokens each
    captions = [f"picture {i}" for i in range(11)]
    wrapped = OomTowers(model, limit=1000)
    emb = embed_pairs(wrapped, captions, images, max_tokens=64)
    right_calls = wrapped.calls[-3:]
    assert right_calls == [4, 4, 3]  # 64 tokens = 4 images of 64×64 pixels a batch (was 8)
    alone = torch.cat(
        [embed_pairs(model, [c], [im]).right for c, im in zip(captions, images, strict=True)]
    )
    torch.testing.assert_close(emb.right, alone, **TIGHT)
    assert (emb.right - emb.right[0]).abs().amax(1)[1:].min() > 1e-4  # distinct images
