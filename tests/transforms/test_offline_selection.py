"""Selection inside one scored super-batch: the right count, the right mode, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from torch import randn

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.offline_selection import ScoredBatch, SelectionConfig, select_super_batch
from jestflow.transforms.records import make_example

EXAMPLES = [make_example(layout="text", text=f"t{i}", position=i) for i in range(50)]


def lm_batch(loss, super_batch=3):
    return ScoredBatch(
        super_batch=super_batch, examples=EXAMPLES, loss=np.asarray(loss, dtype=np.float32)
    )


def test_easy_reference_keeps_the_lowest_teacher_losses_with_topk():
    loss = np.linspace(5.0, 0.1, 50)
    decisions = select_super_batch(lm_batch(loss), SelectionConfig(keep=0.2, method="topk"))
    kept = sorted((d.order, d.example.position) for d in decisions if d.selected)
    assert [position for _, position in kept] == list(range(49, 39, -1))  # best first
    assert decisions[0].score == pytest.approx(-5.0) and decisions[0].teacher_loss == pytest.approx(
        5.0
    )


def test_same_seed_and_super_batch_same_choice_despite_last_bit_noise():
    loss = np.random.default_rng(0).uniform(0, 5, 50)
    config = SelectionConfig(keep=0.3, seed=7)
    a = select_super_batch(lm_batch(loss), config)
    b = select_super_batch(lm_batch(loss * (1 + 1e-7)), config)  # other numerics, same model
    c = select_super_batch(lm_batch(loss, super_batch=4), config)
    picked = [[d.order for d in decisions] for decisions in (a, b, c)]
    assert picked[0] == picked[1] and picked[0] != picked[2]
    assert sum(d.selected for d in a) == 15


def test_learnability_needs_and_uses_the_student():
    teacher = np.full(50, 1.0)
    student = np.zeros(50)
    student[:5] = 4.0  # only these are not yet learnt
    config = SelectionConfig(keep=0.1, mode="learnability", method="topk")
    with pytest.raises(JestflowError, match="needs a student"):
        select_super_batch(lm_batch(teacher), config)
    decisions = select_super_batch(lm_batch(teacher), config, student=lm_batch(student))
    assert {d.example.position for d in decisions if d.selected} == set(range(5))


def test_contrastive_super_batches_use_joint_selection():
    u = F.normalize(randn(50, 8), dim=1).numpy()
    u[:6] = u[0]  # six copies of one easy pair: joint selection avoids taking them all
    batch = ScoredBatch(
        super_batch=0,
        examples=EXAMPLES,
        loss=np.zeros(50, dtype=np.float32),
        embeddings=np.stack([u, u], axis=1),
        scale=10.0,
        bias=-5.0,
    )
    decisions = select_super_batch(batch, SelectionConfig(keep=0.2, method="topk", n_chunks=10))
    kept = [d for d in decisions if d.selected]
    assert len(kept) == 10 and sum(d.example.position < 6 for d in kept) <= 2
    assert kept[0].embeddings.shape == (2, 8)


@pytest.mark.parametrize("keep", [0.0, 1.5])
def test_bad_keep(keep):
    with pytest.raises(JestflowError, match="keep must be in"):
        SelectionConfig(keep=keep)
