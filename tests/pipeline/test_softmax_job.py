"""The softmax (CLIP) loss end to end: a teacher trained on it, `curate` selecting by it (the
teacher's loss by default), shards that say so, and a student that trains and selects by it; and
the per-pair scores CLIP-score and negCLIPLoss through `curate`."""

from __future__ import annotations

import json

import numpy as np
import torch
from corpora import TINY, fit, pairs_config
from helpers import SEED, kept_are_top

from jestflow.pipeline.job import run_curation
from jestflow.trainer.loop import TrainConfig, train
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import fingerprint, load_model, pair_loss_of
from jestflow.transforms.formats.score_cache import CachedOutputs, cache_parts
from jestflow.transforms.formats.shards import read_shard
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.records import FieldMap
from jestflow.transforms.selection.jest import SoftmaxPairScores, select_joint
from jestflow.transforms.selection.offline import SelectionConfig
from jestflow.transforms.selection.super_batches import key_hash

FIELDS = FieldMap(query="query", doc="doc")


def super_batches(out, cache: str, teacher: str) -> dict:
    """Each super-batch's manifest rows in (hash, key) order, with the teacher's cached
    embeddings of them as they are and on the selection grid (softmax)."""
    outputs = CachedOutputs(cache_parts(cache, fingerprint(teacher)))
    rows = read_manifest(str(out / "manifest")).to_pylist()
    found = {}
    for batch in sorted({r["super_batch"] for r in rows if r["super_batch"] is not None}):
        members = sorted(
            (r for r in rows if r["super_batch"] == batch),
            key=lambda r: (key_hash(r["key"], 0), r["key"]),
        )
        cached = [outputs.get(r["id"], "fp32") for r in members]
        pairs = np.stack([o.embeddings for o in cached]).astype(np.float64)
        views = [
            PairEmbeddings(
                torch.from_numpy(x[:, 0]),
                torch.from_numpy(x[:, 1]),
                cached[0].scale,
                0.0,
                "softmax",
            )
            for x in (pairs, np.round(pairs / 1e-4) * 1e-4)
        ]
        found[batch] = (members, *views)
    return found


def test_a_softmax_teacher_curates_and_a_student_trains_by_the_softmax_loss(pairs, tmp_path):
    teacher = fit(
        str(pairs / "ref.jsonl"), tmp_path / "t", "contrastive", FIELDS, 30, loss="softmax"
    )
    assert pair_loss_of(teacher) == "softmax" and load_model(teacher).pair_loss == "softmax"
    cache = str(tmp_path / "cache")
    selection = SelectionConfig(keep=0.5, seed=0, n_chunks=4, method="topk")
    out = tmp_path / "out"
    run_curation(pairs_config(pairs, out, teacher=teacher, cache=cache, selection=selection))
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["selection"]["loss"] == "softmax"  # the teacher's, not given

    # Every super-batch's teacher losses and kept set, recomputed from the cached embeddings:
    # each pair's softmax loss against its super-batch, and top-k blocked selection by hand.
    batches = super_batches(out, cache, teacher)
    assert len(batches) == 4
    for batch, (members, raw, quantised) in batches.items():
        losses = raw.softmax_losses().numpy()
        assert np.abs(losses - [r["teacher_loss"] for r in members]).max() < 2e-4
        k = sum(r["status"] == "selected" for r in members)
        assert k == -(-len(members) // 2)
        chosen = select_joint(
            SoftmaxPairScores("easy_reference", teacher=quantised), k, n_chunks=4, method="topk"
        )
        want = {members[i]["key"] for i in chosen.tolist()}
        assert want == {r["key"] for r in members if r["status"] == "selected"}, batch

    shards = sorted((out / "shards").glob("*.tar"))
    assert {s["json"]["pair_loss"] for shard in shards for s in read_shard(str(shard))} == {
        "softmax"
    }
    student = tmp_path / "student"
    train(
        TrainConfig(
            shards=(str(out / "shards" / "*.tar"),),
            task="contrastive",
            output=str(student),
            batch_size=8,
            steps=3,
            seed=SEED,
            device="cpu",
            warmup_steps=1,
            **TINY,
        )
    )
    assert load_model(str(student)).pair_loss == "softmax"  # the shards' loss, by default
    steps = [json.loads(x) for x in (student / "log.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and all(np.isfinite(r["loss"]) for r in steps)


def test_clip_score_and_neg_clip_loss_rank_each_pair_within_its_super_batch(pairs, tmp_path):
    """`--score clip_score` and `--score neg_clip_loss` through the job: every manifest score is
    the pair's cosine, or minus its softmax loss against its super-batch (the cached teacher
    embeddings, on the selection grid), and top-k keeps the highest of each super-batch."""
    teacher, cache = str(pairs / "teacher"), str(tmp_path / "cache")
    for mode in ("clip_score", "neg_clip_loss"):
        out = tmp_path / mode
        selection = SelectionConfig(keep=0.25, mode=mode, method="topk")
        run_curation(pairs_config(pairs, out, cache=cache, selection=selection))
        for members, _, grid in super_batches(out, cache, teacher).values():
            want = (
                (grid.left * grid.right).sum(1) if mode == "clip_score" else -grid.softmax_losses()
            ).numpy()
            assert np.abs(want - [r["score"] for r in members]).max() < 1e-4, mode
            assert kept_are_top(members), mode
