"""Corpora and tiny models shared by the pipeline tests, made once per session."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from curation import BAD_LINES, fit
from helpers import sentences, write_jsonl

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
    fit(reference, root / "teacher", "contrastive", FieldMap(query="query", doc="doc"), steps=600)
    return root
