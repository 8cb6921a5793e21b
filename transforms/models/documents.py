"""Whole documents under a causal LM, window by window.

A document longer than the model's context is cut into windows of `width` tokens (the model's
context by default); every window is scored, and the document's loss is the token-weighted mean
of its windows' mean token NLLs, so each scored token counts once whatever the windows. A window
starts with the token before it (BOS for the first window), so every token of the document up to
the cap is predicted exactly once, the first one from BOS. At most `max_tokens` tokens of a
document are scored (`DEFAULT_SCORE_MAX_TOKENS`); the documents that have more are counted.

The windows of many documents are batched together by padded tokens
(`scoring.sequence_losses`), so the cost is proportional to the tokens scored and a few long
documents cannot blow up a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import JestflowError
from .scoring import lm_losses, sequence_losses

# Tokens of a document scored at most: a typical web page or source file whole (8,192 bytes for
# the built-in byte LM; about 30 KB of text for a BPE tokenizer).
DEFAULT_SCORE_MAX_TOKENS = 8192


class WindowedLanguageModel(Protocol):
    device: torch.device
    bos: int | None  # the token a document's first window starts with (None: none)

    @property
    def context(self) -> int: ...  # the tokens one window predicts at most

    def token_ids(self, texts: Sequence[str], limit: int) -> list[list[int]]: ...

    def sequence_nll(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor: ...


@dataclass(frozen=True)
class DocumentLosses:
    """What scoring whole documents gives, one entry per document."""

    loss: torch.Tensor  # [N] the token-weighted mean NLL over the document's windows
    windows: list[torch.Tensor]  # each document's windows' mean NLLs, in order (float32)
    tokens: torch.Tensor  # [N] tokens scored (at most the cap)
    capped: torch.Tensor  # [N] bool: the document has more tokens than the cap
    width: int  # the tokens a window predicts (the last one of a document fewer)


def windows_of(ids: Sequence[int], width: int, bos: int | None) -> list[list[int]]:
    """A document's scoring windows: each holds the token before it (BOS for the first, when the
    model has one) and the next `width` tokens, so every token is predicted exactly once."""
    windows = []
    for start in range(0, len(ids), width):
        head = ([] if bos is None else [bos]) if start == 0 else [ids[start - 1]]
        windows.append([*head, *ids[start : start + width]])
    return windows or [[] if bos is None else [bos]]


def document_windows(
    model: WindowedLanguageModel, texts: Sequence[str], max_tokens: int = DEFAULT_SCORE_MAX_TOKENS
) -> list[list[list[int]]]:
    """Each document's windows of the model's context over its first `max_tokens` tokens, cut as
    curation cuts them (`windows_of`): what a teacher trains on, and what a raw document's window
    is drawn from."""
    ids = model.token_ids(texts, max_tokens)
    return [windows_of(document, model.context, model.bos) for document in ids]


def window_width(model: WindowedLanguageModel, window: int | None) -> int:
    """The tokens a window predicts: `window` (`--score-window`), at most the model's context."""
    if window is not None and window < 1:
        raise JestflowError("--score-window is a token count, at least 1")
    return min(window or model.context, model.context)


# Documents scored together at most, in tokens: their token ids and windows are built a group at a
# time, so a chunk of thousands of long documents never holds all of its token lists at once.
GROUP_TOKENS = 1 << 20


def document_losses(
    model: WindowedLanguageModel,
    texts: Sequence[str],
    *,
    window: int | None = None,
    max_tokens: int = DEFAULT_SCORE_MAX_TOKENS,
    batch_tokens: int | None = None,
    max_batch: int = 256,
) -> DocumentLosses:
    """Each document's loss over its first `max_tokens` tokens, window by window (module doc)."""
    if max_tokens < 1:
        raise JestflowError("--score-max-tokens is a token count, at least 1")
    width = window_width(model, window)
    parts = [
        _group_losses(model, texts[lo:hi], width, max_tokens, batch_tokens, max_batch)
        for lo, hi in _groups(texts, max_tokens)
    ]
    return DocumentLosses(
        loss=torch.cat([p.loss for p in parts]) if parts else torch.empty(0),
        windows=[w for p in parts for w in p.windows],
        tokens=torch.cat([p.tokens for p in parts]) if parts else torch.empty(0, dtype=torch.long),
        capped=torch.cat([p.capped for p in parts]) if parts else torch.empty(0, dtype=torch.bool),
        width=width,
    )


