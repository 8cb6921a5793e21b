"""Classifier teachers (the DCLM / FineWeb-Edu recipe): a model that tells reference texts
(label 1) from the pool's (label 0), whose log-odds log p/(1 − p) is a quality score.

The built-in one is fastText-like: a text (its first `max_len` characters, lower case,
whitespace collapsed) becomes the hashes of its character n-grams (`ngram_tower.ngram_ids`), the
model averages their embeddings and a linear layer gives the logit. It trains in seconds on a
CPU. A Hugging Face sequence classifier (`hf_classifier.py`) has the same interface: `prepare`
(texts → model inputs), `forward` (inputs → logits, the log-odds), `task = "classifier"`.

As a teacher, a classifier's output for an example is stored where an lm teacher keeps its loss:
`classifier_loss` = −log-odds, lower for what looks more like the reference. The easy-reference
score −ℓ is then the log-odds itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import to_device
from .ngram_tower import ngram_ids


@dataclass(frozen=True)
class ClassifierConfig:
    buckets: int = 1 << 18  # hashed n-gram embedding rows
    d_model: int = 16
    ngram_min: int = 3
    ngram_max: int = 5
    max_len: int = 8192  # characters of each text read


class NgramClassifier(nn.Module):
    """Mean of a text's hashed character n-gram embeddings → linear → the log-odds."""

    architecture = "ngram_classifier"
    task = "classifier"

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClassifierConfig()
        if (
            config.buckets < 1
            or config.d_model < 1
            or not 1 <= config.ngram_min <= config.ngram_max
        ):
            raise ValueError(f"bad classifier config {config}")
        self.bag = nn.EmbeddingBag(config.buckets, config.d_model, mode="mean")
        self.head = nn.Linear(config.d_model, 1)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def prepare(self, texts: Sequence[str]) -> list[torch.Tensor]:
        c = self.config
        sizes = range(c.ngram_min, c.ngram_max + 1)
        return [torch.from_numpy(ngram_ids(t, c.max_len, sizes, c.buckets)) for t in texts]

    def forward(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        lengths = torch.tensor([len(x) for x in items])
        offsets = to_device(torch.cumsum(lengths, 0) - lengths, self.device)
        ids = to_device(torch.cat(list(items)), self.device)
        return self.head(self.bag(ids, offsets)).squeeze(-1)


def classifier_batch_loss(
    model: nn.Module, batch: Sequence[tuple[torch.Tensor, float]]
) -> torch.Tensor:
    """The mean binary cross-entropy of a batch of (model input, label)."""
    items, labels = zip(*batch, strict=True)
    logits = model(list(items)).float()
    target = torch.tensor(labels, dtype=torch.float32, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target)


@torch.no_grad()
def log_odds(model: nn.Module, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Each text's log-odds of being reference, float32 on the CPU, in batches of `batch_size`."""
    out = []
    for start in range(0, len(texts), batch_size):
        items = model.prepare(list(texts[start : start + batch_size]))
        out.append(model(items).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def classifier_loss(values: torch.Tensor) -> torch.Tensor:
    """A classifier teacher's 'loss' of examples from their log-odds: −log-odds."""
    return -values
