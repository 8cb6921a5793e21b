"""The curation graph end to end on FnApiRunner: accounting, ranking, determinism, cleaner data."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import webdataset as wds
from helpers import sentences, write_jsonl

from jestflow.pipeline.curate import CurateConfig, run_curation
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.curation import SelectionConfig
from jestflow.transforms.manifest import read_manifest, status_counts
from jestflow.transforms.records import FieldMap

TEXT = FieldMap(text="text", keep=("kind",))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A pool of half clean sentences, half noise, three bad lines; a teacher fit on clean text."""
    root = tmp_path_factory.mktemp("noisy")
    rng = random.Random(0)
    clean = [{"text": t, "kind": "clean"} for t in sentences(120, 5)]
    noise = [
        {"text": "".join(rng.choice("qzxj#@!0") for _ in range(60)), "kind": "noise"}
        for _ in range(120)
    ]
    pool = clean + noise
    rng.shuffle(pool)
    lines = [json.dumps(r) for r in pool] + ["{broken", '{"text": ""}', '{"other": 1}']
    (root / "pool.jsonl").write_text("\n".join(lines) + "\n")
    reference = write_jsonl(root / "ref.jsonl", ({"text": t} for t in sentences(300, 6)))
    train_teacher(TeacherConfig(
        inputs=(reference,), output=str(root / "teacher"), task="lm", fields=FieldMap(text="text"),
        steps=80, batch_size=16, lr=3e-3, warmup_steps=5, d_model=32, n_layer=1, n_head=2,
        max_len=64, progress=False,
    ))  # fmt: skip
    return root


def curate(root, out, workers):
    config = CurateConfig(
        inputs=(str(root / "pool.jsonl"),), output=str(out), teacher=str(root / "teacher"),
        task="lm", fields=TEXT, selection=SelectionConfig(keep=0.25, seed=1), super_batch=40,
        shard_max_count=6, device="cpu", workers=workers,
    )  # fmt: skip
    run_curation(config)
    return out


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_curate_accounts_ranks_and_cleans(noisy, tmp_path):
    out = curate(noisy, tmp_path / "one", workers=1)
    manifest = read_manifest(str(out / "manifest"))
    counts = status_counts(manifest)
    assert counts["inputs"] == 243 and counts["rejected"] == 3
    assert counts["selected"] == 60 and counts["selected"] + counts["not_selected"] == 240
    rows = manifest.to_pylist()
    selected = [r for r in rows if r["status"] == "selected"]
    clean_kept = sum(json.loads(r["meta"])["kind"] == "clean" for r in selected) / len(selected)
    assert clean_kept > 0.9  # the input is half noise
    for shard in sorted((out / "shards").iterdir()):
        scores = [
            s["json"]["score"] for s in wds.WebDataset(str(shard), shardshuffle=False).decode()
        ]
        assert scores == sorted(scores, reverse=True) and 0 < len(scores) <= 6
    rejected = sorted(r["reason"] for r in rows if r["status"] == "rejected")
    assert rejected == ["bad_json", "empty", "missing_field"]
    assert len(list((out / "rejected").iterdir())) == 1


def test_same_bytes_with_one_or_two_workers(noisy, tmp_path):
    one = curate(noisy, tmp_path / "one", workers=1)
    two = curate(noisy, tmp_path / "two", workers=2)
    assert digest(one / "shards") == digest(two / "shards")
    ids = [
        sorted(
            r["key"]
            for r in read_manifest(str(d / "manifest")).to_pylist()
            if r["status"] == "selected"
        )
        for d in (one, two)
    ]
    assert ids[0] == ids[1]


def test_curate_command(noisy, tmp_path):
    from click.testing import CliRunner

    from jestflow.pipeline.cli import main

    args = [str(noisy / "pool.jsonl"), "-o", str(tmp_path / "out"), "--teacher", str(noisy / "teacher"),
            "--task", "lm", "--keep", "0.5", "--super-batch", "60", "--workers", "1", "--device", "cpu",
            "--keep-field", "kind"]  # fmt: skip
    result = CliRunner().invoke(main, ["curate", *args])
    assert result.exit_code == 0, result.output
    assert "selected 120 | not_selected 120 | rejected 3 | inputs 243" in result.output
    bad = CliRunner().invoke(main, ["curate", *args[:-6], "--keep", "1.5"])
    assert bad.exit_code == 1 and "keep must be in (0, 1]" in bad.output
    wrong = CliRunner().invoke(main, ["curate", *args[:5], "--task", "contrastive", "--keep", "0.5",
                                      "--query-field", "q", "--doc-field", "d"])  # fmt: skip
    assert wrong.exit_code == 1 and "is a lm model, not contrastive" in wrong.output
