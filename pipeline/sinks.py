"""What the curation job writes: ranked shard groups, manifest parts, dead letters, stats.

Every file name comes from the data — shard group and tier, super-batch ids, input file
indices — never from workers or bundles, so a re-run writes the same files with the same bytes:
`shards/[tier-TT-]shard-GGGGGG-NNNNNN.tar`, `manifest/selected-GGGGGG.parquet` (a shard
group's selected examples), `manifest/not-selected-SSSSSS.parquet` (a super-batch's others),
`manifest/rejected-FFFFFF.parquet` and `rejected/part-FFFFFF.parquet` (an input file's dead
letters).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..transforms.manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    dead_letter,
    example_row,
    rejected_row,
    write_parquet,
)
from ..transforms.memory import releasing
from ..transforms.offline_selection import Decision
from ..transforms.paths import child
from ..transforms.records import Rejected
from ..transforms.shard_samples import encode_selected
from ..transforms.shards import ShardInfo, write_shards
from ..transforms.stats import grid, tier_of


@dataclass(frozen=True, kw_only=True)
class ShardLimits:
    max_count: int
    max_bytes: int


@dataclass(frozen=True, kw_only=True)
class WrittenGroup:
    group: int
    shards: list[ShardInfo]


def shard_prefix(tier: int, group: int, tiers: int) -> str:
    """`shard-GGGGGG`, or `tier-TT-shard-GGGGGG` with tiers: the best slice by file name alone."""
    name = f"shard-{group:06d}"
    return name if tiers == 1 else f"tier-{tier:02d}-{name}"


@releasing
def write_shard_group(
    element: tuple[int, Iterable[Decision]],
    thresholds: Sequence[int | None],
    *,
    output: str,
    tiers: int,
    quantum: float,
    limits: ShardLimits,
    info: Mapping[str, Any],
) -> WrittenGroup:
    """Write one shard group's selected examples, tier by tier, highest score first, and their
    manifest part."""
    group, decisions = element
    by_tier: dict[int, list[Decision]] = {}
    for d in decisions:
        by_tier.setdefault(tier_of(grid(d.score, quantum), thresholds), []).append(d)
    shards, rows = [], []
    for tier in sorted(by_tier):
        ranked = sorted(by_tier[tier], key=lambda d: (-d.score, d.example.key))
        samples = (
            encode_selected(d, tier=tier, rank=rank, models=info) for rank, d in enumerate(ranked)
        )
        written = write_shards(
            samples,
            child(output, "shards"),
            prefix=shard_prefix(tier, group, tiers),
            max_count=limits.max_count,
            max_bytes=limits.max_bytes,
        )
        names = [shard.name for shard in written for _ in range(shard.count)]  # writing order
        rows += [
            example_row(d.example, selected=True, teacher_loss=d.teacher_loss, score=d.score,
                        super_batch=d.super_batch, tier=tier, shard=names[rank], rank=rank)
            for rank, d in enumerate(ranked)
        ]  # fmt: skip
        shards += written
    write_manifest_part(rows, output, f"selected-{group:06d}")
    return WrittenGroup(group=group, shards=shards)


def write_not_selected(decisions: Iterable[Decision], output: str) -> int:
    """The manifest part of one super-batch's examples that were scored but not kept."""
    rows = [
        example_row(d.example, selected=False, teacher_loss=d.teacher_loss, score=d.score,
                    super_batch=d.super_batch)
        for d in decisions
        if not d.selected
    ]  # fmt: skip
    if not rows:
        return 0
    return write_manifest_part(rows, output, f"not-selected-{rows[0]['super_batch']:06d}")


def write_manifest_part(rows: list[dict[str, Any]], output: str, name: str) -> int:
    rows = sorted(rows, key=lambda r: (r["super_batch"], r["key"]))
    return write_parquet(rows, child(output, "manifest", f"{name}.parquet"), MANIFEST_SCHEMA)


def write_rejected(element: tuple[int, Iterable[Rejected]], output: str) -> int:
    """The dead letters of one input file, and their manifest rows."""
    index, records = element
    records = sorted(records, key=lambda r: (r.source, r.position))
    name = f"part-{index:06d}.parquet"
    write_parquet(
        [dead_letter(r) for r in records], child(output, "rejected", name), REJECTED_SCHEMA
    )
    return write_manifest_part([rejected_row(r) for r in records], output, f"rejected-{index:06d}")
