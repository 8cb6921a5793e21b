"""Online selection: the student re-scores a super-batch, the shards' teacher values are the
teacher, and the sub-batch is chosen as `select_independent` / `select_joint` would."""

from __future__ import annotations

import pytest
import torch
from helpers import sentences

from jestflow.trainer.online_selection import scoring_inputs, select_online, student_losses
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.shard_samples import TrainSample
from jestflow.transforms.models import new_model
from jestflow.transforms.models.scoring import embed_pairs, lm_losses
from jestflow.transforms.selection.jest import (
    ContrastivePairScores,
    select_independent,
    select_joint,
)

TINY = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64}


def lm_samples(teacher_losses):
    texts = sentences(len(teacher_losses), 4)
    return [
        TrainSample(key=f"k{i}", text=t, teacher_loss=loss, info={"meta": {"kind": f"{i % 2}"}})
        for i, (t, loss) in enumerate(zip(texts, teacher_losses, strict=True))
    ]


def student(task="lm"):
    torch.manual_seed(0)
    return new_model(task, **TINY).train()


def test_uniform_takes_the_first_b():
    chosen = select_online(student(), lm_samples([1.0] * 10), 4, mode="uniform")
    assert chosen.indices == [0, 1, 2, 3] and chosen.learnability is None


def test_lm_learnability_is_student_minus_teacher_selected_independently():
    samples = lm_samples([float(i % 5) for i in range(20)])
    model = student()
    got = select_online(model, samples, 6, generator=torch.Generator().manual_seed(3))
    student_loss = lm_losses(model, [s.text for s in samples])
    teacher_loss = torch.tensor([s.teacher_loss for s in samples])
    expected = select_independent(
        student_loss - teacher_loss, 6, noise=torch.Generator().manual_seed(3)
    )
    assert got.indices == expected.tolist()
    assert got.learnability == pytest.approx(
        (student_loss - teacher_loss)[expected].mean().item(), rel=1e-5
    )
    assert model.training  # scoring put the model back in training mode


def test_learnability_prefers_what_the_teacher_finds_easy():
    samples = lm_samples([0.5 if i % 2 else 9.0 for i in range(40)])  # odd: the teacher's easy
    got = select_online(
        student(), samples, 10, temperature=0.05, generator=torch.Generator().manual_seed(0)
    )
    assert sum(samples[i].tag == "1" for i in got.indices) >= 9
    hard = select_online(
        student(),
        samples,
        10,
        mode="easy_reference",
        temperature=0.05,
        generator=torch.Generator().manual_seed(0),
    )
    assert all(samples[i].tag == "1" for i in hard.indices)


def test_a_shorter_scoring_length_scores_only_the_first_tokens():
    samples = lm_samples([1.0] * 8)
    model = student()
    short = student_losses(model, scoring_inputs(model, samples, score_max_len=8))
    assert torch.allclose(short, lm_losses(model, [s.text for s in samples], max_len=8))
    assert not torch.allclose(short, student_losses(model, scoring_inputs(model, samples)))


def test_contrastive_learnability_uses_the_stored_teacher_embeddings():
    torch.manual_seed(1)
    teacher = new_model("contrastive", **TINY).eval()
    texts = sentences(24, 5)
    docs = [f"def f():  # {t}" for t in texts]
    emb = embed_pairs(teacher, texts, docs)
    samples = [
        TrainSample(
            key=f"k{i}",
            text=t,
            pair=d,
            teacher_loss=0.0,
            teacher_scale=emb.scale,
            teacher_bias=emb.bias,
            embeddings=torch.stack([emb.left[i], emb.right[i]]).numpy(),
        )
        for i, (t, d) in enumerate(zip(texts, docs, strict=True))
    ]
    model = student("contrastive")
    got = select_online(model, samples, 8, n_chunks=4, generator=torch.Generator().manual_seed(2))
    pairs = ContrastivePairScores(
        "learnability", student=embed_pairs(model.eval(), texts, docs), teacher=emb
    )
    expected = select_joint(pairs, 8, n_chunks=4, noise=torch.Generator().manual_seed(2))
    assert got.indices == expected.tolist() and len(set(got.indices)) == 8
    with pytest.raises(JestflowError, match="teacher_scale"):
        bare = [
            TrainSample(
                key=s.key, text=s.text, pair=s.pair, teacher_loss=0.0, embeddings=s.embeddings
            )
            for s in samples
        ]
        select_online(model, bare, 8)


def test_bad_requests_are_clear_errors():
    samples = lm_samples([1.0] * 4)
    with pytest.raises(JestflowError, match="cannot choose 5 of a super-batch of 4"):
        select_online(student(), samples, 5)
    with pytest.raises(JestflowError, match="unknown mode"):
        select_online(student(), samples, 2, mode="random")
