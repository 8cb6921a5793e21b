"""Dedup in the curation job: copies are removed before scoring, each one accounted for in the
manifest with the copy kept, the same whatever the workers, and the score cache still works."""

from __future__ import annotations

import dataclasses
import json

from corpora import config_for, digest
from helpers import kept_by_budget, sentences, write_jsonl

from jestflow.pipeline.job import run_curation
from jestflow.transforms.dedup.copies import DedupConfig
from jestflow.transforms.formats.manifest import read_manifest

PARAGRAPHS = [" ".join(sentences(6, seed)) for seed in range(60)]


def near_copy(text: str) -> str:
    """The same text with case, whitespace, punctuation and a word changed (Jaccard ≥ 0.89)."""
    words = text.upper().replace(".", " !").split()
    words[3] = "ALTERED"
    return "  ".join(words)


def make_pool(root):
    """File a: 60 distinct paragraphs. File b: 5 exact copies (other whitespace), 5 near copies,
    and 3 copies of one copy (a cluster of five with its original)."""
    a = [{"text": t, "kind": "original"} for t in PARAGRAPHS]
    b = [{"text": "\n" + t.replace(" ", "   ") + " ", "kind": "exact"} for t in PARAGRAPHS[:5]]
    b += [{"text": near_copy(t), "kind": "near"} for t in PARAGRAPHS[5:10]]
    b += [{"text": near_copy(PARAGRAPHS[0]), "kind": "chain"} for _ in range(3)]
    return write_jsonl(root / "a.jsonl", a), write_jsonl(root / "b.jsonl", b)


def rows_of(out):
    return read_manifest(str(out / "manifest")).to_pylist()


def test_copies_are_removed_before_scoring_and_point_at_the_first(noisy, tmp_path):
    b, a = make_pool(tmp_path)[::-1]  # given in any order: inputs are sorted
    config = config_for(
        noisy, tmp_path / "one", inputs=(b, a), super_batch=20, cache=str(tmp_path / "cache")
    )
    stats = run_curation(config)
    counts = stats["counts"]
    kept = kept_by_budget(tmp_path / "one", 0.25)  # 3 super-batches of about 20
    assert 15 <= kept <= 17
    assert counts == {
        "selected": kept,
        "not_selected": 60 - kept,
        "duplicate": 13,
        "rejected": 0,
        "inputs": 73,
    }
    assert stats["scoring"]["teacher"] == {"scored": 60, "cached": 0}  # copies are not scored
    dedup = stats["dedup"]
    assert (dedup["method"], dedup["exact"], dedup["near"]) == ("near", 5, 8)
    assert dedup["clusters"] == 10 and dedup["cluster_sizes"] == {"2": 9, "5": 1}

    rows = rows_of(tmp_path / "one")
    by_key = {r["key"]: r for r in rows}
    originals = {r["position"]: r for r in rows if r["source"] == a}
    for row in (r for r in rows if r["status"] == "duplicate"):
        assert row["source"] == b and row["teacher_loss"] is None and row["super_batch"] is None
        position = row["position"]  # b: 0–4 exact, 5–9 near, 10–12 near copies of paragraph 0
        assert by_key[row["duplicate_of"]] == originals[position if position < 10 else 0]
        assert row["reason"] == ("exact" if position < 5 else "near")
    assert sum(r["status"] == "duplicate" for r in rows) == 13
    assert {json.loads(r["meta"])["kind"] for r in rows if r["status"] != "duplicate"} == {
        "original"
    }
    assert (tmp_path / "one" / "manifest" / "duplicate-000001.parquet").exists()  # b is file 1

    # More workers, the same copies and outputs; a re-run scores nothing afresh.
    two = dataclasses.replace(config, output=str(tmp_path / "two"), workers=2)
    again = run_curation(two)
    assert again["scoring"]["teacher"] == {"scored": 0, "cached": 60}
    for folder in ("manifest", "shards"):
        assert digest(tmp_path / "one" / folder) == digest(tmp_path / "two" / folder)


def test_dedup_none_and_exact(noisy, tmp_path):
    inputs = make_pool(tmp_path)
    none = run_curation(
        config_for(noisy, tmp_path / "none", inputs=inputs, dedup=DedupConfig(method="none"))
    )
    assert none["counts"]["duplicate"] == 0 and none["counts"]["inputs"] == 73
    assert none["dedup"]["method"] == "none"
    exact = run_curation(
        config_for(noisy, tmp_path / "exact", inputs=inputs, dedup=DedupConfig(method="exact"))
    )
    # The 5 exact copies, and 2 of the 3 identical near copies of paragraph 0.
    assert exact["counts"]["duplicate"] == exact["dedup"]["exact"] == 7
    assert exact["counts"]["selected"] + exact["counts"]["not_selected"] == 66
