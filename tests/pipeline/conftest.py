"""Corpora and tiny models shared by the pipeline tests, made once per session."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curation import BAD_LINES, fit
from helpers import COLORS, png, sentences, shade, write_jsonl

from jestflow.transforms.records import FieldMap


@pytest.fixture(scope="session")
def noisy(tmp_path_factory):
    """Half clean sentences, half noise, five bad lines and a corrupt .gz; a teacher fit on clean
    text; a weaker student (fewer steps) for learnability."""
    root = tmp_path_factory.mktemp("noisy")
    rng = random.Random(0)
    clean = [{"text": t, "kind": "clean"} for t in sentences(120, 5)]
    noise = [
        {"text": "".join(rng.choice("qzxj#@!0") for _ in range(60)), "kind": "noise"}
        for _ in range(120)
    ]
    pool = clean + noise
    rng.shuffle(pool)
    lines = [json.dumps(r).encode() for r in pool] + BAD_LINES
    (root / "pool.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (root / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 50)[:-20])
    reference = write_jsonl(root / "ref.jsonl", ({"text": t} for t in sentences(300, 6)))
    fit(reference, root / "teacher", "lm", FieldMap(text="text"), steps=80)
    fit(reference, root / "student", "lm", FieldMap(text="text"), steps=10)
    return root


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    """Query/doc pairs, half of the pool mispaired; a tiny two-tower teacher fit on clean pairs."""
    root = tmp_path_factory.mktemp("pairs")

    def pair(s):
        words = s.rstrip(".").split()[2:]
        return {"query": " ".join(words), "doc": "def f():  # " + "_".join(reversed(words))}

    good = [{**pair(s), "kind": "clean"} for s in sentences(64, 7)]
    docs = [pair(s)["doc"] for s in sentences(64, 8)]
    bad = [
        {**pair(s), "doc": d, "kind": "mispaired"}
        for s, d in zip(sentences(64, 9), docs, strict=True)
    ]
    pool = good + bad
    random.Random(1).shuffle(pool)
    write_jsonl(root / "pool.jsonl", pool)
    reference = write_jsonl(root / "ref.jsonl", (pair(s) for s in sentences(400, 10)))
    fields = FieldMap(query="query", doc="doc")
    fit(reference, root / "teacher", "contrastive", fields, 600, 5e-3, 20)  # test_fit's recipe
    return root


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Colour squares of many shades with captions naming a colour, half of the pool mispaired;
    a tiny two-tower teacher with an image tower fit on clean pairs of other shades."""
    root = tmp_path_factory.mktemp("images")
    rng = random.Random(3)

    def row(color, delta, caption=None, kind=None):
        record = {"img": {"bytes": png(shade(COLORS[color], delta))},
                  "cap": f"a {caption or color} square"}  # fmt: skip
        return record | ({"kind": kind} if kind else {})

    pool = [row(c, d, kind="clean") for c in COLORS for d in range(-38, 2, 5)]
    pool += [row(c, d, rng.choice([o for o in COLORS if o != c]), "mispaired")
             for c in COLORS for d in range(-40, 0, 5)]  # fmt: skip
    rng.shuffle(pool)
    pq.write_table(pa.Table.from_pylist(pool), root / "pool.parquet")
    reference = [row(c, d) for c in COLORS for d in range(-45, 10, 4)]
    rng.shuffle(reference)
    pq.write_table(pa.Table.from_pylist(reference), root / "ref.parquet")
    fields = FieldMap(image="img", caption="cap")
    fit(str(root / "ref.parquet"), root / "teacher", "contrastive", fields, 60, batch_size=8)
    return root
