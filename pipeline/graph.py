"""The curation job's Beam graph, built from named steps: read → dedup → (cache) → group →
score → select → write, then the finish step.

Building the graph has no side effects: everything that touches the world (listing inputs,
fingerprinting models, preparing the output folder) is `job.prepare_run`, whose `RunPlan` the
graph reads. Every file name a step writes comes from the data (shard groups, tiers, super-batch
ids, input file indices), never from workers or bundles, so re-runs and retried bundles write the
same files with the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from ..transforms.offline_selection import Decision, select_super_batch
from ..transforms.readers import read_file
from ..transforms.records import Rejected
from ..transforms.stats import SCORED, grid, tier_thresholds
from .counters import count
from .dedup import Deduplicate
from .finish import Finish
from .grouping import AssignSuperBatches
from .handlers import Scored, ScoringHandler
from .score_cache import AttachCached, write_fresh
from .sinks import (
    ShardLimits,
    WrittenGroup,
    write_manifest_part,
    write_not_selected,
    write_rejected,
    write_shard_group,
)

if TYPE_CHECKING:
    from .job import CurateConfig, RunPlan

log = logging.getLogger(__name__)


def build(p: beam.Pipeline, config: CurateConfig, plan: RunPlan) -> None:
    """The job's graph on `p`, for the run `plan` prepared."""
    parsed, rejected = p | "Read" >> Read(plan.urls, config)
    rejected_written, reasons = rejected | "Rejected" >> WriteRejected(config.output)
    examples, duplicates, dedup = parsed | "Deduplicate" >> Deduplicate(
        config.dedup, config.dedup_method, plan.urls
    )
    duplicates_written = duplicates | "Duplicates" >> WriteDuplicates(config.output)
    scored = (
        examples
        | "Look up cache" >> AttachCached(config.cache, plan.cache_keys)
        | "Super-batches" >> AssignSuperBatches(config.super_batch, seed=config.selection.seed)
        | "Score" >> score_step(config)
    )
    written = [rejected_written, duplicates_written]
    if config.cache is not None:
        written.append(
            scored | "Write cache" >> beam.Map(write_fresh, config.cache, plan.cache_keys)
        )
    decisions = scored | "Select" >> beam.Map(select, config)
    written.append(decisions | "Write not selected" >> beam.Map(write_not_selected, config.output))
    scores = decisions | "Count scores" >> beam.CombineGlobally(
        CountScores(config.selection.quantum)
    )
    thresholds = scores | "Tiers" >> beam.Map(tiers_of, config.tiers)
    shards = decisions | "Write shards" >> WriteShards(config, plan, thresholds)
    scoring = (
        scored
        | "Scoring counts" >> beam.Map(scoring_counts)
        | "Sum scoring counts" >> beam.CombineGlobally(sum_counters)
    )
    files_written = (
        written
        | "All other files" >> beam.Flatten()
        | "Count other files" >> beam.combiners.Count.Globally()
    )
    _ = p | "Write stats, run.json, _SUCCESS" >> Finish(
        config, plan, scores=scores, thresholds=thresholds, reasons=reasons, dedup=dedup,
        shards=shards, scoring=scoring, files_written=files_written,
    )  # fmt: skip


class Read(beam.PTransform):
    """Input files → parsed examples (main output) and `rejected`: (file index, Rejected)."""

    def __init__(self, urls: list[str], config: CurateConfig) -> None:
        super().__init__()
        self.urls, self.config = urls, config

    def expand(self, p):
        return (
            p
            | "Inputs" >> beam.Create(list(enumerate(self.urls)), reshuffle=True)
            | "Read" >> beam.FlatMap(read, self.config).with_outputs("rejected", main="parsed")
        )


def read(element: tuple[int, str], config: CurateConfig):
    index, url = element
    counts: Counter[str] = Counter()
    for record in read_file(url, config.fields):
        if isinstance(record, Rejected):
            counts[f"rejected.{record.reason}"] += 1
            yield beam.pvalue.TaggedOutput("rejected", (index, record))
        else:
            counts["parsed"] += 1
            yield record
    counts["rejected"] = sum(n for name, n in counts.items() if name.startswith("rejected."))
    counts["read"] = counts["parsed"] + counts["rejected"]
    for name, n in counts.items():  # once per file: a counter update per record costs
        count(name, n)
    log.info("read %s: %d records, %d rejected", url, counts["read"], counts["rejected"])


