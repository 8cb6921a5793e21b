"""Curation runs for the pipeline tests: a tiny teacher fit, a curation config on the `noisy`
corpus (tests/pipeline/conftest.py), and helpers to read what a run wrote."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import webdataset as wds
from helpers import SEED, lr

from jestflow.pipeline.curate import CurateConfig, run_curation
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.curation import SelectionConfig
from jestflow.transforms.records import FieldMap

TEXT = FieldMap(text="text", keep=("kind",), max_chars=5000)
TINY = {"d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 64, "progress": False}
BAD_LINES = [
    b"{broken",  # bad_json
    b'{"text": ""}',  # empty
    b'{"other": 1}',  # missing_field
    b'{"text": "caf\xe9 au lait"}',  # bad_utf8 (latin-1, not UTF-8)
    json.dumps({"text": "x" * 6000}).encode(),  # too_long
]
REASONS = ["bad_json", "bad_utf8", "empty", "missing_field", "too_long", "unreadable_file"]


def fit(reference, out, task, fields, steps, learning_rate=3e-3, warmup_steps=5, batch_size=16):
    config = TeacherConfig(inputs=(reference,), output=str(out), task=task, fields=fields,
                           steps=steps, batch_size=batch_size, lr=lr(learning_rate),
                           warmup_steps=warmup_steps, seed=SEED, device="cpu", **TINY)  # fmt: skip
    train_teacher(config)
    return str(out)


def config_for(root, out, **changes):
    config = CurateConfig(
        inputs=(str(root / "pool.jsonl"), str(root / "cut.jsonl.gz")), output=str(out),
        teacher=str(root / "teacher"), task="lm", fields=TEXT,
        selection=SelectionConfig(keep=0.25, seed=1), super_batch=40, shard_max_count=6,
        device="cpu", workers=1,
    )  # fmt: skip
    return dataclasses.replace(config, **changes)


def pairs_config(root, out, **changes):
    """Curation of the `pairs` corpus (query/doc pairs, half mispaired) with its two-tower teacher."""
    config = CurateConfig(
        inputs=(str(root / "pool.jsonl"),), output=str(out), teacher=str(root / "teacher"),
        task="contrastive", fields=FieldMap(query="query", doc="doc", keep=("kind",)),
        selection=SelectionConfig(keep=0.5, seed=0, n_chunks=4), super_batch=32, device="cpu",
        workers=1,
    )  # fmt: skip
    return dataclasses.replace(config, **changes)


def images_config(root, out, **changes):
    """Curation of the `images` corpus (colour squares and captions, half mispaired), as pairs."""
    fields = FieldMap(image="img", caption="cap", keep=("kind",))
    return pairs_config(root, out, inputs=(str(root / "pool.parquet"),), fields=fields, **changes)


def curate(root, out, **changes):
    stats = run_curation(config_for(root, out, **changes))
    return out, stats


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def samples(shard):
    return list(wds.WebDataset(str(shard), shardshuffle=False).decode())
