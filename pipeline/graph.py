"""The curation job's Beam graph, built from named steps: read → dedup → score → group →
select → write, then the finish step.

Only small summaries travel through Beam — one per input file, scoring chunk and shard group —
while the examples themselves go through spill files under the run's `_temporary/` folder
(`transforms/spill.py`): the read step spills the payloads by super-batch bucket, the scoring
step the models' outputs, the selection step the decisions; the shard writers read the selected
payloads back. So the local runner's memory does not grow with the pool, and a GPU scores the
examples as they stream in, in large batches, before any grouping.

Building the graph has no side effects: everything that touches the world (listing inputs,
fingerprinting models, preparing the output folder) is `job.prepare_run`, whose `RunPlan` the
graph reads. Every file name a step writes comes from the data (shard groups, tiers, super-batch
ids, input file indices, chunks of an input file), never from workers or bundles, so re-runs and
retried bundles write the same files with the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from ..transforms.stats import SCORED, tier_thresholds
from ..transforms.super_batches import group_ranges
from .counters import count
from .dedup import Deduplicate
from .finish import Finish
from .handlers import ScoringHandler
from .read_step import ReadSettings, read_and_spill
from .score_step import CutChunks, list_cache_parts, spill_scores, units_of, write_duplicates
from .select_step import select_group, selected_decisions
from .sinks import ShardLimits, WrittenGroup, write_shard_group

if TYPE_CHECKING:
    from .job import CurateConfig, RunPlan

log = logging.getLogger(__name__)


def build(p: beam.Pipeline, config: CurateConfig, plan: RunPlan) -> None:
    """The job's graph on `p`, for the run `plan` prepared."""
    settings = ReadSettings(output=config.output, temporary=plan.temporary, fields=config.fields,
                            seed=config.selection.seed, dedup=config.dedup,
                            dedup_method=config.dedup_method)  # fmt: skip
    files = (
        p
        | "Inputs" >> beam.Create(list(enumerate(plan.urls)), reshuffle=True)
        | "Read" >> beam.Map(read_and_spill, settings)
    )
    reasons = files | "Reasons" >> beam.FlatMap(lambda f: f.reasons.items())
    reasons = reasons | "Count reasons" >> beam.CombinePerKey(sum)
    copies, dedup = files | "Deduplicate" >> Deduplicate(
        config.dedup, config.dedup_method, plan.urls, plan.temporary
    )
    # Listed in the graph, before this run writes any part: the scoring waits for it.
    parts = (
        p
        | "Cache" >> beam.Create([config.cache])
        | "List cache parts" >> beam.FlatMap(list_cache_parts, plan.cache_keys)
    )
    cut = (
        files
        | "Scoring units" >> beam.FlatMap(units_of)
        | "Spread units" >> beam.Reshuffle()
        | "Cut chunks"
        >> beam.ParDo(
            CutChunks(plan.urls, plan.temporary),
            beam.pvalue.AsSingleton(copies),
            beam.pvalue.AsList(parts),
        ).with_outputs("duplicates", main="chunks")
    )
    duplicates = cut.duplicates | "Write duplicates" >> WriteDuplicates(config.output)
    chunks = (
        cut.chunks
        | "Score" >> score_step(config)
        | "Spill scores"
        >> beam.Map(
            spill_scores, plan.temporary, config.selection.seed, config.cache, plan.cache_keys
        )
    )
    scoring = (
        chunks
        | "Scoring counts" >> beam.Map(lambda c: c.scoring)
        | "Sum scoring counts" >> beam.CombineGlobally(sum_counters)
    )
    selected = chunks | "Select" >> Select(config, plan)
    scores = selected | "Count scores" >> beam.CombineGlobally(CountScores())
    thresholds = scores | "Tiers" >> beam.Map(tiers_of, config.tiers)
    payloads = files | "Payload files" >> beam.FlatMap(lambda f: f.payloads)
    shards = selected | "Write shards" >> WriteShards(config, plan, thresholds, payloads)
    _ = p | "Write stats, run.json, _SUCCESS" >> Finish(
        config, plan, scores=scores, thresholds=thresholds, reasons=reasons, dedup=dedup,
        shards=shards, scoring=scoring, written=duplicates,
    )  # fmt: skip


class WriteDuplicates(beam.PTransform):
    """(input file, spill URL) of the removed copies' manifest rows → a manifest part per input
    file; returns how many parts were written."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def expand(self, duplicates):
        return (
            duplicates
            | "Group by file" >> beam.GroupByKey()
            | "Write duplicates" >> beam.Map(write_duplicates, self.output)
            | "Count parts" >> beam.combiners.Count.Globally()
        )


class Select(beam.PTransform):
    """ScoredChunk → SelectedGroup: the pool's shard groups from the bucket counts, each selected
    from the scored spill files."""

    def __init__(self, config: CurateConfig, plan: RunPlan) -> None:
        super().__init__()
        self.config, self.plan = config, plan

    def expand(self, chunks):
        config, plan = self.config, self.plan
        counts = (
            chunks
            | "Bucket counts" >> beam.Map(lambda c: c.buckets)
            | "Sum bucket counts" >> beam.CombineGlobally(sum_counters)
        )
        scored = (
            chunks
            | "Scored files" >> beam.FlatMap(lambda c: c.files())
            | "All scored files" >> beam.combiners.ToList()
        )
        select = functools.partial(
            select_group, task=config.task, size=config.super_batch, urls=plan.urls,
            selection=config.selection, temporary=plan.temporary, output=config.output,
        )  # fmt: skip
        return (
            counts
            | "Shard groups" >> beam.FlatMap(spans_of, config)
            | "Spread groups" >> beam.Reshuffle()
            | "Select groups" >> beam.Map(select, beam.pvalue.AsSingleton(scored))
        )


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


def sum_counters(counters) -> Counter:
    total: Counter = Counter()
    for counter in counters:
        total.update(counter)
    return total
