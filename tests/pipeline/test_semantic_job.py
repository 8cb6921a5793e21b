"""Semantic dedup in the curation job (`pipeline/semantic_step.py`): planted copies of query/doc
pairs removed after scoring as `duplicate` rows with reason `semantic` and the first copy's key,
the accounting, stats.json, the same bytes with 1 and 2 workers, and the refusal for lm
teachers."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from corpora import config_for, digest, images_config, pairs_config
from helpers import write_jsonl

from jestflow.cli import main
from jestflow.pipeline.job import run_curation
from jestflow.transforms.dedup.copies import DedupConfig
from jestflow.transforms.dedup.semantic import SemanticConfig
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.formats.manifest import read_manifest, status_counts
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example, FieldMap

FIELDS = FieldMap(query="query", doc="doc", keep=("kind",))
PLANTED = 24  # copies: 12 later in the first file, 12 in the second


@pytest.fixture(scope="module")
def planted(pairs, tmp_path_factory):
    """The pairs corpus with copies planted: `a.jsonl` is the pool and a copy of every 10th row,
    `b.jsonl` a copy of 12 other rows. With `--dedup none` nothing removes them before scoring."""
    root = tmp_path_factory.mktemp("semantic")
    pool = [json.loads(line) for line in (pairs / "pool.jsonl").read_text().splitlines()]
    later = [r | {"kind": "copy"} for r in pool[::10][:12]]
    other = [r | {"kind": "copy"} for r in pool[5::10][:12]]
    write_jsonl(root / "a.jsonl", pool + later)
    write_jsonl(root / "b.jsonl", other)
    return root, pool


def semantic_config(pairs, planted, out, **changes):
    root, _ = planted
    options = {
        "inputs": (str(root / "a.jsonl"), str(root / "b.jsonl")),
        "dedup": DedupConfig(method="none"),
        "semantic": SemanticConfig(threshold=0.999, clusters=3),
    }
    return pairs_config(pairs, out, **(options | changes))


@pytest.fixture(scope="module")
def curated(pairs, planted, tmp_path_factory):
    """The planted pool curated with 1 and with 2 workers: {workers: (out, stats)}."""
    runs = {}
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"semantic-{workers}") / "out"
        config = semantic_config(pairs, planted, out, workers=workers)
        runs[workers] = (out, run_curation(config))
    return runs


def test_planted_copies_are_semantic_duplicates_of_the_first_copy(curated, planted):
    root, pool = planted
    out, _ = curated[2]
    examples = [
        e
        for e in read_examples((str(root / "a.jsonl"), str(root / "b.jsonl")), FIELDS)
        if isinstance(e, Example)
    ]
    first = {}
    for e in examples:  # input order: a.jsonl, then b.jsonl
        first.setdefault(e.id, e.key)
    rows = read_manifest(str(out / "manifest")).to_pylist()
    semantic = {r["key"]: r for r in rows if r["reason"] == "semantic"}
    copies = {e.key: first[e.id] for e in examples if first[e.id] != e.key}
    assert len(copies) == PLANTED
    assert {k: r["duplicate_of"] for k, r in semantic.items()} == copies
    assert all(r["status"] == "duplicate" and r["shard"] is None for r in semantic.values())
    assert all(r["source"].endswith(("a.jsonl", "b.jsonl")) for r in semantic.values())
    kept = {r["key"] for r in rows if r["status"] == "selected"}
    assert not kept & set(semantic)
    assert len(rows) == len({r["key"] for r in rows}) == len(pool) + PLANTED


def test_the_accounting_and_stats_count_them(curated, planted):
    _, pool = planted
    out, stats = curated[2]
    counts = status_counts(read_manifest(str(out / "manifest")))
    assert counts == stats["counts"]
    assert counts["duplicate"] == PLANTED and counts["inputs"] == len(pool) + PLANTED
    assert counts["selected"] + counts["not_selected"] == len(pool)
    dedup = stats["dedup"]
    assert dedup["semantic"] == PLANTED and dedup["duplicates"] == PLANTED
    assert dedup["semantic_dedup"]["threshold"] == 0.999
    assert dedup["semantic_dedup"]["clusters"] == 3
    assert dedup["semantic_dedup"]["sample"] == len(pool) + PLANTED
    assert dedup["semantic_dedup"]["cluster_sizes"] == {"2": PLANTED}
    reasons = Counter(r["reason"] for r in read_manifest(str(out / "manifest")).to_pylist())
    assert reasons["semantic"] == PLANTED
    assert f"{PLANTED} copies removed in {PLANTED} groups" in (out / "report.html").read_text()


def test_the_same_bytes_with_1_and_2_workers(curated):
    (one, _), (two, _) = curated[1], curated[2]
    for folder in ("shards", "manifest"):
        assert digest(one / folder) == digest(two / folder), folder
    assert any(p.name.startswith("semantic-") for p in (one / "manifest").iterdir())


def test_off_by_default_the_copies_are_scored(pairs, planted, tmp_path):
    config = semantic_config(pairs, planted, tmp_path / "out", semantic=SemanticConfig())
    stats = run_curation(config)
    assert stats["counts"]["duplicate"] == 0 and "semantic" not in stats["dedup"]


def test_lm_teachers_are_refused(noisy, tmp_path):
    args = [str(noisy / "pool.jsonl"), "-o", str(tmp_path / "out"), "--teacher"]
    args += [str(noisy / "teacher"), "--task", "lm", "--keep", "0.5", "--device", "cpu"]
    result = CliRunner().invoke(main, ["curate", *args, "--semantic-dedup", "0.95"])
    assert result.exit_code == 1, result.output
    assert "semantic dedup compares the teacher's embeddings" in result.output
    assert "contrastive" in result.output
    assert not Path(tmp_path / "out").exists()
    with pytest.raises(JestflowError, match="needs a contrastive teacher"):
        config_for(noisy, tmp_path / "x", semantic=SemanticConfig(threshold=0.9))


def test_image_text_copies_too(images, tmp_path):
    """Image–text pairs (both towers' embeddings): copies of 8 rows in a second file are removed,
    each in favour of an earlier example that is kept."""
    table = pq.read_table(images / "pool.parquet")
    pq.write_table(table.slice(0, 8), tmp_path / "copies.parquet")
    inputs = (str(images / "pool.parquet"), str(tmp_path / "copies.parquet"))
    config = dataclasses.replace(
        images_config(images, tmp_path / "out"),
        inputs=inputs,
        dedup=DedupConfig(method="none"),
        semantic=SemanticConfig(threshold=0.999),
    )
    stats = run_curation(config)
    rows = read_manifest(str(tmp_path / "out" / "manifest")).to_pylist()
    copies = [r for r in rows if r["reason"] == "semantic"]
    assert stats["dedup"]["semantic"] == len(copies)
    # every planted copy goes (the tiny towers also merge some near shades of one colour and
    # caption: semantically the same pair, what semantic dedup is for)
    assert sum(r["source"].endswith("copies.parquet") for r in copies) == 8
    kept = {r["key"]: r for r in rows if r["status"] != "duplicate"}
    order = {source: i for i, source in enumerate(sorted(inputs))}  # the run's file order

    def place(r):
        return order[r["source"]], r["position"]

    assert all(place(kept[r["duplicate_of"]]) < place(r) for r in copies)
    assert status_counts(read_manifest(str(tmp_path / "out" / "manifest"))) == stats["counts"]
