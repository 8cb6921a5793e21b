"""The curation job's Beam graph: read → parse → (cache) → group → score → select → write.

Outputs under the output URL: `shards/` (ranked WebDataset tars, best first inside each; with
tiers, named by score tier), `manifest/` (Parquet parts: a row for every input record),
`rejected/` (dead letters with the raw input and the reason), then `stats.json`, `report.html`,
`run.json` and `_SUCCESS`, written last (`outputs.py`). Every name is derived from the data
(shard groups, tiers, input file indices), never from workers or bundles, so re-runs give the
same files and bytes. With a score cache, models only score examples it does not hold.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.job.utils import dict_to_struct
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo

from ..transforms.checkpoint import checkpoint_task, fingerprint
from ..transforms.errors import JestflowError
from ..transforms.offline_selection import Decision, SelectionConfig, kept_count, select_super_batch
from ..transforms.paths import read_json
from ..transforms.readers import input_urls, read_file
from ..transforms.records import FieldMap, Rejected
from ..transforms.runs import is_complete
from ..transforms.stats import SCORED, grid, summarize, tier_thresholds
from ..transforms.vocabulary import TASKS, check_choice
from .grouping import AssignSuperBatches
from .handlers import Scored, ScoringHandler
from .outputs import complete, input_files, now, prepare_output, versions
from .score_cache import AttachCached, write_fresh
from .sinks import (
    ShardLimits,
    WrittenGroup,
    write_manifest_part,
    write_not_selected,
    write_rejected,
    write_shard_group,
)

NAMESPACE = "jestflow"
FLEX_TEMPLATE = "JESTFLOW_FLEX_TEMPLATE"  # set by deploy/flex_template/main.py: a launch-time build


@dataclass(kw_only=True)
class CurateConfig:
    inputs: tuple[str, ...]
    output: str
    teacher: str
    task: str
    fields: FieldMap
    selection: SelectionConfig
    student: str | None = None  # learnability offline: ℓ(student) − ℓ(teacher)
    super_batch: int = 1024
    tiers: int = 1
    shard_max_count: int = 10_000
    shard_max_bytes: int = 1 << 30
    device: str = "auto"
    model_copies: int | None = None  # models per worker process (RunInference)
    large_model: bool = False  # share one model across a worker's processes
    workers: int = 2  # local runner processes
    torch_threads: int | None = None  # per worker process; run_curation fills it for local runs
    progress: bool = False  # a line per file read, super-batch scored and shard written
    overwrite: bool = False  # replace a completed run in the output
    cache: str | None = None  # score cache URL: models' outputs by (example id, fingerprint)
    accelerator: str | None = None  # Beam resource hint for the scoring step, e.g. a GPU
    beam_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        if self.super_batch < 2:
            raise JestflowError("--super-batch must be at least 2")
        if self.tiers < 1:
            raise JestflowError("--tiers must be at least 1")
        for role, path in (("teacher", self.teacher), ("student", self.student)):
            task = None if path is None else checkpoint_task(path)
            if task is not None and task != self.task:
                raise JestflowError(f"{role} {path} is a {task} model, not {self.task}")
        if self.selection.mode == "learnability" and self.student is None:
            raise JestflowError("learnability scores need a student checkpoint (--student)")
        if self.selection.mode != "learnability" and self.student is not None:
            raise JestflowError(
                f"--student is only used by learnability scores, not {self.selection.mode}"
            )

    @property
    def super_batches_per_group(self) -> int:
        """Super-batches whose selected examples share a shard (about shard_max_count per tier)."""
        per_super_batch = kept_count(self.super_batch, self.selection.keep)
        return max(1, self.shard_max_count * self.tiers // per_super_batch)


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)


def _progress(config: CurateConfig, message: str) -> None:
    if config.progress:
        sys.stderr.write(f"jestflow: {message}\n")  # one write: workers' lines never interleave
        sys.stderr.flush()


def _read(element: tuple[int, str], config: CurateConfig):
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
        _count(name, n)
    _progress(config, f"read {url}: {counts['read']} records, {counts['rejected']} rejected")


def _select(scored: Scored, config: CurateConfig) -> list[Decision]:
    start = time.perf_counter()
    decisions = select_super_batch(scored.teacher, config.selection, scored.student)
    kept = sum(d.selected for d in decisions)
    _count("scored", len(decisions))
    _count("selected", kept)
    _progress(
        config,
        f"super-batch {scored.teacher.super_batch}: {len(decisions)} scored in "
        f"{scored.seconds:.1f} s, {kept} selected in {time.perf_counter() - start:.2f} s",
    )
    return decisions


class _CountScores(beam.CombineFn):
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


def _place(decisions: list[Decision], config: CurateConfig):
    """Selected → (shard group, decision); the rest → their manifest part, written right away."""
    write_not_selected(decisions, config.output)
    group = decisions[0].super_batch // config.super_batches_per_group
    for d in decisions:
        if d.selected:
            yield group, d


def _written(group: WrittenGroup, config: CurateConfig) -> list[dict[str, Any]]:
    _count("written", sum(shard.count for shard in group.shards))
    for shard in group.shards:
        _progress(config, f"wrote shards/{shard.name}: {shard.count} samples")
    return [dataclasses.asdict(shard) for shard in group.shards]


def _scoring_counts(scored: Scored) -> Counter[str]:
    counts = scored.counts()
    for name, n in counts.items():
        _count(name, n)
    return counts


def build(p: beam.Pipeline, config: CurateConfig) -> None:
    """The job's graph. Inputs are listed, models fingerprinted and the output folder prepared
    now, so bad options fail before any work is done."""
    started = time.time()
    urls = input_urls(config.inputs)
    fingerprints = {"teacher": fingerprint(config.teacher)}
    if config.student is not None:
        fingerprints["student"] = fingerprint(config.student)
    found = prepare_output(config.output, overwrite=config.overwrite)
    if found == "interrupted":
        _progress(config, f"{config.output} holds an interrupted run (no _SUCCESS): redoing it")
    run = {
        "created": now(),
        "versions": versions(),
        "runner": type(p.runner).__name__,
        "options": options_of(config),
        "inputs": input_files(urls),
        "models": {
            role: {"path": getattr(config, role), "fingerprint": fp}
            for role, fp in fingerprints.items()
        },
    }
    selection = config.selection

    examples, rejected = (
        p
        | "Inputs" >> beam.Create(list(enumerate(urls)), reshuffle=True)
        | "Read" >> beam.FlatMap(_read, config).with_outputs("rejected", main="parsed")
    )
    rejected_written = (
        rejected
        | "Group rejected by file" >> beam.GroupByKey()
        | "Write rejected" >> beam.Map(write_rejected, config.output)
    )
    reasons = (
        rejected
        | "Reason" >> beam.MapTuple(lambda _, record: record.reason)
        | "Count reasons" >> beam.combiners.Count.PerElement()
    )

    handler = ScoringHandler(
        config.teacher,
        task=config.task,
        student=config.student,
        device=config.device,
        large_model=config.large_model,
        model_copies=config.model_copies,
        torch_threads=config.torch_threads,
    )
    score = RunInference(handler)
    if config.accelerator:  # only the scoring step asks for GPU workers (Dataflow right fitting)
        score = score.with_resource_hints(accelerator=config.accelerator)
    scored = (
        examples
        | "Look up cache" >> AttachCached(config.cache, fingerprints)
        | "Super-batches" >> AssignSuperBatches(config.super_batch, seed=selection.seed)
        | "Score" >> score
    )
    scoring = (
        scored
        | "Scoring counts" >> beam.Map(_scoring_counts)
        | "Sum scoring counts" >> beam.CombineGlobally(sum_counters)
    )
    files_written = [rejected_written]
    if config.cache is not None:
        files_written.append(
            scored | "Write cache" >> beam.Map(write_fresh, config.cache, fingerprints)
        )
    decisions = scored | "Select" >> beam.Map(_select, config)
    scores = decisions | "Count scores" >> beam.CombineGlobally(_CountScores(selection.quantum))
    thresholds = scores | "Tiers" >> beam.Map(
        lambda counts: tier_thresholds(counts["selected"], config.tiers)
    )
    write = functools.partial(
        write_shard_group,
        output=config.output,
        tiers=config.tiers,
        quantum=selection.quantum,
        limits=ShardLimits(max_count=config.shard_max_count, max_bytes=config.shard_max_bytes),
        info=fingerprints,
    )
    # Tiers need the global score counts before any shard is written; without tiers, shard
    # groups are written as soon as they are complete.
    tiering = beam.pvalue.AsSingleton(thresholds) if config.tiers > 1 else []
    shards = (
        decisions
        | "Place" >> beam.FlatMap(_place, config)
        | "Group shards" >> beam.GroupByKey()
        | "Write shards" >> beam.Map(write, tiering)
        | "Shard files" >> beam.FlatMap(_written, config)
    )
    files_written = (
        files_written
        | "All other files" >> beam.Flatten()
        | "Count other files" >> beam.combiners.Count.Globally()
    )

    def finish(_, scores, thresholds, reasons, shards, scoring, _files_written):
        """After every other write: stats.json, report.html, run.json, then _SUCCESS."""
        stats = summarize(scores, reasons, shards, quantum=selection.quantum, thresholds=thresholds)
        for role, model in run["models"].items():
            stats[role] = model
        stats["scoring"] = {"cache": config.cache} | {
            role: {"scored": scoring.get(f"{role}.scored", 0),
                   "cached": scoring.get(f"{role}.cached", 0)}
            for role in fingerprints
        }  # fmt: skip
        stats["options"] = run["options"]
        seconds = time.time() - started
        inputs = stats["counts"]["inputs"]
        stats["timing"] = {"seconds": round(seconds, 3), "inputs_per_s": round(inputs / seconds, 1)}
        record = {**run, "finished": now(), "counts": stats["counts"],
                  "scoring": stats["scoring"], "timing": stats["timing"]}  # fmt: skip
        if not inputs:  # no record at all: the manifest is still there to read, empty
            write_manifest_part([], config.output, "empty")
        complete(config.output, stats, record)

    _ = (
        p
        | "Finish" >> beam.Create([None])
        | "Write stats, run.json, _SUCCESS"
        >> beam.Map(
            finish,
            beam.pvalue.AsSingleton(scores),
            beam.pvalue.AsSingleton(thresholds),
            beam.pvalue.AsDict(reasons),
            beam.pvalue.AsList(shards),
            beam.pvalue.AsSingleton(scoring),
            beam.pvalue.AsSingleton(files_written),
        )
    )


def sum_counters(counters) -> Counter[str]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return total


def options_of(config: CurateConfig) -> dict[str, Any]:
    options = dataclasses.asdict(config)
    options["fields"] = {k: v for k, v in options["fields"].items() if v not in (None, ())}
    return options


def run_curation(config: CurateConfig) -> dict[str, Any] | None:
    """Run the job to completion; returns `stats.json` with Beam's counters added (None when the
    job was only staged as a template, `--template_location`)."""
    given = {a.split("=", 1)[0].lstrip("-") for a in config.beam_args}
    # One worker runs inside this process: no worker start-up, no data plane.
    mode = "multi_processing" if config.workers > 1 else "in_memory"
    local = {"direct_num_workers": config.workers, "direct_running_mode": mode}
    options = PipelineOptions(
        config.beam_args, **{k: v for k, v in local.items() if k not in given}
    )
    if options.view_as(GoogleCloudOptions).template_location and not os.environ.get(FLEX_TEMPLATE):
        raise JestflowError(
            "--template_location would stage a classic template, whose checks, input listing and "
            "output preparation run now and not at launch; use the Flex Template (deploy/)"
        )
    runner = None if "runner" in given else local_runner()
    if runner is not None and config.torch_threads is None:
        config = dataclasses.replace(
            config, torch_threads=max(1, (os.cpu_count() or 1) // config.workers)
        )
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline, config)
    result = pipeline.run()
    if options.view_as(GoogleCloudOptions).template_location:
        return None  # a Flex Template launch: the job runs later and completes the output itself
    result.wait_until_finish()
    if not is_complete(config.output):
        raise JestflowError(f"the job finished without completing {config.output} (no _SUCCESS)")
    stats = read_json(posixpath.join(config.output, "stats.json"))
    stats["counters"] = counters_of(result)  # Beam's view, for the caller; not written
    return stats


def local_runner() -> FnApiRunner:
    """FnApiRunner whose worker processes log warnings only: their INFO lines drown progress."""
    info = beam_provision_api_pb2.ProvisionInfo(
        retrieval_token="unused-retrieval-token",
        pipeline_options=dict_to_struct({"default_sdk_harness_log_level": "WARNING"}),
    )
    return FnApiRunner(provision_info=ExtendedProvisionInfo(info))


def counters_of(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's `jestflow` counters (committed values where the runner has them)."""
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    except (NotImplementedError, AttributeError):
        return {}
    counters: Counter[str] = Counter()
    for counter in query["counters"]:
        counters[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return dict(sorted(counters.items()))
