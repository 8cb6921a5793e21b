"""Selection inside one scored super-batch: the right count, the right mode, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from torch import Generator, randn

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.records import make_example
from jestflow.transforms.selection.offline import ScoredBatch, SelectionConfig, select_super_batch

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


def test_same_seed_same_choice_despite_last_bit_noise():
    loss = np.random.default_rng(0).uniform(0, 5, 50)
    config = SelectionConfig(keep=0.3, seed=7)
    a = select_super_batch(lm_batch(loss), config)
    b = select_super_batch(lm_batch(loss * (1 + 1e-7)), config)  # other numerics, same model
    c = select_super_batch(lm_batch(loss), SelectionConfig(keep=0.3, seed=8))
    picked = [[d.order for d in decisions] for decisions in (a, b, c)]
    assert picked[0] == picked[1] and picked[0] != picked[2]
    assert sum(d.selected for d in a) == 15


def kept_keys(examples, loss, config) -> set[str]:
    batch = ScoredBatch(super_batch=0, examples=examples, loss=np.asarray(loss, np.float32))
    return {d.example.key for d in select_super_batch(batch, config) if d.selected}


def test_an_edited_record_changes_only_its_own_fate_and_a_few_at_the_margin():
    # Each example's noise is keyed by (seed, key, chunk): edit 6 of 400 records (new keys, new
    # losses) and the rest keep their draws. Noise drawn in sequence moved every draw: ~0.2.
    rng = np.random.default_rng(1)
    examples = [make_example(layout="text", text=f"doc {i}", position=i) for i in range(400)]
    loss = rng.normal(3.0, 0.3, 400)
    edited, edited_loss = list(examples), loss.copy()
    for i in rng.choice(400, 6, replace=False):
        edited[i] = make_example(layout="text", text=f"doc {i}, edited", position=int(i))
        edited_loss[i] = rng.normal(3.0, 0.3)
    config = SelectionConfig(keep=0.25)
    before, after = kept_keys(examples, loss, config), kept_keys(edited, edited_loss, config)
    assert len(before & after) / len(before | after) > 0.9
    # The order of the members does not matter either: the draws belong to the keys.
    order = rng.permutation(400)
    shuffled = kept_keys([examples[i] for i in order], loss[order], config)
    assert shuffled == before


def test_the_default_temperature_is_relative_to_the_spread_of_the_scores():
    # Scores a few tenths apart: at τ = 1 the kept tenth is close to a random draw; the default
    # τ (0.1 × the median absolute deviation) keeps mostly the best, whatever the losses' unit.
    examples = [make_example(layout="text", text=f"doc {i}", position=i) for i in range(1000)]
    loss = np.random.default_rng(2).normal(3.0, 0.2, 1000)
    best = set(np.argsort(loss)[:100].tolist())
    keys = [e.key for e in examples]

    def overlap(config, scale=1.0):
        kept = kept_keys(examples, loss * scale, config)
        return len({i for i in best if keys[i] in kept}) / 100

    relative = overlap(SelectionConfig(keep=0.1))
    assert relative > 0.5 > overlap(SelectionConfig(keep=0.1, temperature=1.0)) + 0.2
    assert overlap(SelectionConfig(keep=0.1), scale=100.0) == pytest.approx(relative, abs=0.02)


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
    u = F.normalize(randn(50, 8, generator=Generator().manual_seed(0)), dim=1).numpy()
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


def numpy_weights(scores: np.ndarray, tau: float | None = None) -> np.ndarray:
    """k · softmax(s / τ) in float64, τ = 1 × the median absolute deviation (the lower middle
    values, as torch's median) unless given."""
    if tau is None:
        low = np.sort(scores)[(len(scores) - 1) // 2]
        deviation = np.abs(scores - low)
        tau = float(np.sort(deviation)[(len(deviation) - 1) // 2]) or float(deviation.mean()) or 1
    z = np.exp((scores - scores.max()) / tau)
    return len(scores) * z / z.sum()


@pytest.mark.parametrize("temperature", [None, 0.05])
def test_each_kept_example_carries_its_soft_weight(temperature):
    """A kept example's weight is k · softmax(s / τ) over the k kept of its super-batch (τ = 1 ×
    their spread, or the absolute one): mean 1, in the order of the scores; the others none."""
    loss = np.random.default_rng(3).uniform(1, 4, 50)
    config = SelectionConfig(keep=0.3, temperature=temperature)
    decisions = select_super_batch(lm_batch(loss), config)
    kept = [d for d in decisions if d.selected]
    assert len(kept) == 15 and all(d.weight is None for d in decisions if not d.selected)
    scores = np.array([d.score for d in kept])
    got = np.array([d.weight for d in kept])
    assert got.mean() == pytest.approx(1.0)
    assert np.allclose(got, numpy_weights(scores, temperature), rtol=1e-9)
    assert (np.argsort(got, kind="stable") == np.argsort(scores, kind="stable")).all()
    assert got.max() / got.min() > 1.5  # not flat: the scores spread
    tied = select_super_batch(lm_batch(np.full(50, 2.0)), SelectionConfig(keep=0.3))
    assert [d.weight for d in tied if d.selected] == [1.0] * 15
