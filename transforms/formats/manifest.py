"""The manifest (one row for every input example) and the dead-letter records, as Parquet.

Manifest rows account for every input: a selected example has its shard and rank, an example
that was scored but not kept has its score, a copy removed by dedup names the copy kept in its
place, and a rejected record has the reason. Hence
inputs = selected + not selected + duplicate + rejected, checkable from the manifest alone.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..paths import filesystem, replacing, writable_directory
from ..records import Example, Rejected
from .parquet import read_parquet

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # content hash; duplicates share it
        ("key", pa.string()),  # unique per occurrence: the shard sample's __key__
        ("source", pa.string()),
        ("position", pa.int64()),
        ("status", pa.string()),  # selected | not_selected | duplicate | rejected
        ("teacher_loss", pa.float64()),
        ("score", pa.float64()),
        ("super_batch", pa.int64()),
        ("tier", pa.int64()),  # score tier of a selected example (0 = best; 0 without --tiers)
        ("shard", pa.string()),  # the shard file (name under shards/) of a selected example
        ("rank", pa.int64()),  # its place among its shard group's examples of its tier (0 = best);
        # the files -000000.tar, -000001.tar, … of a group and tier hold ranks 0…, in order
        ("reason", pa.string()),  # why a record was rejected; a duplicate's kind (exact, near)
        ("duplicate_of", pa.string()),  # a duplicate's kept copy (its key)
        ("meta", pa.string()),  # kept fields, as JSON
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("position", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.binary()),
    ]
)
STATUSES = ("selected", "not_selected", "duplicate", "rejected")


def example_row(
    example: Example,
    *,
    selected: bool,
    teacher_loss: float | None,
    score: float | None,
    super_batch: int | None,
    tier: int | None = None,
    shard: str | None = None,
    rank: int | None = None,
) -> dict[str, Any]:
    """The manifest row of a scored example."""
    return {
        "id": example.id,
        "key": example.key,
        "source": example.source,
        "position": example.position,
        "status": "selected" if selected else "not_selected",
        "teacher_loss": teacher_loss,
        "score": score,
        "super_batch": super_batch,
        "tier": tier,
        "shard": shard,
        "rank": rank,
        "reason": None,
        "duplicate_of": None,
        "meta": json.dumps(dict(example.meta), sort_keys=True) if example.meta else None,
    }


def duplicate_row(example: Example, *, kept: str, kind: str) -> dict[str, Any]:
    """The manifest row of a copy removed by dedup: `kept` is the key of the copy kept."""
    row = example_row(example, selected=False, teacher_loss=None, score=None, super_batch=None)
    return row | {"status": "duplicate", "reason": kind, "duplicate_of": kept}


def rejected_row(record: Rejected) -> dict[str, Any]:
    """The manifest row of a rejected record."""
    return {
        **dict.fromkeys(MANIFEST_SCHEMA.names),
        "id": record.id,
        "source": record.source,
        "position": record.position,
        "status": "rejected",
        "reason": record.reason,
    }


def dead_letter(record: Rejected) -> dict[str, Any]:
    """The `rejected/` record: the raw input and why it was rejected."""
    return {
        "id": record.id,
        "source": record.source,
        "position": record.position,
        "reason": record.reason,
        "detail": record.detail,
        "raw": record.raw,
    }


def write_parquet(rows: Iterable[Mapping[str, Any]], url: str, schema: pa.Schema) -> int:
    """Write rows to one Parquet file (temporary name, then rename); returns the row count."""
    fs, path = filesystem(url)
    writable_directory(posixpath.dirname(url) or ".")
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
    with replacing(fs, path) as f:
        pq.write_table(table, f)
    return table.num_rows


def read_manifest(url: str) -> pa.Table:
    """A manifest file, or a folder of manifest parts, as one table."""
    fs, path = filesystem(url)
    files = (
        sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
        if fs.isdir(path)
        else [path]
    )
    tables = []
    for file in files:
        with fs.open(file, "rb") as f:
            tables.append(read_parquet(f, schema=MANIFEST_SCHEMA))
    return pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()


def status_counts(manifest: pa.Table) -> dict[str, int]:
    """{selected, not_selected, duplicate, rejected, inputs} counted from a manifest."""
    statuses = manifest.column("status").to_pylist()
    counts = {status: statuses.count(status) for status in STATUSES}
    return {**counts, "inputs": manifest.num_rows}