class WriteDuplicates(beam.PTransform):
    """(file index, manifest row) of the removed copies → a manifest part per input file;
    returns the parts' row counts."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def expand(self, duplicates):
        return (
            duplicates
            | "Group by file" >> beam.GroupByKey()
            | "Write duplicates"
            >> beam.MapTuple(
                lambda index, rows: write_manifest_part(
                    list(rows), self.output, f"duplicate-{index:06d}"
                )
            )
        )


class WriteRejected(beam.PTransform):
    """(file index, Rejected) → the dead letters and their manifest rows, a part per input file.
    Returns (the parts' row counts, the count of each reason)."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def expand(self, rejected):
        written = (
            rejected
            | "Group by file" >> beam.GroupByKey()
            | "Write rejected" >> beam.Map(write_rejected, self.output)
        )
        reasons = (
            rejected
            | "Reason" >> beam.MapTuple(lambda _, record: record.reason)
            | "Count reasons" >> beam.combiners.Count.PerElement()
        )
        return written, reasons


def score_step(config: CurateConfig) -> beam.PTransform:
    """RunInference with the teacher (and student); only this step asks for an accelerator."""
    handler = ScoringHandler(
        config.teacher,
        task=config.task,
        student=config.student,
        device=config.device,
        max_len=config.scoring_length,
        large_model=config.large_model,
        model_copies=config.model_copies,
        torch_threads=config.torch_threads,
    )
    step = RunInference(handler)
    if config.accelerator:  # Dataflow right fitting: GPU workers for this step only
        step = step.with_resource_hints(accelerator=config.accelerator)
    return step


def select(scored: Scored, config: CurateConfig) -> list[Decision]:
    start = time.perf_counter()
    decisions = select_super_batch(scored.teacher, config.selection, scored.student)
    kept = sum(d.selected for d in decisions)
    count("scored", len(decisions))
    count("selected", kept)
    log.info(
        "super-batch %d: %d scored in %.1f s, %d selected in %.2f s",
        scored.teacher.super_batch, len(decisions), scored.seconds, kept,
        time.perf_counter() - start,
    )  # fmt: skip
    return decisions


class CountScores(beam.CombineFn):
    """Exact counts of quantised scores, selected and not: for tiers and histograms."""

    def __init__(self, quantum: float) -> None:
        self.quantum = quantum

    def create_accumulator(self):
        return {status: Counter() for status in SCORED}

    def add_input(self, accumulator, decisions: list[Decision]):
        for d in decisions:
            accumulator[SCORED[not d.selected]][grid(d.score, self.quantum)] += 1
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


class WriteShards(beam.PTransform):
    """Decisions → the selected examples' shards, a group of super-batches per shard group,
    and the group's manifest part. Returns every shard written (name, count, bytes)."""

    def __init__(self, config: CurateConfig, plan: RunPlan, thresholds) -> None:
        super().__init__()
        self.config, self.plan, self.thresholds = config, plan, thresholds

    def expand(self, decisions):
        config = self.config
        write = functools.partial(
            write_shard_group,
            output=config.output,
            tiers=config.tiers,
            quantum=config.selection.quantum,
            limits=ShardLimits(max_count=config.shard_max_count, max_bytes=config.shard_max_bytes),
            info=self.plan.shard_info,
        )
        # Tiers need the global score counts before any shard is written; without tiers, shard
        # groups are written as soon as they are complete.
        tiering = beam.pvalue.AsSingleton(self.thresholds) if config.tiers > 1 else []
        return (
            decisions
            | "Place" >> beam.FlatMap(place, config.super_batches_per_group)
            | "Group shards" >> beam.GroupByKey()
            | "Write shards" >> beam.Map(write, tiering)
            | "Shard files" >> beam.FlatMap(shard_files)
        )


def place(decisions: list[Decision], super_batches_per_group: int):
    """The selected examples of a super-batch → (their shard group, decision)."""
    group = decisions[0].super_batch // super_batches_per_group
    for d in decisions:
        if d.selected:
            yield group, d


def shard_files(group: WrittenGroup) -> list[dict[str, Any]]:
    count("written", sum(shard.count for shard in group.shards))
    for shard in group.shards:
        log.info("wrote shards/%s: %d samples", shard.name, shard.count)
    return [dataclasses.asdict(shard) for shard in group.shards]


def scoring_counts(scored: Scored) -> Counter[str]:
    counts = scored.counts()
    for name, n in counts.items():
        count(name, n)
    return counts


def sum_counters(counters) -> Counter[str]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return total
