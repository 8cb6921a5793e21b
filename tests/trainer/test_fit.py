"""Teacher training: a short run must beat the untrained model on held-out data; an output that
holds something is replaced only with `overwrite`."""

from __future__ import annotations

import json
import logging
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import COLORS, SEED, lr, png, sentences, shade, untrained_eval, write_jsonl

from jestflow.trainer.core import evaluate, load_examples
from jestflow.trainer.fit import TeacherConfig, train_teacher, training_items
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.model_files import fingerprint, load_model
from jestflow.transforms.models.documents import document_losses
from jestflow.transforms.records import FieldMap

TINY = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64}


def config(inputs, eval_inputs, output, task, fields, **overrides):
    values = {
        "steps": 80,
        "batch_size": 16,
        "lr": lr(3e-3),
        "warmup_steps": 5,
        "seed": SEED,
        "device": "cpu",
        **TINY,
    }
    values.update(overrides)
    return TeacherConfig(
        inputs=(inputs,),
        eval_inputs=(eval_inputs,),
        output=output,
        task=task,
        fields=fields,
        **values,
    )


def test_lm_teacher_learns_and_writes_a_checkpoint(tmp_path, text_corpus, learned):
    fields = FieldMap(text="text")
    out = str(tmp_path / "teacher")
    result = train_teacher(config(*text_corpus, out, "lm", fields))
    before, _ = untrained_eval("lm", text_corpus[1], fields, TINY)
    # ln 257 ≈ 5.5 → well under 4 nats per byte
    learned.expect("held-out loss below the untrained model's", before - result.eval_loss, ">", 1.5)
    assert result.examples == 300 and result.eval_examples == 60
    assert result.fingerprint == fingerprint(out)
    metrics = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(result.eval_loss)
    assert metrics["curve"][0]["loss"] > metrics["curve"][-1]["loss"]
    assert (
        result.mean_train_loss_steps == 50 and metrics["mean_train_loss"] == result.mean_train_loss
    )
    model = load_model(out, task="lm")
    examples, _ = load_examples([text_corpus[1]], fields)
    # held out: whole documents, as curation scores them
    held_out = evaluate(model, examples, 16, whole_documents=True)[0]
    assert held_out == pytest.approx(result.eval_loss, rel=1e-5)


def test_an_lm_teacher_trains_on_every_window_of_its_documents(tmp_path, learned):
    """Documents of ~460 bytes whose start is English and whose body is digits: a teacher of a
    64-byte context that trained on starts alone would never see a digit; it trains on every
    window, as curation scores them, so it learns the bodies too."""
    rng = random.Random(5)

    def document(k: int) -> str:
        start = " ".join(sentences(3, k))[:64]
        return start + "".join(rng.choice("0123456789 ") for _ in range(400))

    fields = FieldMap(text="text")
    texts = [document(k) for k in range(220)]
    reference = write_jsonl(tmp_path / "ref.jsonl", ({"text": t} for t in texts[:200]))
    held = write_jsonl(tmp_path / "eval.jsonl", ({"text": t} for t in texts[200:]))
    out = str(tmp_path / "teacher")
    train_teacher(config(reference, held, out, "lm", fields))
    model = load_model(out, task="lm")
    items = training_items(model, load_examples([reference], fields)[0])
    assert len(items) == 200 * 8  # 464 bytes: 7 windows of 64 and one of 16
    first, second = items[0].tolist(), items[1].tolist()
    assert first == [model.bos, *texts[0].encode()[:64]]
    assert second == list(texts[0].encode()[63:128])  # opens with the byte before it
    bodies = document_losses(model, texts[200:]).windows
    body_loss = sum(w[1:].mean().item() for w in bodies) / len(bodies)
    # random digits and spaces: ln 11 ≈ 2.4 nats a byte; an untrained model ≈ 5.5
    learned.expect("held-out loss on documents' bodies", body_loss, "<", 3.5)


def test_same_seed_same_teacher(tmp_path, text_corpus):
    fields = FieldMap(text="text")
    a = train_teacher(config(*text_corpus, str(tmp_path / "a"), "lm", fields, steps=5))
    b = train_teacher(config(*text_corpus, str(tmp_path / "b"), "lm", fields, steps=5))
    assert a.fingerprint == b.fingerprint


def test_contrastive_teacher_matches_pairs(tmp_path, pair_corpus, learned):
    fields = FieldMap(query="query", doc="doc")
    # 120 steps at lr 3e-3 reached recall@1 0.08–0.42 by seed; this recipe 0.72–0.86 (margins.py).
    result = train_teacher(
        config(
            *pair_corpus,
            str(tmp_path / "t"),
            "contrastive",
            fields,
            steps=600,
            lr=lr(5e-3),
            warmup_steps=20,
        )
    )
    before_loss, before_recall = untrained_eval("contrastive", pair_corpus[1], fields, TINY)
    assert before_recall < 0.2  # chance is 1/16
    learned.expect(
        "held-out loss below the untrained model's", before_loss - result.eval_loss, ">", 1.0
    )
    learned.expect("held-out recall@1 (chance 1/16)", result.eval_recall_at_1, ">", 0.4)
    assert load_model(str(tmp_path / "t")).task == "contrastive"


