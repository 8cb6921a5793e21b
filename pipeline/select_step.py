"""The select step, a shard group at a time, from the spill files: the shard groups from the
pool's bucket counts; a group's range of the hash space → the scored records of the buckets that
overlap it → its super-batches in (hash, key) order → each selected (`select_super_batch`) → the not-selected
manifest part of each super-batch, and the group's decisions spilled (the write step,
`write_step.py`, reads them back with the selected payloads); the score counts and tiers.

A group holds `super_batches_per_group` super-batches, so memory follows the group, not the pool.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apache_beam as beam

from ..transforms.memory import releasing
from ..transforms.paths import child
from ..transforms.selection.offline import Decision, SelectionConfig, select_super_batch
from ..transforms.selection.stats import SCORED, grid, tier_thresholds
from ..transforms.selection.super_batches import GroupRange, group_ranges, ranked
from ..transforms.spill.files import SpillWriter, read_rows
from ..transforms.spill.rows import (
    DECISION,
    decision_row,
    ensemble_of,
    output_of,
    stub_example,
)
from .counters import count, sum_counters
from .handlers import scored_batch
from .semantic_step import SemanticCopies, removed_keys, without_copies
from .sinks import write_not_selected

if TYPE_CHECKING:
    from .config import CurateConfig, RunPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SelectedGroup:
    """What selecting one shard group left behind."""

    span: GroupRange
    decisions: list[str]  # the selected examples' decisions, spilled
    scores: dict[str, Counter[int]]  # quantised scores, selected and not (for tiers, histograms)


@releasing
def select_group(
    span: GroupRange,
    scored: Sequence[tuple[str, int, int]],
    semantic: SemanticCopies,
    *,
    task: str,
    urls: list[str],
    selection: SelectionConfig,
    temporary: str,
    output: str,
) -> SelectedGroup:
    """Select every super-batch of one shard group, from the scored spill files (URL, first and
    end bucket) that hold rows of its buckets, less the semantic copies among them."""
    wanted = sorted(url for url, lo, hi in scored if lo < span.hi and span.lo < hi)
    copies = removed_keys(semantic, span.lo, span.hi)
    rows = (row for row in read_rows(wanted, span.lo, span.hi) if row["key"] not in copies)
    out = SpillWriter(child(temporary, "decisions"), f"group-{span.group:06d}", DECISION)
    scores = {status: Counter() for status in SCORED}
    for super_batch, members in sorted(ranked(rows, span).items()):
        decisions = select_batch(super_batch, members, task=task, urls=urls, config=selection)
        write_not_selected(decisions, output)
        for d in decisions:
            scores[SCORED[not d.selected]][grid(d.score, selection.quantum)] += 1
            if d.selected:
                out.add(decision_row(d))
    return SelectedGroup(span=span, decisions=out.close(), scores=scores)


def select_batch(
    super_batch: int, rows: list[dict], *, task: str, urls: list[str], config: SelectionConfig
) -> list[Decision]:
    """One super-batch's decisions from its members' scored records."""
    start = time.perf_counter()
    examples = [stub_example(row, urls) for row in rows]
    batches = {}
    for role in ("teacher", "student"):
        outputs = [output_of(row, role) for row in rows]
        if outputs and outputs[0] is not None:
            ensemble = ensemble_of(rows) if role == "teacher" else None
            batches[role] = scored_batch(
                super_batch, examples, outputs, task=task, loss=config.pair_loss, ensemble=ensemble
            )
    decisions = select_super_batch(batches["teacher"], config, batches.get("student"))
    kept = sum(d.selected for d in decisions)
    count("scored", len(decisions))
    count("selected", kept)
    log.info(
        "super-batch %d: %d selected of %d in %.2f s",
        super_batch,
        kept,
        len(decisions),
        time.perf_counter() - start,
    )
    return decisions


class Select(beam.PTransform):
    """ScoredChunk → SelectedGroup: the pool's shard groups from the bucket counts, each selected
    from the scored spill files; `semantic` (a one-element PCollection of `SemanticCopies`) names
    the copies left out."""

    def __init__(self, config: CurateConfig, plan: RunPlan, semantic) -> None:
        super().__init__()
        self.config, self.plan, self.semantic = config, plan, semantic

    def expand(self, chunks):
        config, plan = self.config, self.plan
        counts = (
            chunks
            | "Bucket counts" >> beam.Map(lambda c: c.buckets)
            | "Sum bucket counts" >> beam.CombineGlobally(sum_counters)
            | "Less semantic copies"
            >> beam.Map(without_copies, beam.pvalue.AsSingleton(self.semantic))
        )
        scored = (
            chunks
            | "Scored files" >> beam.FlatMap(lambda c: c.files())
            | "All scored files" >> beam.combiners.ToList()
        )
        select = functools.partial(
            select_group,
            task=config.task,
            urls=plan.urls,
            selection=config.selection,
            temporary=plan.temporary,
            output=config.output,
        )
        return (
            counts
            | "Shard groups" >> beam.FlatMap(spans_of, config)
            | "Spread groups" >> beam.Reshuffle()
            | "Select groups"
            >> beam.Map(
                select,
                beam.pvalue.AsSingleton(scored),
                beam.pvalue.AsSingleton(self.semantic),
            )
        )


def spans_of(counts: Counter[int], config: CurateConfig):
    """The pool's shard groups, from its examples per bucket."""
    per_group = config.super_batches_per_group
    return group_ranges(counts, size=config.super_batch, per_group=per_group)


class CountScores(beam.CombineFn):
    """Exact counts of quantised scores, selected and not: for tiers and histograms."""

    def create_accumulator(self):
        return {status: Counter() for status in SCORED}

    def add_input(self, accumulator, group):
        for status in SCORED:
            accumulator[status].update(group.scores[status])
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for status in SCORED:
                merged[status].update(accumulator[status])
        return merged

    def extract_output(self, accumulator):
        return accumulator


def tiers_of(counts: dict[str, Counter[int]], tiers: int) -> list[int | None]:
    """The tier thresholds of the selected examples' score counts."""
    return tier_thresholds(counts["selected"], tiers)
