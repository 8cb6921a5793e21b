"""Contrastive curation end to end, for text pairs and image-text pairs: what the shards hold (the
payload and the teacher's embeddings of that very sample), the score cache, learnability with a
student as exact joint selection, and the online trainer on the shards."""

from __future__ import annotations

import dataclasses
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from corpora import digest, fit, images_config, pairs_config

from jestflow.cli import main
from jestflow.pipeline.job import run_curation
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import fingerprint, load_model
from jestflow.transforms.formats.shards import read_shard
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import embed_pairs, pair_inputs
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example, FieldMap
from jestflow.transforms.selection.jest import ContrastivePairScores, KeyedNoise, select_joint
from jestflow.transforms.selection.offline import SelectionConfig, kept_count, quantise
from jestflow.transforms.selection.super_batches import key_hash

CORPORA = {"pairs": pairs_config, "images": images_config}
TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--max-len", "64"]


@pytest.fixture(scope="module")
def curated(request, tmp_path_factory):
    """Each corpus curated once, with a score cache: {corpus: (root, config, stats)}."""
    runs = {}
    for name, make_config in CORPORA.items():
        root = request.getfixturevalue(name)
        out = tmp_path_factory.mktemp(f"curated-{name}")
        config = make_config(root, out / "out", cache=str(out / "cache"), workers=2)
        runs[name] = (root, config, run_curation(config))
    return runs


def shard_files(config) -> list[Path]:
    return sorted((Path(config.output) / "shards").iterdir())


def shard_samples(config) -> list[dict]:
    return [sample for shard in shard_files(config) for sample in read_shard(str(shard))]


def examples_by_key(config) -> dict[str, Example]:
    records = read_examples(config.inputs, config.fields)
    return {ex.key: ex for ex in records if isinstance(ex, Example)}


def on_grid(emb: PairEmbeddings, quantum: float) -> PairEmbeddings:
    """Embeddings as selection sees them: rounded to the grid."""
    left, right = (torch.from_numpy(quantise(x.numpy(), quantum)) for x in (emb.left, emb.right))
    return PairEmbeddings(left, right, emb.scale, emb.bias)


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_kept_pairs_are_mostly_matching(curated, corpus, learned):
    _, config, stats = curated[corpus]
    n = {"images": 64, "pairs": 128}[corpus]  # keep 0.5
    assert stats["counts"] == {
        "selected": n // 2,
        "not_selected": n // 2,
        "duplicate": 0,
        "rejected": 0,
        "inputs": n,
    }
    got = shard_samples(config)
    payload = {"images": {"png"}, "pairs": {"doc.txt"}}[corpus]
    for sample in got:
        assert set(sample) - {"__key__", "__url__"} == {"txt", "json", "npy", *payload}
        assert sample["npy"].shape == (2, 128) and sample["npy"].dtype == np.float32
        assert np.allclose(np.linalg.norm(sample["npy"], axis=1), 1, atol=1e-3)
        assert sample["json"]["teacher_scale"] > 0 and "teacher_bias" in sample["json"]
    for shard in shard_files(config):
        with tarfile.open(shard) as tar:  # the image keeps its encoding: a .png member
            extensions = {m.name.split(".", 1)[1] for m in tar.getmembers()}
            assert extensions == {"txt", "json", "npy", *payload}
    matching = sum(s["json"]["meta"]["kind"] == "clean" for s in got) / len(got)
    learned.expect("matching share of the kept pairs (pool: half)", matching, ">", 0.65)


