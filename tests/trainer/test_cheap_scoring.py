"""Cheap learner scoring (Flexi-JEST): image towers read lower resolutions, FLOPs are counted
per input (so a cheaper pass shows as one), the student scores images small and trains small on
a share of the steps, and the log says how the cheap scores rank the candidates against the full
ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from corpora import TINY
from helpers import SEED
from torch.utils.flop_counter import FlopCounterMode

from jestflow.trainer.core import load_examples
from jestflow.trainer.flops import FlopCount
from jestflow.trainer.loop import TrainConfig, train
from jestflow.trainer.online_selection import rank_correlation
from jestflow.trainer.prefetch import prepare
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.formats.shard_samples import TrainSample, encode
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.models import new_model
from jestflow.transforms.models.images import resize_images
from jestflow.transforms.models.scoring import embed_pairs, pair_inputs
from jestflow.transforms.records import FieldMap

FIELDS = FieldMap(image="img", caption="cap", keep=("kind",))


@pytest.fixture(scope="module")
def image_shards(images, tmp_path_factory):
    """The `images` pool as curated shards (every pair kept, with the teacher's embeddings)."""
    out = tmp_path_factory.mktemp("image-shards")
    examples = load_examples([str(images / "pool.parquet")], FIELDS)[0]
    teacher = load_model(str(images / "teacher"), task="contrastive").eval()
    emb = embed_pairs(teacher, *pair_inputs(examples))
    with ShardWriter(str(out), prefix="shard", max_count=40) as writer:
        for i, example in enumerate(examples):
            info = {
                "teacher_loss": 0.0,
                "score": 0.0,
                "teacher_scale": emb.scale,
                "teacher_bias": emb.bias,
            }
            pair = torch.stack([emb.left[i], emb.right[i]]).numpy()
            writer.write(encode(example, info, pair.astype(np.float32)))
    return out


def image_model(encoder):
    torch.manual_seed(0)
    return new_model("contrastive", right_kind="image", image_encoder=encoder, **TINY).eval()


@pytest.mark.parametrize("encoder", ["conv", "vit"])
def test_image_towers_read_a_lower_resolution(encoder):
    model = image_model(encoder)
    big = [torch.rand(3, 64, 64) * 2 - 1 for _ in range(4)]
    small = resize_images(big, 32)
    assert small[0].shape == (3, 32, 32)
    with torch.no_grad():
        full, cheap = model.embed_right(big), model.embed_right(small)
    assert cheap.shape == full.shape and torch.isfinite(cheap).all()
    assert not torch.allclose(cheap, full)
    tower = model.right
    if encoder == "conv":  # at its own size the map is not pooled: the trained computation
        with torch.no_grad():
            plain = tower.head(tower.ln(tower.features(torch.stack(big)).flatten(1)))
        assert torch.equal(tower(big), plain)
    else:
        assert tower._positions(8, 8) is tower.positions
        assert tower._positions(4, 4).shape == (16, tower.positions.shape[1])


def test_flops_are_counted_per_input_and_follow_the_resolution():
    model = image_model("conv")
    texts = ["a red square", "a blue square on a green ground"]
    pairs = [(left, torch.rand(3, 64, 64)) for left in model.prepare_left(texts)]
    small = [(left, resize_images([right], 32)[0]) for left, right in pairs]
    count = FlopCount(model)
    full, cheap = count.forward(pairs), count.forward(small)
    # an independent count: the whole batch through both towers at once
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.embed_left([p[0] for p in pairs])
        model.embed_right([p[1] for p in pairs])
    assert full == pytest.approx(counter.get_total_flops(), rel=1e-6)
    assert 0.2 < (cheap / full) < 0.45  # the convolutions cost a quarter; the heads the same
    lm = new_model("lm", **TINY)
    lm_count = FlopCount(lm)
    short, long = (lm.tokenize(["x" * n])[0] for n in (16, 48))
    assert 1.8 < lm_count.forward([long]) / lm_count.forward([short]) < 3.5  # padded lengths


def test_rank_correlation_is_spearmans_rho():
    a = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.7])
    assert rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    b = torch.tensor([0.2, 0.1, 0.4, 0.3, 0.5])
    d = np.array([1, 3, 2, 5, 4]) - np.array([2, 1, 4, 3, 5])  # the two rankings' differences
    assert rank_correlation(a, b) == pytest.approx(1 - 6 * (d**2).sum() / (5 * (25 - 1)))