def test_image_text_teacher_trains_an_image_tower(tmp_path, learned):
    rows = [
        {"img": {"bytes": png(rgb)}, "cap": f"a {name} square"} for name, rgb in COLORS.items()
    ] * 8
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "images.parquet")
    shades = [  # held out: other shades of the same colours, each batch of four one of each
        {"img": {"bytes": png(shade(rgb, delta))}, "cap": f"a {name} square"}
        for delta in (-45, -30, -15, 5)
        for name, rgb in COLORS.items()
    ]
    pq.write_table(pa.Table.from_pylist(shades), tmp_path / "shades.parquet")
    fields = FieldMap(image="img", caption="cap")
    train, held_out = str(tmp_path / "images.parquet"), str(tmp_path / "shades.parquet")
    result = train_teacher(
        config(train, held_out, str(tmp_path / "t"), "contrastive", fields, steps=40, batch_size=4)
    )
    model = load_model(str(tmp_path / "t"), task="contrastive")
    assert model.right_kind == "image"
    assert result.eval_examples == 16
    learned.expect("held-out recall@1 (chance 0.25)", result.eval_recall_at_1, ">", 0.5)


def test_bad_configs_are_clear(tmp_path, text_corpus):
    with pytest.raises(JestflowError, match="task lm needs text fields"):
        config(*text_corpus, str(tmp_path / "x"), "lm", FieldMap(query="q", doc="d"))
    with pytest.raises(JestflowError, match="unknown task"):
        config(*text_corpus, str(tmp_path / "x"), "vision", FieldMap(text="text"))
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": ""}, {"other": "x"}])
    with pytest.raises(JestflowError, match=r"no usable examples .* record 0: text is empty"):
        train_teacher(config(empty, empty, str(tmp_path / "x"), "lm", FieldMap(text="text")))


def test_an_output_that_holds_something_is_replaced_only_with_overwrite(tmp_path, text_corpus):
    fields = FieldMap(text="text")
    out = tmp_path / "t"
    first = train_teacher(config(*text_corpus, str(out), "lm", fields, steps=2))
    assert first.mean_train_loss_steps == 2  # a run shorter than 50 steps: all of them
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        JestflowError,
        match=r"already holds a model checkpoint \(config.json, .*"
        r"pass --overwrite",
    ):
        train_teacher(config(*text_corpus, str(out), "lm", fields, steps=2, seed=SEED + 1))
    assert fingerprint(str(out)) == first.fingerprint  # refused before training: untouched
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    with pytest.raises(JestflowError, match="already holds a training run"):
        train_teacher(config(*text_corpus, str(run), "lm", fields, steps=2))
    second = train_teacher(
        config(*text_corpus, str(out), "lm", fields, steps=2, seed=SEED + 1, overwrite=True)
    )
    assert second.fingerprint != first.fingerprint and fingerprint(str(out)) == second.fingerprint
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]


def test_a_warm_up_longer_than_the_run_is_flagged(tmp_path, text_corpus, caplog):
    fields = FieldMap(text="text")
    with caplog.at_level(logging.WARNING, logger="jestflow"):
        train_teacher(config(*text_corpus, str(tmp_path / "a"), "lm", fields, steps=6))
    assert not caplog.records  # the test recipe's 5 warm-up steps
    with caplog.at_level(logging.WARNING, logger="jestflow"):
        train_teacher(config(*text_corpus, str(tmp_path / "b"), "lm", fields, steps=5))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("--warmup-steps 5 ≥ --steps 5: the whole run is warm-up")


def test_init_starts_from_a_jestflow_checkpoint(tmp_path, text_corpus):
    fields = FieldMap(text="text")
    first = train_teacher(config(*text_corpus, str(tmp_path / "a"), "lm", fields, steps=20))
    sizes = dict.fromkeys(TINY)  # --init brings the architecture: no size options
    again = config(
        *text_corpus,
        str(tmp_path / "b"),
        "lm",
        fields,
        steps=1,
        lr=1e-12,
        init=str(tmp_path / "a"),
        **sizes,
    )
    result = train_teacher(again)
    assert result.eval_loss == pytest.approx(first.eval_loss, abs=1e-5)  # the same weights
    assert result.fingerprint != first.fingerprint  # its meta says how it was made
    meta = json.loads((tmp_path / "b" / "config.json").read_text())["meta"]
    assert meta["init"] == str(tmp_path / "a") and meta["lr"] == 1e-12
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"q": "a", "d": "b"}] * 4)
    with pytest.raises(JestflowError, match="is a lm model, not contrastive"):
        train_teacher(
            config(
                pairs,
                pairs,
                str(tmp_path / "c"),
                "contrastive",
                FieldMap(query="q", doc="d"),
                init=str(tmp_path / "a"),
                **sizes,
            )
        )
