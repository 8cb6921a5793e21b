"""The curation job's Beam graph: read → parse → group → score → select → write.

Outputs under the output URL: `shards/` (one or more ranked tars per super-batch, best first),
`manifest/` (Parquet parts: a row for every input record), `rejected/` (dead letters with the
raw input and the reason). Every name is derived from the data (super-batch ids, input file
indices), never from workers or bundles, so re-runs give the same files and bytes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from ..transforms.checkpoint import checkpoint_task, fingerprint
from ..transforms.curation import Decision, SelectionConfig, select_super_batch
from ..transforms.errors import JestflowError
from ..transforms.manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    dead_letter,
    example_row,
    rejected_row,
    write_parquet,
)
from ..transforms.readers import expand_urls, read_file
from ..transforms.records import FieldMap, Rejected
from ..transforms.shards import sample_of, write_shards
from .grouping import AssignSuperBatches
from .handlers import TeacherHandler


@dataclass(kw_only=True)
class CurateConfig:
    inputs: tuple[str, ...]
    output: str
    teacher: str
    task: str
    fields: FieldMap
    selection: SelectionConfig
    super_batch: int = 1024
    shard_max_count: int = 10_000
    shard_max_bytes: int = 1 << 30
    device: str = "auto"
    workers: int = 2
    beam_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        task = checkpoint_task(self.teacher)
        if task is not None and task != self.task:
            raise JestflowError(f"teacher {self.teacher} is a {task} model, not {self.task}")
        if self.super_batch < 2:
            raise JestflowError("--super-batch must be at least 2")


def _write_super_batch(
    decisions: list[Decision], config: CurateConfig, teacher_fp: str
) -> list[dict]:
    """Write one super-batch's selected examples as ranked shards; return its manifest rows."""
    super_batch = decisions[0].super_batch
    kept = sorted((d for d in decisions if d.selected), key=lambda d: (-d.score, d.example.key))
    samples = [
        sample_of(d.example, {"teacher_loss": d.teacher_loss, "score": d.score, "rank": rank,
                              "super_batch": super_batch, "teacher": teacher_fp}, d.embeddings)
        for rank, d in enumerate(kept)
    ]  # fmt: skip
    shards = write_shards(
        samples,
        posixpath.join(config.output, "shards"),
        prefix=f"shard-{super_batch:06d}",
        max_count=config.shard_max_count,
        max_bytes=config.shard_max_bytes,
    )
    shard_names = [info.name for info in shards for _ in range(info.count)]  # in writing order
    placed = {d.example.key: (rank, shard_names[rank]) for rank, d in enumerate(kept)}
    rows = []
    for d in decisions:
        rank, shard = placed.get(d.example.key, (None, None))
        rows.append(
            example_row(
                d.example,
                selected=d.selected,
                teacher_loss=d.teacher_loss,
                score=d.score,
                super_batch=super_batch,
                rank=rank,
                shard=shard,
            )
        )
    return rows


def _write_rejected(element, output: str) -> int:
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


def build(p: beam.Pipeline, config: CurateConfig) -> None:
    urls = expand_urls(config.inputs)
    teacher_fp = fingerprint(config.teacher)
    records = (
        p
        | "Inputs" >> beam.Create(list(enumerate(urls)), reshuffle=True)
        | "Read"
        >> beam.FlatMapTuple(lambda i, url: ((i, r) for r in read_file(url, config.fields)))
    )
    examples, rejected = records | "Split" >> beam.Map(
        lambda ir: (
            beam.pvalue.TaggedOutput("rejected", ir) if isinstance(ir[1], Rejected) else ir[1]
        )
    ).with_outputs("rejected", main="examples")
    (
        rejected
        | "Group rejected by file" >> beam.GroupByKey()
        | "Write rejected" >> beam.Map(_write_rejected, config.output)
    )
    selection = config.selection
    (
        examples
        | "Super-batches" >> AssignSuperBatches(config.super_batch, seed=selection.seed)
        | "Teacher"
        >> RunInference(TeacherHandler(config.teacher, task=config.task, device=config.device))
        | "Select" >> beam.Map(select_super_batch, selection)
        | "Write shards" >> beam.Map(_write_super_batch, config, teacher_fp)
        | "Write manifest"
        >> beam.Map(
            lambda rows, out: write_parquet(
                rows,
                posixpath.join(out, "manifest", f"part-{rows[0]['super_batch']:06d}.parquet"),
                MANIFEST_SCHEMA,
            ),
            config.output,
        )
    )


def run_curation(config: CurateConfig) -> None:
    options = PipelineOptions(
        config.beam_args,
        direct_num_workers=config.workers,
        direct_running_mode="multi_processing",
    )
    runner = None if "--runner" in " ".join(config.beam_args) else FnApiRunner()
    with beam.Pipeline(runner=runner, options=options) as p:
        build(p, config)