def _groups(texts: Sequence[str], max_tokens: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of the texts holding about GROUP_TOKENS tokens each (a text's UTF-8 length
    bounds its tokens), at least one text each."""
    ranges, lo, total = [], 0, 0
    for i, text in enumerate(texts):
        size = min(len(text), max_tokens)  # characters: a lower bound of bytes, near enough
        if i > lo and total + size > GROUP_TOKENS:
            ranges.append((lo, i))
            lo, total = i, 0
        total += size
    if lo < len(texts):
        ranges.append((lo, len(texts)))
    return ranges


def _group_losses(
    model: WindowedLanguageModel,
    texts: Sequence[str],
    width: int,
    max_tokens: int,
    batch_tokens: int | None,
    max_batch: int,
) -> DocumentLosses:
    ids = model.token_ids(texts, max_tokens + 1)  # one more than the cap tells a capped document
    capped = torch.tensor([len(i) > max_tokens for i in ids], dtype=torch.bool)
    ids = [i[:max_tokens] for i in ids]
    windows = [windows_of(i, width, model.bos) for i in ids]
    flat = [torch.tensor(w, dtype=torch.long) for doc in windows for w in doc]
    losses = sequence_losses(model, flat, max_tokens=batch_tokens, max_batch=max_batch)
    weights = torch.tensor([max(len(w) - 1, 0) for w in flat], dtype=torch.float32)
    per_document = losses.split([len(doc) for doc in windows])
    per_weights = weights.split([len(doc) for doc in windows])
    loss = torch.zeros(len(windows))
    for k, (x, w) in enumerate(zip(per_document, per_weights, strict=True)):
        loss[k] = (x * w).sum() / w.sum().clamp_min(1.0)
    tokens = torch.tensor([len(i) for i in ids], dtype=torch.long)
    return DocumentLosses(loss, [w.clone() for w in per_document], tokens, capped, width)


@dataclass(frozen=True)
class LmScoring:
    """What an lm model scores of each text: the whole document window by window (the default;
    `window` tokens, default the model's context), at most `max_tokens` of it, or only its first
    `prefix` tokens (a cheaper pass that cannot see what follows them)."""

    prefix: int | None = None
    window: int | None = None
    max_tokens: int = DEFAULT_SCORE_MAX_TOKENS

    @property
    def whole(self) -> bool:
        return self.prefix is None

    @property
    def cache_suffix(self) -> str:
        """What the score cache adds to a model's fingerprint: a loss on 64 tokens is not one on
        the whole document, nor one on 8,192 tokens one on 4,096."""
        if not self.whole:
            return f"-first{self.prefix}"
        return f"-doc{self.max_tokens}" + ("" if self.window is None else f"-w{self.window}")

    def score(
        self, model, texts: Sequence[str], *, batch_tokens: int | None = None
    ) -> tuple[torch.Tensor, DocumentLosses | None]:
        """Each text's loss, [N] on the CPU, and for whole documents the windows behind it."""
        if not self.whole:
            return lm_losses(model, texts, max_len=self.prefix, max_tokens=batch_tokens), None
        documents = document_losses(
            model, texts, window=self.window, max_tokens=self.max_tokens, batch_tokens=batch_tokens
        )
        return documents.loss, documents

    def capped(self, model: WindowedLanguageModel, texts: Sequence[str]) -> int:
        """How many of the texts have more tokens than are scored of them."""
        limit = self.prefix if not self.whole else self.max_tokens
        return sum(len(ids) > limit for ids in model.token_ids(texts, limit + 1))

    def describe(self) -> dict[str, int | str | None]:
        """For stats.json and the report."""
        if not self.whole:
            return {"scored": "first tokens", "tokens": self.prefix}
        return {"scored": "whole documents", "max_tokens": self.max_tokens, "window": self.window}
