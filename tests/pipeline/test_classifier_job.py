"""Classifier teachers and ensembles of teachers end to end: `teacher train --task classifier`
(the reference against a sample of the pool), `curate` scoring by its log-odds alone or beside an
lm teacher (the z-scores of each within the super-batch, weighted), each teacher cached under its
own fingerprint, and students that train on such shards, or are told why they cannot."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import numpy as np
import pytest
from corpora import TEXT, TINY, config_for, fit_classifier, pairs_config
from helpers import SEED, kept_are_top

from jestflow.pipeline.job import run_curation
from jestflow.trainer.loop import TrainConfig, train
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import checkpoint_task, fingerprint, load_model
from jestflow.transforms.formats.shards import read_shard
from jestflow.transforms.models.classifier import log_odds
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example
from jestflow.transforms.selection.offline import SelectionConfig, quantise

TOP = SelectionConfig(keep=0.25, seed=1, method="topk")


@pytest.fixture(scope="module")
def classifier(noisy, tmp_path_factory) -> str:
    """A classifier of the noisy corpus's reference sentences against a sample of its pool."""
    out = tmp_path_factory.mktemp("classifier") / "teacher"
    result = fit_classifier(str(noisy / "ref.jsonl"), str(noisy / "pool.jsonl"), out, steps=60)
    assert result.negatives == 241 and result.examples == 300  # the pool's usable lines
    return str(out)


def texts_by_id(noisy) -> dict[str, str]:
    inputs = (str(noisy / "pool.jsonl"), str(noisy / "cut.jsonl.gz"))
    return {r.id: r.text for r in read_examples(inputs, TEXT) if isinstance(r, Example)}


def super_batches(out) -> dict[int, list[dict]]:
    found = defaultdict(list)
    for row in read_manifest(str(out / "manifest")).to_pylist():
        if row["super_batch"] is not None:
            found[row["super_batch"]].append(row)
    return found


def z_scores(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def test_a_classifier_teacher_selects_by_its_log_odds(noisy, classifier, tmp_path, learned):
    assert checkpoint_task(classifier) == "classifier"
    out = tmp_path / "out"
    run_curation(config_for(noisy, out, teacher=classifier, selection=TOP))
    texts, model = texts_by_id(noisy), load_model(classifier)
    rows = [r for members in super_batches(out).values() for r in members]
    kept = [r for r in rows if r["status"] == "selected"]
    clean = sum(json.loads(r["meta"])["kind"] == "clean" for r in kept) / len(kept)
    learned.expect("clean share kept by a classifier teacher", clean, ">", 0.72)
    want = log_odds(model, [texts[r["id"]] for r in rows]).double().numpy()
    assert np.abs(want - [r["score"] for r in rows]).max() < 2e-4  # log-odds on the grid
    assert np.abs(want + [r["teacher_loss"] for r in rows]).max() < 2e-4
    assert all(kept_are_top(members) for members in super_batches(out).values())

    samples = [s for shard in (out / "shards").glob("*.tar") for s in read_shard(str(shard))]
    assert {s["json"]["teacher_task"] for s in samples} == {"classifier"}
    student = dict(shards=(str(out / "shards" / "*.tar"),), task="lm", batch_size=4, steps=2)
    student |= dict(seed=SEED, device="cpu", warmup_steps=1, **TINY)
    with pytest.raises(JestflowError, match="curated by a classifier"):
        train(TrainConfig(output=str(tmp_path / "s1"), mode="learnability", **student))
    train(TrainConfig(output=str(tmp_path / "s2"), mode="uniform", **student))
    assert len((tmp_path / "s2" / "log.jsonl").read_text().splitlines()) == 2


def test_an_ensemble_selects_by_the_weighted_z_scores_of_its_teachers(noisy, classifier, tmp_path):
    """An lm teacher (by easy reference, −ℓ) and a classifier (log-odds), weighted 1 and 2: every
    manifest score is 1·z(−ℓ) + 2·z(log-odds) within its super-batch, recomputed from the
    teachers themselves; top-k keeps the highest; a re-run takes both from the cache."""
    cache = str(tmp_path / "cache")
    selection = SelectionConfig(keep=0.25, seed=1, method="topk", teacher_weights=(1.0, 2.0))
    config = config_for(
        noisy, tmp_path / "out", teachers=(classifier,), selection=selection, cache=cache
    )
    run_curation(config)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["models"]["teacher_2"]["fingerprint"] == fingerprint(classifier)
    texts, model = texts_by_id(noisy), load_model(classifier)
    for batch, members in super_batches(tmp_path / "out").items():
        reference = -np.array([r["teacher_loss"] for r in members])  # the lm's, on the grid
        odds = log_odds(model, [texts[r["id"]] for r in members]).numpy()
        want = z_scores(reference) + 2 * z_scores(quantise(odds, 1e-4).astype(np.float64))
        assert np.abs(want - [r["score"] for r in members]).max() < 1e-3, batch
        assert kept_are_top(members), batch

    again = run_curation(dataclasses.replace(config, output=str(tmp_path / "again")))
    for role in ("teacher", "teacher_2"):
        assert again["scoring"][role]["scored"] == 0 and again["scoring"][role]["cached"] > 0


def test_what_an_ensemble_refuses(noisy, classifier, pairs, tmp_path):
    weights = SelectionConfig(keep=0.25, teacher_weights=(1.0, 1.0, 1.0))
    with pytest.raises(JestflowError, match="3 weights for 2 teachers"):
        config_for(noisy, tmp_path / "a", teachers=(classifier,), selection=weights)
    learn = SelectionConfig(keep=0.25, mode="learnability")
    student = str(noisy / "student")
    with pytest.raises(JestflowError, match="give the lm teacher first"):
        config_for(noisy, tmp_path / "b", teacher=classifier, student=student, selection=learn)
    with pytest.raises(JestflowError, match="is a classifier model, not contrastive"):
        pairs_config(pairs, tmp_path / "c", teacher=classifier)
    with pytest.raises(JestflowError, match="a contrastive pool is scored by one teacher"):
        pairs_config(pairs, tmp_path / "d", teachers=(str(pairs / "teacher"),))