@pytest.mark.parametrize("corpus", CORPORA)
def test_each_samples_embeddings_are_the_teachers_embeddings_of_that_sample(curated, corpus):
    """A shard's npy must belong to its own sample: recompute the teacher's embeddings from each
    sample's payload; every stored pair is its own (to the selection grid) and nearer to its own
    than to any other sample's."""
    _, config, _ = curated[corpus]
    got = shard_samples(config)
    right = [s["png"] if corpus == "images" else s["doc.txt"].decode() for s in got]
    emb = embed_pairs(load_model(config.teacher), [s["txt"].decode() for s in got], right)
    recomputed = np.stack([emb.left.numpy(), emb.right.numpy()], axis=1)
    stored = np.stack([s["npy"] for s in got])
    assert np.abs(stored - recomputed).max() < 1e-4  # quantised to 1e-4: off by half of it
    for side in (0, 1) if corpus == "pairs" else (1,):  # captions repeat; images do not
        distance = ((stored[:, None, side] - recomputed[None, :, side]) ** 2).sum(-1)
        assert (distance.argmin(1) == np.arange(len(got))).all()


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_cache_holds_each_examples_embeddings_and_a_warm_run_scores_nothing(
    curated, corpus, tmp_path
):
    _, config, stats = curated[corpus]
    n = stats["counts"]["inputs"]
    assert stats["scoring"]["teacher"] == {"scored": n, "cached": 0}
    table = pq.read_table(f"{config.cache}/{fingerprint(config.teacher)}").to_pylist()
    by_id = {row["id"]: row for row in table}
    examples = list(examples_by_key(config).values())
    assert len(by_id) == len({ex.id for ex in examples})
    emb = embed_pairs(load_model(config.teacher), *pair_inputs(examples))
    for i, ex in enumerate(examples):
        row = by_id[ex.id]
        assert np.allclose(row["left"], emb.left[i].numpy(), atol=1e-5)
        assert np.allclose(row["right"], emb.right[i].numpy(), atol=1e-5)  # the image's, too
    warm = run_curation(dataclasses.replace(config, output=str(tmp_path / "warm")))
    assert warm["scoring"]["teacher"] == {"scored": 0, "cached": n}
    for folder in ("shards", "manifest"):
        assert digest(tmp_path / "warm" / folder) == digest(Path(config.output) / folder), folder


def test_learnability_with_a_student_is_joint_selection_on_both_models(pairs, tmp_path):
    """`curate --student` on pairs: every super-batch keeps exactly what JEST's blocked sampling
    chooses on ℓ(student) − ℓ(teacher) pair losses of the two models' quantised embeddings."""
    fields = FieldMap(query="query", doc="doc")
    student = fit(str(pairs / "ref.jsonl"), tmp_path / "student", "contrastive", fields, 40)
    selection = SelectionConfig(keep=0.5, seed=4, n_chunks=4, mode="learnability")
    config = pairs_config(pairs, tmp_path / "out", student=student, selection=selection)
    stats = run_curation(config)
    assert stats["student"]["fingerprint"] == fingerprint(student)
    rows = read_manifest(str(tmp_path / "out" / "manifest")).to_pylist()
    examples = examples_by_key(config)
    models = {"teacher": load_model(config.teacher), "student": load_model(student)}
    batches = sorted({r["super_batch"] for r in rows})
    assert len(batches) == 4
    for batch in batches:
        members = sorted(
            (r for r in rows if r["super_batch"] == batch),
            key=lambda r: (key_hash(r["key"], selection.seed), r["key"]),
        )
        inputs = pair_inputs([examples[r["key"]] for r in members])
        emb = {
            role: on_grid(embed_pairs(model, *inputs), selection.quantum)
            for role, model in models.items()
        }
        pairs_scores = ContrastivePairScores(
            "learnability", student=emb["student"], teacher=emb["teacher"]
        )
        chosen = select_joint(
            pairs_scores,
            kept_count(len(members), selection.keep),
            n_chunks=selection.n_chunks,
            noise=KeyedNoise([r["key"] for r in members], selection.seed),
        )
        expected = {members[i]["key"] for i in chosen.tolist()}
        assert {r["key"] for r in members if r["status"] == "selected"} == expected


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_online_trainer_learns_from_contrastive_shards(curated, corpus, tmp_path):
    _, config, _ = curated[corpus]
    fields = (
        ["--image-field", "img", "--caption-field", "cap"]
        if corpus == "images"
        else ["--query-field", "query", "--doc-field", "doc"]
    )
    out = tmp_path / "student"
    args = [
        "train",
        "--shards",
        f"{config.output}/shards/*.tar",
        "--task",
        "contrastive",
        "--batch-size",
        "4",
        "--super-batch-ratio",
        "2",
        "--chunks",
        "2",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--eval",
        config.inputs[0],
        *fields,
        "--device",
        "cpu",
        *TINY,
    ]
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(isinstance(r["learnability"], float) and r["score_flops"] > 0 for r in steps)
    evals = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and 0 <= evals[-1]["eval_recall_at_1"] <= 1
    right, other = ("image", "pairs") if corpus == "images" else ("text", "images")
    assert load_model(str(out)).right_kind == right  # a fresh student reads what the shards hold
    init = curated[other][1].teacher  # a two-tower model of the other kind
    wrong = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x"), "--init", init])
    assert wrong.exit_code == 1, wrong.output
    assert f"but the data pairs it with {right}" in wrong.output
