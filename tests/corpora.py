"""The pipeline tests' corpora (`make_noisy`, `make_pairs`, `make_images`: the session fixtures
of tests/pipeline/conftest.py, and bench/digests.py), a tiny teacher fit, curation configs on
them, and helpers to read what a run wrote."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from helpers import COLORS, SEED, lr, png, sentences, shade, write_jsonl

from jestflow.pipeline.config import CurateConfig, RunPlan
from jestflow.pipeline.job import run_curation
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.dedup.copies import DedupConfig
from jestflow.transforms.records import FieldMap
from jestflow.transforms.selection.offline import SelectionConfig

TEXT = FieldMap(text="text", keep=("kind",), max_chars=5000)
TINY = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64}
BAD_LINES = [
    b"{broken",  # bad_json
    b'{"text": ""}',  # empty
    b'{"other": 1}',  # missing_field
    b'{"text": "caf\xe9 au lait"}',  # bad_utf8 (latin-1, not UTF-8)
    json.dumps({"text": "x" * 6000}).encode(),  # too_long
]
REASONS = ["bad_json", "bad_utf8", "empty", "missing_field", "too_long", "unreadable_file"]


def fit(
    reference,
    out,
    task,
    fields,
    steps,
    learning_rate=3e-3,
    warmup_steps=5,
    batch_size=16,
    loss=None,
):
    config = TeacherConfig(
        inputs=(reference,),
        output=str(out),
        task=task,
        fields=fields,
        steps=steps,
        batch_size=batch_size,
        lr=lr(learning_rate),
        warmup_steps=warmup_steps,
        seed=SEED,
        device="cpu",
        loss=loss,
        **TINY,
    )
    train_teacher(config)
    return str(out)


def fit_classifier(reference, pool, out, steps, learning_rate=1e-2):
    """A built-in classifier teacher of `reference` against a sample of `pool` (JSONL, `text`)."""
    config = TeacherConfig(
        inputs=(reference,),
        output=str(out),
        task="classifier",
        fields=FieldMap(text="text"),
        negatives=(pool,),
        steps=steps,
        batch_size=16,
        lr=lr(learning_rate),
        warmup_steps=5,
        seed=SEED,
        device="cpu",
    )
    return train_teacher(config)


def config_for(root, out, **changes):
    config = CurateConfig(
        inputs=(str(root / "pool.jsonl"), str(root / "cut.jsonl.gz")),
        output=str(out),
        teacher=str(root / "teacher"),
        task="lm",
        fields=TEXT,
        selection=SelectionConfig(keep=0.25, seed=1),
        super_batch=40,
        shard_max_count=6,
        device="cpu",
        workers=1,
    )
    return dataclasses.replace(config, **changes)


def pairs_config(root, out, **changes):
    """Curation of the `pairs` corpus (query/doc pairs, half mispaired) with its two-tower teacher."""
    config = CurateConfig(
        inputs=(str(root / "pool.jsonl"),),
        output=str(out),
        teacher=str(root / "teacher"),
        task="contrastive",
        fields=FieldMap(query="query", doc="doc", keep=("kind",)),
        selection=SelectionConfig(keep=0.5, seed=0, n_chunks=4),
        super_batch=32,
        device="cpu",
        workers=1,
    )
    return dataclasses.replace(config, **changes)


def images_config(root, out, **changes):
    """Curation of the `images` corpus (colour squares and captions, half mispaired), as pairs.
    Its squares are shades a few levels apart, near copies of each other by design: these runs
    deduplicate exactly unless a test says otherwise."""
    fields = FieldMap(image="img", caption="cap", keep=("kind",))
    inputs = (str(root / "pool.parquet"),)
    changes = {"inputs": inputs, "fields": fields, "dedup": DedupConfig(method="exact"), **changes}
    return pairs_config(root, out, **changes)


def plan_for(config):
    """A run plan made up without touching anything: for tests that only build the graph."""
    fingerprints = {"teacher": "0" * 16} | ({"student": "1" * 16} if config.student else {})
    record = {"models": {role: {"fingerprint": fp} for role, fp in fingerprints.items()}}
    return RunPlan(
        output=config.output,
        urls=list(config.inputs),
        fingerprints=fingerprints,
        record=record,
        started=0.0,
        lm_scoring=config.lm_scoring,
    )


def curate(root, out, **changes):
    stats = run_curation(config_for(root, out, **changes))
    return out, stats


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def samples(shard):
    return list(wds.WebDataset(str(shard), shardshuffle=False).decode())


def make_noisy(root):
    """Half clean sentences, half noise, five bad lines and a corrupt .gz; a teacher fit on clean
    text; a weaker student (fewer steps) for learnability."""
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


def make_pairs(root):
    """Query/doc pairs, half of the pool mispaired; a tiny two-tower teacher fit on clean pairs."""

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


def make_images(root):
    """Colour squares of many shades with captions naming a colour, half of the pool mispaired;
    a tiny two-tower teacher with an image tower fit on clean pairs of other shades."""
    rng = random.Random(3)

    def row(color, delta, caption=None, kind=None):
        record = {
            "img": {"bytes": png(shade(COLORS[color], delta))},
            "cap": f"a {caption or color} square",
        }
        return record | ({"kind": kind} if kind else {})

    pool = [row(c, d, kind="clean") for c in COLORS for d in range(-38, 2, 5)]
    pool += [
        row(c, d, rng.choice([o for o in COLORS if o != c]), "mispaired")
        for c in COLORS
        for d in range(-40, 0, 5)
    ]
    rng.shuffle(pool)
    pq.write_table(pa.Table.from_pylist(pool), root / "pool.parquet")
    reference = [row(c, d) for c in COLORS for d in range(-45, 10, 4)]
    rng.shuffle(reference)
    pq.write_table(pa.Table.from_pylist(reference), root / "ref.parquet")
    fields = FieldMap(image="img", caption="cap")
    fit(str(root / "ref.parquet"), root / "teacher", "contrastive", fields, 60, batch_size=8)
    return root
