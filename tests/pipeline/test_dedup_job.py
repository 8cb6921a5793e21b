"""Dedup in the curation job: copies are removed before scoring, each one accounted for in the
manifest with the copy kept, the same whatever the workers, and the score cache still works;
near copies of images (resized, brighter or darker, re-encoded) too."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
from corpora import config_for, digest, images_config
from helpers import COLORS, image_copy, kept_by_budget, picture, png, sentences, write_jsonl

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


def make_image_pool(root):
    """File a: 12 distinct pictures and the four colour squares. File b: a planted copy of each
    of pictures 0–5 (resized, brighter or darker, re-encoded as JPEG; picture 5's under another
    caption) and of the red square (brighter), and two pictures that are new."""
    squares = list(COLORS.values())
    a = [row(picture(seed), f"picture {seed}", "original") for seed in range(12)]
    a += [row(png(c, size=32), f"square {i}", "original") for i, c in enumerate(squares)]
    changes = [(0.75, 1.1, 60), (1.25, 0.9, 80), (0.8, 1.0, 90), (1.2, 1.05, 70), (1.0, 0.92, 75)]
    changes.append((0.9, 1.08, 85))
    b = [
        row(image_copy(picture(s), scale=f, brightness=k, quality=q), f"picture {s}", "copy")
        for s, (f, k, q) in enumerate(changes)
    ]
    b[5]["cap"] = "the same picture under another caption"
    b.append(row(image_copy(png(squares[0], size=32), brightness=1.1, quality=90), "red", "copy"))
    b += [row(picture(seed), f"picture {seed}", "original") for seed in (20, 21)]
    paths = root / "a.parquet", root / "b.parquet"
    for path, rows in zip(paths, (a, b), strict=True):
        pq.write_table(pa.Table.from_pylist(rows), path)
    return tuple(str(p) for p in paths)


def row(image: bytes, caption: str, kind: str) -> dict:
    return {"img": {"bytes": image}, "cap": caption, "kind": kind}


def test_near_copies_of_images_are_removed_whatever_the_workers(images, tmp_path):
    a, b = make_image_pool(tmp_path)
    config = images_config(images, tmp_path / "one", inputs=(a, b), dedup=DedupConfig())
    stats = run_curation(config)
    dedup = stats["dedup"]
    assert (dedup["method"], dedup["signature"], dedup["threshold"]) == ("near", "image", 0.875)
    assert (dedup["near"], dedup["exact"], stats["counts"]["duplicate"]) == (7, 0, 7)
    rows = rows_of(tmp_path / "one")
    originals = {r["position"]: r["key"] for r in rows if r["source"] == a}
    removed = [r for r in rows if r["status"] == "duplicate"]
    assert sorted(r["position"] for r in removed) == list(range(7))  # b's copies, not its new
    for r in removed:
        assert r["source"] == b and r["reason"] == "near"
        assert r["duplicate_of"] == originals[r["position"] if r["position"] < 6 else 12]
    kept = [r for r in rows if r["status"] != "duplicate"]
    assert len(kept) == 18 and {json.loads(r["meta"])["kind"] for r in kept} == {"original"}

    two = dataclasses.replace(config, output=str(tmp_path / "two"), workers=2)
    assert run_curation(two)["counts"] == stats["counts"]
    for folder in ("manifest", "shards"):
        assert digest(tmp_path / "one" / folder) == digest(tmp_path / "two" / folder)
