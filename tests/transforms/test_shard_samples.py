"""The shard sample format: what `encode` writes, `decode` reads back, for every layout, through
a real shard (the writer and the reader the product uses)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import png

from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.shard_samples import CorruptSample, decode, encode, encode_selected
from jestflow.transforms.formats.shards import tar_samples, write_shards
from jestflow.transforms.records import make_example
from jestflow.transforms.selection.offline import Decision

EXAMPLES = {
    "text": make_example(
        layout="text", text="héllo wörld", source="a.jsonl", position=3, meta={"kind": "clean"}
    ),
    "text_pair": make_example(
        layout="text_pair", text="a query", pair="def f(): pass", source="b.jsonl", position=0
    ),
    "image_text": make_example(
        layout="image_text",
        text="a red square",
        image=png((200, 0, 0)),
        source="c.parquet",
        position=7,
    ),
}


def round_trip(tmp_path, samples):
    write_shards(samples, str(tmp_path), prefix="shard")
    return list(tar_samples([{"url": str(tmp_path / "shard-000000.tar")}]))


@pytest.mark.parametrize("layout", sorted(EXAMPLES))
def test_what_curation_encodes_decodes_to_the_same_values(tmp_path, layout):
    example = EXAMPLES[layout]
    contrastive = layout != "text"
    embeddings = np.arange(8, dtype=np.float32).reshape(2, 4) if contrastive else None
    decision = Decision(
        example=example,
        super_batch=2,
        teacher_loss=1.25,
        score=-1.25,
        order=0,
        embeddings=embeddings,
        scale=10.0 if contrastive else None,
        bias=-10.0 if contrastive else None,
        weight=1.375,
    )
    sample = encode_selected(decision, tier=1, rank=4, models={"teacher": "abcd"})
    (raw,) = round_trip(tmp_path, [sample])
    got = decode(raw, "contrastive" if contrastive else "lm")
    assert (got.key, got.text, got.pair, got.image) == (
        example.key,
        example.text,
        example.pair,
        example.image,
    )
    assert got.teacher_loss == 1.25 and got.info["score"] == -1.25 and got.weight == 1.375
    assert (got.info["tier"], got.info["rank"], got.info["super_batch"]) == (1, 4, 2)
    assert got.info["teacher"] == "abcd" and got.info["id"] == example.id
    assert (got.info["source"], got.info["position"]) == (example.source, example.position)
    assert got.tag == (example.meta or {}).get("kind")
    if contrastive:
        assert np.array_equal(got.embeddings, embeddings)
        assert (got.teacher_scale, got.teacher_bias) == (10.0, -10.0)
        assert got.right == (example.image if layout == "image_text" else example.pair)
    else:
        assert got.embeddings is None and got.teacher_scale is None


def test_a_whole_document_carries_its_teacher_window_losses(tmp_path):
    windows = (2.5, 3.0, 0.0009765625)  # float16 values: JSON keeps them exactly
    decision = Decision(
        example=EXAMPLES["text"],
        super_batch=0,
        teacher_loss=2.1,
        score=-2.1,
        order=0,
        windows=windows,
        window=256,
    )
    (raw,) = round_trip(tmp_path, [encode_selected(decision, tier=0, rank=0, models={})])
    got = decode(raw, "lm")
    assert (tuple(got.info["teacher_windows"]), got.info["teacher_window"]) == (windows, 256)
    plain = encode_selected(
        dataclasses.replace(decision, windows=None, window=None), tier=0, rank=0, models={}
    )
    assert b"teacher_window" not in plain["json"]  # a prefix-scored sample is as before


def test_decode_refuses_the_other_task_and_flags_unusable_samples(tmp_path):
    example = EXAMPLES["text"]
    (lm,) = round_trip(tmp_path / "lm", [encode(example, {"teacher_loss": 1.0})])
    with pytest.raises(JestflowError, match="holds lm samples, not contrastive"):
        decode(lm, "contrastive")
    with pytest.raises(CorruptSample, match="teacher_loss"):
        decode({**lm, "json": b"{}"}, "lm")
    with pytest.raises(CorruptSample, match="no teacher embeddings"):
        decode({**lm, "json": b'{"teacher_loss": 1, "teacher_scale": 10}'}, "lm")
    pair = encode(EXAMPLES["text_pair"], {"teacher_loss": 1.0}, np.zeros((3, 4), np.float32))
    (raw,) = round_trip(tmp_path / "pair", [pair])
    with pytest.raises(CorruptSample, match=r"embeddings \(3, 4\)"):
        decode(raw, "contrastive")
