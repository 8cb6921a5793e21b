"""Learnability-weighted training (`--mode weighted`): weights b · softmax(s / τ) from the
training forward itself, the plain loss when all scores tie, more weight on what the student has
yet to learn and the teacher finds easy; a run draws b per step and spends no scoring FLOPs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from corpora import TINY, curate
from test_loop import config, noisy_shards  # noqa: F401  (the fixture)

from jestflow.trainer.core import batch_loss
from jestflow.trainer.loop import train
from jestflow.trainer.weighted import Curated, Weighted, _shares, training_loss, weights
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.shards import read_shard
from jestflow.transforms.models import new_model
from jestflow.transforms.models.losses import PairEmbeddings


def model(task):
    torch.manual_seed(0)
    return new_model(task, **TINY).train()


def test_weights_have_mean_one_and_follow_the_scores():
    batch = Weighted([], torch.zeros(4), temperature=0.5)
    w = weights(torch.tensor([0.0, 1.0, 2.0, 3.0]), batch)
    assert w.mean().item() == pytest.approx(1.0)
    expected = torch.softmax(torch.tensor([0.0, 2.0, 4.0, 6.0]), 0) * 4  # s / τ, τ = 0.5
    assert torch.allclose(w, expected)
    assert torch.equal(weights(torch.full((4,), 1.5), batch), torch.ones(4))


def test_the_loss_is_the_plain_one_when_the_teacher_matches_the_student():
    lm = model("lm")
    inputs = lm.tokenize(["a short text", "another text that is longer", "x y z"])
    with torch.no_grad():
        own = lm.sequence_nll(inputs).float()
    plain = batch_loss(lm, inputs)
    # Every score 0, every w = 1. An absolute τ: the training forward may differ from the
    # no-grad one in the last bits (other CPU kernels), and a relative τ scales that noise up.
    tied = training_loss(lm, Weighted(inputs, own, temperature=1.0))
    assert tied.item() == pytest.approx(plain.item(), rel=1e-5)
    easy = training_loss(lm, Weighted(inputs, own - torch.tensor([0.0, 0.0, 5.0]), 0.1))
    # the third text has the highest learnability: nearly all weight, its loss alone
    assert easy.item() == pytest.approx(own[2].item(), rel=1e-3)  # w = (0, 0, 3), a mean

    pairs = model("contrastive")
    texts, docs = ["a red square", "a blue circle", "two dots"], ["red", "blue", "dots"]
    inputs = list(zip(pairs.prepare_left(texts), pairs.prepare_right(docs), strict=True))
    left, right = zip(*inputs, strict=True)
    with torch.no_grad():
        same = pairs.pair_embeddings(pairs.embed_left(left), pairs.embed_right(right))
    teacher = PairEmbeddings(same.left, same.right, same.scale.item(), same.bias.item())
    tied = training_loss(pairs, Weighted(inputs, teacher, temperature=1.0))
    assert tied.item() == pytest.approx(batch_loss(pairs, inputs).item(), rel=1e-5)
    assert _shares(same).sum().item() == pytest.approx(same.losses().sum().item(), rel=1e-5)


def test_a_weighted_run_draws_b_and_spends_no_scoring_pass(noisy_shards, tmp_path):  # noqa: F811
    for mode in ("uniform", "weighted"):
        train(config(noisy_shards, tmp_path / mode, mode=mode, steps=4, eval_inputs=()))
    logs = {
        mode: [json.loads(x) for x in (tmp_path / mode / "log.jsonl").read_text().splitlines()]
        for mode in ("uniform", "weighted")
    }
    weighted, uniform = logs["weighted"], logs["uniform"]
    assert [r["examples_seen"] for r in weighted] == [16, 32, 48, 64]  # b per step
    assert all(r["score_flops"] == 0 for r in weighted)
    assert [r["train_flops"] for r in weighted] == [r["train_flops"] for r in uniform]
    # the same samples, drawn alike, trained on with other weights
    assert weighted[0]["tags"] == uniform[0]["tags"]
    assert weighted[0]["loss"] != pytest.approx(uniform[0]["loss"], rel=1e-4)


def test_curated_weights_scale_each_examples_loss():
    lm = model("lm")
    inputs = lm.tokenize(["a short text", "another text that is longer", "x y z"])
    with torch.no_grad():
        own = lm.sequence_nll(inputs).float()
    w = torch.tensor([0.5, 2.0, 0.5])
    got = training_loss(lm, Curated(inputs, w))
    assert got.item() == pytest.approx((w * own).mean().item(), rel=1e-5)
    ones = training_loss(lm, Curated(inputs, torch.ones(3)))
    assert ones.item() == pytest.approx(batch_loss(lm, inputs).item(), rel=1e-5)


def test_a_curated_weights_run_weights_by_the_shards_json(noisy, noisy_shards, tmp_path):  # noqa: F811
    """Shards from curate carry a weight per sample (mean 1 over the kept of each super-batch);
    `--mode curated_weights` draws b like uniform and trains on them weighted: the same samples,
    the same FLOPs, another loss. Shards without weights are refused, naming a sample."""
    out, _ = curate(noisy, tmp_path / "curated")
    shards = sorted((out / "shards").glob("*.tar"))
    samples = [s for shard in shards for s in read_shard(str(shard))]
    by_batch: dict[int, list[float]] = {}
    for s in samples:
        by_batch.setdefault(s["json"]["super_batch"], []).append(s["json"]["weight"])
    assert len(by_batch) > 1
    for found in by_batch.values():
        assert sum(found) / len(found) == pytest.approx(1.0) and max(found) > min(found)
    curated_shards = (str(out / "shards" / "*.tar"),)
    for mode in ("uniform", "curated_weights"):
        run = config(noisy_shards, tmp_path / mode, mode=mode, steps=3, eval_inputs=())
        train(dataclasses.replace(run, shards=curated_shards))
    logs = {
        mode: [json.loads(x) for x in (tmp_path / mode / "log.jsonl").read_text().splitlines()]
        for mode in ("uniform", "curated_weights")
    }
    curated, uniform = logs["curated_weights"], logs["uniform"]
    assert [r["examples_seen"] for r in curated] == [16, 32, 48]  # b per step
    assert all(r["score_flops"] == 0 for r in curated)
    assert [r["train_flops"] for r in curated] == [r["train_flops"] for r in uniform]
    assert curated[0]["tags"] == uniform[0]["tags"]
    assert curated[0]["loss"] != pytest.approx(uniform[0]["loss"], rel=1e-4)
    unweighted = config(noisy_shards, tmp_path / "old", mode="curated_weights", eval_inputs=())
    with pytest.raises(JestflowError, match=r"sample '.*' has no soft weight: .*re-curate"):
        train(unweighted)
