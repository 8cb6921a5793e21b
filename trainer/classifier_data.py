"""A classifier teacher's data (`teacher train --task classifier`): the reference texts are the
positives, a seeded random sample of the pool the negatives (the DCLM / FineWeb-Edu recipe); a
share of each is held out for the figures (held-out loss and accuracy)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms.models.classifier import log_odds
from ..transforms.readers import read_examples
from ..transforms.records import Example, FieldMap, Rejected, nothing_usable
from .core import eval_mode

HELD_OUT = 0.1  # of each class, for the held-out figures


@dataclass(frozen=True)
class Labelled:
    """Examples with their labels (1: reference, 0: pool), split into training and held-out."""

    train: list[tuple[Example, float]]
    held_out: list[tuple[Example, float]]


def sample_negatives(
    inputs: Sequence[str], fields: FieldMap, count: int, seed: int
) -> tuple[list[Example], Counter]:
    """`count` examples drawn uniformly from the pool without replacement (a reservoir: the pool
    streams by once, whatever its size), in pool order; and its rejected records by reason."""
    rng = random.Random(seed)
    reservoir: list[tuple[int, Example]] = []
    rejected: Counter = Counter()
    first, seen = None, 0
    for record in read_examples(inputs, fields):
        if isinstance(record, Rejected):
            rejected[record.reason] += 1
            first = first or record
            continue
        if len(reservoir) < count:
            reservoir.append((seen, record))
        elif (j := rng.randrange(seen + 1)) < count:
            reservoir[j] = (seen, record)
        seen += 1
    if not reservoir:
        raise nothing_usable(inputs, first)
    return [example for _, example in sorted(reservoir, key=lambda pair: pair[0])], rejected


def labelled(positives: Sequence[Example], negatives: Sequence[Example], seed: int) -> Labelled:
    """Both classes with their labels, a seeded HELD_OUT share of each held out (at least one of
    each when a class has two or more)."""
    rng = random.Random(seed)
    train, held_out = [], []
    for examples, label in ((positives, 1.0), (negatives, 0.0)):
        order = list(range(len(examples)))
        rng.shuffle(order)
        n = int(HELD_OUT * len(order)) or (1 if len(order) > 1 else 0)
        held = set(order[:n])
        for i, example in enumerate(examples):
            (held_out if i in held else train).append((example, label))
    return Labelled(train=train, held_out=held_out)


def classifier_items(model: nn.Module, examples: Sequence[tuple[Example, float]]) -> list:
    """(model input, label) of each example, computed once."""
    inputs = model.prepare([example.text for example, _ in examples])
    return [(item, label) for item, (_, label) in zip(inputs, examples, strict=True)]


def evaluate_classifier(
    model: nn.Module, examples: Sequence[tuple[Example, float]]
) -> tuple[float | None, float | None]:
    """Held-out binary cross-entropy and accuracy (log-odds > 0 is reference); None without
    held-out examples."""
    if not examples:
        return None, None
    with eval_mode(model):
        values = log_odds(model, [example.text for example, _ in examples])
        labels = torch.tensor([label for _, label in examples])
        loss = F.binary_cross_entropy_with_logits(values, labels).item()
    accuracy = ((values > 0).float() == labels).float().mean().item()
    return loss, accuracy
