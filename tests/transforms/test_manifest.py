"""The manifest accounts for every input; dead letters keep the raw bytes and the reason."""

from __future__ import annotations

import pyarrow.parquet as pq

from jestflow.transforms.formats.manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    dead_letter,
    example_row,
    read_manifest,
    rejected_row,
    status_counts,
    write_parquet,
)
from jestflow.transforms.records import FieldMap, make_example, parse_json_line


def test_manifest_rows_round_trip_and_account_for_every_input(tmp_path):
    kept = make_example(
        layout="text", text="good", source="a.jsonl", position=0, meta={"kind": "clean"}
    )
    dropped = make_example(layout="text", text="noise", source="a.jsonl", position=1)
    bad = parse_json_line(b"{oops", FieldMap(text="text"), "a.jsonl", 2)
    rows = [
        example_row(
            kept,
            selected=True,
            teacher_loss=1.5,
            score=-1.5,
            super_batch=3,
            rank=0,
            shard="shard-000000.tar",
        ),
        example_row(dropped, selected=False, teacher_loss=6.0, score=-6.0, super_batch=3),
        rejected_row(bad),
    ]
    (tmp_path / "manifest").mkdir()
    assert (
        write_parquet(rows[:2], str(tmp_path / "manifest" / "part-0.parquet"), MANIFEST_SCHEMA) == 2
    )
    write_parquet(rows[2:], str(tmp_path / "manifest" / "part-1.parquet"), MANIFEST_SCHEMA)
    table = read_manifest(str(tmp_path / "manifest"))
    assert status_counts(table) == {
        "selected": 1,
        "not_selected": 1,
        "duplicate": 0,
        "rejected": 1,
        "inputs": 3,
    }
    first, second, third = table.to_pylist()
    assert first["shard"] == "shard-000000.tar" and first["meta"] == '{"kind": "clean"}'
    assert second["rank"] is None and second["score"] == -6.0
    assert third["reason"] == "bad_json" and third["teacher_loss"] is None
    assert sorted(p.name for p in (tmp_path / "manifest").iterdir()) == [
        "part-0.parquet",
        "part-1.parquet",
    ]


def test_dead_letters_keep_raw_bytes(tmp_path):
    bad = parse_json_line(b'{"text": "\xff"}', FieldMap(text="text"), "b.jsonl", 7)
    write_parquet([dead_letter(bad)], str(tmp_path / "rejected.parquet"), REJECTED_SCHEMA)
    (row,) = pq.read_table(tmp_path / "rejected.parquet").to_pylist()
    assert (
        row["raw"] == b'{"text": "\xff"}' and row["reason"] == "bad_utf8" and row["position"] == 7
    )
    assert row["detail"]
