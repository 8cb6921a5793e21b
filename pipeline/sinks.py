"""What the curation job writes: ranked shard groups, manifest parts, dead letters, stats.

Every file name comes from the data — shard group and tier, super-batch ids, input file
indices — never from workers or bundles, so a re-run writes the same files with the same bytes.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..transforms.curation import Decision
from ..transforms.manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    dead_letter,
    example_row,
    rejected_row,
    write_parquet,
)
from ..transforms.paths import filesystem
from ..transforms.records import Rejected
from ..transforms.shards import ShardInfo, sample_of, write_shards


@dataclass(frozen=True, kw_only=True)
class ShardLimits:
    max_count: int
    max_bytes: int


@dataclass(frozen=True, kw_only=True)
class WrittenGroup:
    group: int
    rows: list[dict[str, Any]]  # manifest rows of the group's selected examples
    shards: list[ShardInfo]


def shard_prefix(tier: int, group: int, tiers: int) -> str:
    """`shard-GGGGGG`, or `tier-TT-shard-GGGGGG` with tiers: the best slice by file name alone."""
    name = f"shard-{group:06d}"
    return name if tiers == 1 else f"tier-{tier:02d}-{name}"


def write_shard_group(
    element: tuple[tuple[int, int], Iterable[Decision]],
    output: str,
    tiers: int,
    limits: ShardLimits,
    info: Mapping[str, Any],
) -> WrittenGroup:
    """Write one (tier, group) of selected examples as shards, highest score first."""
    (tier, group), decisions = element
    ranked = sorted(decisions, key=lambda d: (-d.score, d.example.key))
    samples = (
        sample_of(
            d.example,
            {**info, "teacher_loss": d.teacher_loss, "score": d.score, "tier": tier,
             "rank": rank, "super_batch": d.super_batch},
            d.embeddings,
        )
        for rank, d in enumerate(ranked)
    )  # fmt: skip
    shards = write_shards(
        samples,
        posixpath.join(output, "shards"),
        prefix=shard_prefix(tier, group, tiers),
        max_count=limits.max_count,
        max_bytes=limits.max_bytes,
    )
    names = [shard.name for shard in shards for _ in range(shard.count)]  # in writing order
    rows = [
        example_row(d.example, selected=True, teacher_loss=d.teacher_loss, score=d.score,
                    super_batch=d.super_batch, tier=tier, shard=names[rank], rank=rank)
        for rank, d in enumerate(ranked)
    ]  # fmt: skip
    return WrittenGroup(group=group, rows=rows, shards=shards)


def unselected_rows(decisions: Iterable[Decision]) -> list[dict[str, Any]]:
    return [
        example_row(d.example, selected=False, teacher_loss=d.teacher_loss, score=d.score,
                    super_batch=d.super_batch)
        for d in decisions
        if not d.selected
    ]  # fmt: skip


def write_manifest_part(element: tuple[int, Iterable[list[dict]]], output: str) -> int:
    """All manifest rows of one shard group, in (super-batch, key) order."""
    group, parts = element
    rows = sorted((r for part in parts for r in part), key=lambda r: (r["super_batch"], r["key"]))
    url = posixpath.join(output, "manifest", f"part-{group:06d}.parquet")
    return write_parquet(rows, url, MANIFEST_SCHEMA)


def write_rejected(element: tuple[int, Iterable[Rejected]], output: str) -> int:
    """The dead letters of one input file, and their manifest rows."""
    index, records = element
    records = sorted(records, key=lambda r: (r.source, r.position))
    name = f"part-{index:06d}.parquet"
    write_parquet(
        [dead_letter(r) for r in records], posixpath.join(output, "rejected", name), REJECTED_SCHEMA
    )
    write_parquet(
        [rejected_row(r) for r in records],
        posixpath.join(output, "manifest", f"rejected-{index:06d}.parquet"),
        MANIFEST_SCHEMA,
    )
    return len(records)


def write_json(data: Mapping[str, Any], url: str) -> None:
    fs, path = filesystem(url)
    with fs.open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(url: str) -> dict[str, Any]:
    fs, path = filesystem(url)
    with fs.open(path) as f:
        return json.load(f)