def run(image_shards, images, out, **changes):
    options = {
        "shards": (str(image_shards / "*.tar"),),
        "task": "contrastive",
        "output": str(out),
        "batch_size": 8,
        "super_batch_ratio": 4,
        "steps": 6,
        "eval_every": 3,
        "eval_inputs": (str(images / "ref.parquet"),),
        "fields": FieldMap(image="img", caption="cap"),
        "image_encoder": "conv",
        "seed": SEED,
        "device": "cpu",
        **TINY,
    }
    train(TrainConfig(**{**options, **changes}))
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_the_student_scores_images_small_and_trains_small_on_a_share_of_the_steps(
    image_shards, images, tmp_path
):
    full = run(image_shards, images, tmp_path / "full")
    cheap = run(image_shards, images, tmp_path / "cheap", score_image_size=32, small_share=0.5)
    full_steps = [r for r in full if "loss" in r]
    cheap_steps = [r for r in cheap if "loss" in r]
    ratio = [
        c["score_flops"] / f["score_flops"] for c, f in zip(cheap_steps, full_steps, strict=True)
    ]
    assert all(0.2 < x < 0.45 for x in ratio), (
        ratio
    )  # 32 candidates' images at a quarter the pixels
    trained = [
        c["train_flops"] / f["train_flops"] for c, f in zip(cheap_steps, full_steps, strict=True)
    ]
    assert [x < 0.5 for x in trained] == [False, True] * 3  # every other step at 32 pixels
    evals = [r for r in cheap if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(-1 <= r["cheap_score_rank_correlation"] <= 1 for r in evals)
    assert not any("cheap_score_rank_correlation" in r for r in full)  # nothing cheap to rank
    # scoring at the images' own size: the same scores by the same model, ρ = 1 exactly
    same = run(image_shards, images, tmp_path / "same", score_image_size=64, steps=3)
    assert [r["cheap_score_rank_correlation"] for r in same if "eval_loss" in r] == [
        pytest.approx(1.0, abs=1e-9)
    ]


def test_a_run_trains_the_same_with_its_inputs_made_in_a_worker_process_or_in_a_thread(
    image_shards, images, tmp_path, monkeypatch
):
    """The worker process hands each step's inputs over packed (`packing`): the same candidates,
    sub-batches and losses as when the trainer's own thread makes them (on as many threads: the
    trainer leaves an image reader a core unless OMP_NUM_THREADS says otherwise)."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    changes = {"score_image_size": 32, "small_share": 0.5}
    there = run(image_shards, images, tmp_path / "process", read_process=True, **changes)
    here = run(image_shards, images, tmp_path / "thread", read_process=False, **changes)
    same = ("loss", "eval_loss", "score_flops", "train_flops", "cheap_score_rank_correlation")

    def values(log):
        return [{k: r[k] for k in same if k in r} for r in log if "step" in r]

    assert values(there) == values(here) and len(values(here)) == 8  # 6 steps, 2 evaluations


def test_a_scoring_size_is_for_images():
    base = {"task": "lm", "output": "x", "shards": ("s",)}
    with pytest.raises(JestflowError, match="--score-image-size is for image-text pairs"):
        TrainConfig(**base, score_image_size=32)
    with pytest.raises(JestflowError, match="16 pixels or more"):
        TrainConfig(**{**base, "task": "contrastive"}, score_image_size=8)
    samples = [TrainSample(key="k", text="a query", pair="def f(): pass")]
    with pytest.raises(JestflowError, match="these pair texts"):
        prepare(new_model("contrastive", **TINY), samples, None, scoring=True, score_image_size=32)
