"""Spill files (the job's shuffle through files) and the rows spilled: what is read back is what
was written, partition by partition, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from jestflow.transforms.dedup.copies import Member
from jestflow.transforms.formats.score_cache import ModelOutput
from jestflow.transforms.records import make_example
from jestflow.transforms.selection.offline import Decision
from jestflow.transforms.selection.super_batches import bucket_of, key_hash
from jestflow.transforms.spill import files as spill
from jestflow.transforms.spill.dedup_rows import EDGE, MEMBER, edge_row, member_of, member_row
from jestflow.transforms.spill.files import SpillWriter, read_rows, remove_folder
from jestflow.transforms.spill.rows import (
    DECISION,
    PAYLOAD,
    SCORED,
    decision_of,
    decision_row,
    example_of,
    output_of,
    payload_row,
    scored_row,
    stub_example,
)

SCHEMA = pa.schema([("n", pa.int64()), ("text", pa.string())])


def test_partitions_read_back_in_order_across_runs(tmp_path):
    writer = SpillWriter(str(tmp_path / "spill"), "file-000003", SCHEMA, 4, max_bytes=1000)
    rows = [{"n": i, "text": "x" * (i % 7)} for i in range(300)]
    for row in rows:
        writer.add((row["n"], row["text"]), row["n"] % 4, size=20)
    urls = writer.close()
    assert [u.rsplit("/", 1)[1] for u in urls] == [f"file-000003-{r:04d}.arrow" for r in range(6)]
    for p in range(4):  # each run holds every partition; a partition's rows keep their order
        assert list(read_rows(urls, p, p + 1)) == [r for r in rows if r["n"] % 4 == p]
    assert sorted(r["n"] for r in read_rows(urls, 1, 3)) == [
        r["n"] for r in rows if r["n"] % 4 in (1, 2)
    ]
    assert len(list(read_rows(urls))) == 300
    assert list(read_rows(urls, 2, 2)) == []
    remove_folder(str(tmp_path / "spill"))
    assert not (tmp_path / "spill").exists()


def test_any_partition_range_reads_back_across_block_edges(tmp_path, monkeypatch):
    """Blocks of 7 rows cut partitions anywhere: every range [lo, hi) still reads exactly its
    rows, in order, empty partitions and ranges past the end included."""
    monkeypatch.setattr(spill, "BLOCK_ROWS", 7)
    rng = np.random.default_rng(0)
    writer = SpillWriter(str(tmp_path), "blocks", SCHEMA, 12)
    rows = [(i, str(i)) for i in range(100)]
    parts = [int(p) for p in rng.choice([0, 1, 3, 4, 5, 9, 10], size=100)]  # some left empty
    for row, part in zip(rows, parts, strict=True):
        writer.add(row, part)
    urls = writer.close()
    for lo in range(14):
        for hi in range(lo, 15):
            want = [r[0] for p in range(lo, hi) for r, q in zip(rows, parts, strict=True) if q == p]
            assert [r["n"] for r in read_rows(urls, lo, hi)] == want, (lo, hi)
    assert [r["n"] for r in read_rows(urls, 3)] == [
        r[0] for p in range(3, 12) for r, q in zip(rows, parts, strict=True) if q == p
    ]


def test_a_producer_with_nothing_writes_nothing_and_a_rewrite_is_the_same_file(tmp_path):
    assert SpillWriter(str(tmp_path), "empty", SCHEMA, 8).close() == []
    made = []
    for _ in range(2):  # a retried unit of work: same name, same bytes, no second file
        writer = SpillWriter(str(tmp_path), "unit", SCHEMA, 2)
        writer.add((1, "a"), 1)
        (url,) = writer.close()
        made.append((tmp_path / url.rsplit("/", 1)[1]).read_bytes())
    assert made[0] == made[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit-0000.arrow"]


def test_payloads_round_trip(tmp_path):
    urls = ["a.jsonl", "b.parquet"]
    examples = [
        make_example(
            layout="text",
            text="héllo\x00 wörld",
            source="b.parquet",
            position=7,
            meta={"kind": "clean", "score": 0.1 + 0.2, "tags": ["x", 1]},
        ),
        make_example(
            layout="image_text",
            text="a cat",
            image=b"\x89PNG\x00\xff",
            source="a.jsonl",
            position=0,
        ),
        make_example(layout="text_pair", text="q", pair="d" * 1000, source="a.jsonl", position=3),
    ]
    writer = SpillWriter(str(tmp_path), "p", PAYLOAD)
    for ex in examples:
        writer.add(payload_row(ex, urls.index(ex.source)))
    back = [example_of(row, urls) for row in read_rows(writer.close())]
    assert back == examples
    assert [ex.key for ex in back] == [ex.key for ex in examples]


def test_scored_rows_keep_every_bit_and_name_their_example(tmp_path):
    example = make_example(layout="text", text="t", source="a.jsonl", position=4, meta={"k": 1})
    pair = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    outputs = {
        "teacher": ModelOutput(embeddings=pair, scale=10.0, bias=-10.0),
        "student": ModelOutput(loss=float(np.float32(2.718281828)), precision="bf16"),
        "document": ModelOutput(loss=2.5, windows=(2.0, 3.0, 0.0009765625), window=64),
    }
    writer = SpillWriter(str(tmp_path), "s", SCORED)
    writer.add(scored_row(example, 0, 2**64 - 1, outputs))
    writer.add(scored_row(example, 0, 5, {"teacher": outputs["student"]}))
    writer.add(scored_row(example, 0, 6, {"teacher": outputs["document"]}))
    first, second, third = read_rows(writer.close())
    assert output_of(third, "teacher") == outputs["document"]
    assert first["hash"] == 2**64 - 1 and second["hash"] == 5
    teacher = output_of(first, "teacher")
    assert teacher.embeddings.dtype == np.float32 and np.array_equal(teacher.embeddings, pair)
    assert (teacher.scale, teacher.bias, teacher.loss) == (10.0, -10.0, None)
    assert output_of(first, "student") == outputs["student"]
    assert output_of(second, "student") is None
    stub = stub_example(first, ["a.jsonl"])
    assert (stub.id, stub.key, stub.position, dict(stub.meta)) == (
        example.id,
        example.key,
        4,
        {"k": 1},
    )


def test_decisions_and_members_round_trip(tmp_path):
    example = make_example(layout="text", text="t", source="a.jsonl", position=4)
    d = Decision(
        example=example,
        super_batch=3,
        teacher_loss=float(np.float32(1.2345)),
        score=float(np.float32(-0.5)),
        order=2,
        embeddings=np.ones((2, 3), np.float32) / 3,
        scale=1.5,
        bias=-2.0,
    )
    document = dataclasses.replace(d, embeddings=None, windows=(1.0, 2.5), window=128)
    writer = SpillWriter(str(tmp_path), "d", DECISION)
    writer.add(decision_row(d))
    writer.add(decision_row(document))
    row, other = read_rows(writer.close())
    assert decision_of(other, example) == document
    back = decision_of(row, example)
    assert (back.super_batch, back.teacher_loss, back.score, back.order) == (
        3,
        d.teacher_loss,
        d.score,
        2,
    )
    assert np.array_equal(back.embeddings, d.embeddings) and (back.scale, back.bias) == (1.5, -2.0)
    member = Member(file=2, position=9, key="k" * 32, content=-(2**63))
    writer = SpillWriter(str(tmp_path), "m", MEMBER)
    writer.add(member_row(-17, member, band=12))
    (row,) = read_rows(writer.close())
    assert (row["bucket"], row["band"], member_of(row)) == (-17, 12, member)
    other = Member(file=0, position=2**40, key="j" * 32, content=5)
    writer = SpillWriter(str(tmp_path), "e", EDGE)
    writer.add(edge_row(other, member))
    (row,) = read_rows(writer.close())
    assert list(row.values()) == [*other, *member]


def test_a_run_is_about_as_large_as_its_rows(tmp_path):
    """A run's blocks hold their own rows only: written as slices of one sorted batch, a run of
    scored rows took 2.4× the size of a batch per partition (60× in a real job: 30 GB of spills
    at 1M), and a batch per partition took 3× this (mostly its batches' metadata)."""
    writer = SpillWriter(str(tmp_path), "scored", SCORED, 1024)
    for i in range(4000):
        example = make_example(layout="text", text=f"t{i}", source="a.jsonl", position=i)
        h = key_hash(example.key, 0)
        writer.add(scored_row(example, 0, h, {"teacher": ModelOutput(loss=1.0)}), bucket_of(h))
    (url,) = writer.close()
    size = (tmp_path / url.rsplit("/", 1)[1]).stat().st_size
    assert size < 800_000  # 0.70 MB: 4,000 rows of ~150 bytes (1.89 MB with a batch per partition)
    assert len(list(read_rows([url]))) == 4000
