"""The curation job's Beam graph, built from named steps: read → dedup → score → semantic dedup
→ group → select → write, then the finish step.

Only small summaries travel through Beam — one per input file, scoring chunk and shard group —
while the examples themselves go through spill files under the run's `_temporary/` folder
(`transforms/spill/files.py`): the read step spills the payloads by super-batch bucket, the scoring
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

from typing import TYPE_CHECKING

import apache_beam as beam

from .counters import sum_counters
from .dedup_step import Deduplicate
from .finish_step import Finish
from .read_step import ReadSettings, read_and_spill
from .score_step import (
    CutChunks,
    ListCacheParts,
    WriteDuplicates,
    score_with_models,
    spill_scores,
    units_of,
)
from .select_step import CountScores, Select, tiers_of
from .semantic_step import SemanticDedup, with_semantic
from .write_step import WriteShards

if TYPE_CHECKING:
    from .config import CurateConfig, RunPlan


def build(p: beam.Pipeline, config: CurateConfig, plan: RunPlan) -> None:
    """The job's graph on `p`, for the run `plan` prepared."""
    files = (
        p
        | "Inputs" >> beam.Create(list(enumerate(plan.urls)), reshuffle=True)
        | "Read" >> beam.Map(read_and_spill, ReadSettings.of(config, plan))
    )
    reasons = files | "Reasons" >> beam.FlatMap(lambda f: f.reasons.items())
    reasons = reasons | "Count reasons" >> beam.CombinePerKey(sum)
    copies, dedup = files | "Deduplicate" >> Deduplicate(
        config.dedup_settings, config.dedup_method, plan.urls, plan.temporary
    )
    parts = p | "Cache parts" >> ListCacheParts(config.cache, plan.cache_keys)
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
        | "Score" >> score_with_models(config)
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
    semantic = chunks | "Semantic dedup" >> SemanticDedup(
        config.semantic, plan.urls, plan.temporary, config.output
    )
    dedup = dedup | "With semantic copies" >> beam.Map(
        with_semantic, beam.pvalue.AsSingleton(semantic)
    )
    selected = chunks | "Select" >> Select(config, plan, semantic)
    scores = selected | "Count scores" >> beam.CombineGlobally(CountScores())
    thresholds = scores | "Tiers" >> beam.Map(tiers_of, config.tiers)
    payloads = files | "Payload files" >> beam.FlatMap(lambda f: f.payloads)
    shards = selected | "Write shards" >> WriteShards(config, plan, thresholds, payloads)
    _ = p | "Write stats, run.json, _SUCCESS" >> Finish(
        config,
        plan,
        scores=scores,
        thresholds=thresholds,
        reasons=reasons,
        dedup=dedup,
        shards=shards,
        scoring=scoring,
        written=duplicates,
    )
