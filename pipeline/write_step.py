"""The write step: a shard group's selected examples, read back from the spills, as ranked
WebDataset shards (`shards/[tier-TT-]shard-GGGGGG-NNNNNN.tar`) and its manifest part
(`manifest/selected-GGGGGG.parquet`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from ..transforms.formats.manifest import example_row
from ..transforms.formats.shard_samples import encode_selected
from ..transforms.formats.shards import ShardInfo, write_shards
from ..transforms.memory import releasing
from ..transforms.paths import child
from ..transforms.selection.offline import Decision
from ..transforms.selection.stats import grid, tier_of
from ..transforms.spill.files import read_rows, read_spill
from ..transforms.spill.rows import decision_of, example_of
from .counters import count
from .select_step import SelectedGroup
from .sinks import write_manifest_part

if TYPE_CHECKING:
    from .config import CurateConfig, RunPlan

log = logging.getLogger(__name__)


@releasing
def selected_decisions(
    group: SelectedGroup, payloads: Sequence[str], urls: list[str]
) -> tuple[int, list[Decision]]:
    """(shard group, its selected decisions with their examples' payloads)."""
    rows = list(read_rows(group.decisions))
    if not rows:
        return group.span.group, []
    wanted = pa.array(sorted(row["key"] for row in rows))
    examples = {}
    for batch in read_spill(payloads, group.span.lo, group.span.hi):
        for row in batch.filter(pc.is_in(batch.column("key"), value_set=wanted)).to_pylist():
            examples[row["key"]] = example_of(row, urls)
    return group.span.group, [decision_of(row, examples[row["key"]]) for row in rows]


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
            example_row(
                d.example,
                selected=True,
                teacher_loss=d.teacher_loss,
                score=d.score,
                super_batch=d.super_batch,
                tier=tier,
                shard=names[rank],
                rank=rank,
            )
            for rank, d in enumerate(ranked)
        ]
        shards += written
    write_manifest_part(rows, output, f"selected-{group:06d}")
    return WrittenGroup(group=group, shards=shards)


class WriteShards(beam.PTransform):
    """SelectedGroup → the group's shards and manifest part, from its decisions and the payloads
    read back. Returns every shard written (name, count, bytes)."""

    def __init__(self, config: CurateConfig, plan: RunPlan, thresholds, payloads) -> None:
        super().__init__()
        self.config, self.plan = config, plan
        self.thresholds, self.payloads = thresholds, payloads

    def expand(self, selected):
        config = self.config
        write = functools.partial(
            write_shard_group,
            output=config.output,
            tiers=config.tiers,
            quantum=config.selection.quantum,
            limits=ShardLimits(max_count=config.shard_max_count, max_bytes=config.shard_max_bytes),
            info=self.plan.shard_info,
        )
        payloads = self.payloads | "All payload files" >> beam.combiners.ToList()
        # Tiers need the global score counts before any shard is written; without tiers, shard
        # groups are written as soon as they are selected.
        tiering = beam.pvalue.AsSingleton(self.thresholds) if config.tiers > 1 else []
        return (
            selected
            | "Read selected"
            >> beam.Map(selected_decisions, beam.pvalue.AsSingleton(payloads), self.plan.urls)
            | "Write shards" >> beam.Map(write, tiering)
            | "Shard files" >> beam.FlatMap(shard_files)
        )


def shard_files(group: WrittenGroup) -> list[dict[str, Any]]:
    count("written", sum(shard.count for shard in group.shards))
    for shard in group.shards:
        log.info("wrote shards/%s: %d samples", shard.name, shard.count)
    return [dataclasses.asdict(shard) for shard in group.shards]
