"""What the dedup step spills (`files.py`), a schema and its row ↔ value functions each:

- MEMBER: an example in one of its dedup buckets (the read step writes these, by coarse group);
- NEED: a near candidate whose MinHash signature a coarse group needs, by input file;
- SIGNATURE: that signature, computed once from the file's payloads, by coarse group;
- EDGE: a copy linked to an earlier member (an exact copy, or a near copy whose signature agrees);
- REMOVED: a removed copy with the copy kept in its place and why, by input file;
- SEMANTIC_MEMBER: a scored example with its semantic dedup vector, by k-means cluster;
- SEMANTIC_REMOVED: a semantic copy's key, by super-batch bucket (the select step leaves it out).

Rows are written as tuples in their schema's order and read back as dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..dedup.copies import Member

_MEMBER_FIELDS = [
    ("file", pa.int32()),  # the input file's index in the run's sorted inputs
    ("position", pa.int64()),
    ("key", pa.string()),
    ("content", pa.int64()),  # the exactly normalised content's hash
]

MEMBER = pa.schema(
    [
        ("bucket", pa.int64()),  # the dedup bucket: content hash or LSH band key
        ("band", pa.int16()),  # the LSH band of the bucket (0 for a content hash)
        *_MEMBER_FIELDS,
    ]
)
NEED = pa.schema([("key", pa.string()), ("group", pa.int32())])
SIGNATURE = pa.schema([("key", pa.string()), ("signature", pa.binary())])
MEMBER_COLUMNS = tuple(name for name, _ in _MEMBER_FIELDS)  # a member's columns, in an edge too
EDGE = pa.schema(
    [(f"{side}_{name}", kind) for side in ("kept", "copy") for name, kind in _MEMBER_FIELDS]
)
REMOVED = pa.schema([("key", pa.string()), ("kept", pa.string()), ("kind", pa.string())])
SEMANTIC_MEMBER = pa.schema(
    [
        ("cluster", pa.int32()),  # its nearest k-means centroid (also the partition)
        ("file", pa.int32()),
        ("position", pa.int64()),
        ("key", pa.string()),
        ("hash", pa.uint64()),  # key_hash: its super-batch bucket
        ("id", pa.string()),
        ("occurrence", pa.int32()),
        ("meta", pa.large_string()),  # kept fields, as JSON: its manifest row carries them
        ("vector", pa.list_(pa.float32())),  # `semantic.vectors`
    ]
)
SEMANTIC_REMOVED = pa.schema([("key", pa.string())])


def member_row(bucket: int, member: Member, band: int = 0) -> tuple:
    return (bucket, band, *member)


def member_of(row: Mapping[str, Any]) -> Member:
    return Member(row["file"], row["position"], row["key"], row["content"])


def edge_row(kept: Member, copy: Member) -> tuple:
    """An edge of the copy graph: `copy` links to the earlier member `kept`."""
    return (*kept, *copy)
