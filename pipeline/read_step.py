"""The job's first step, one input file at a time: parse every record, write the file's dead
letters, and spill its examples — the payloads by super-batch bucket (`payload/`), and for dedup
each example's buckets (`members/`, by coarse group) — so that only a small summary per file
goes on through Beam.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..transforms.dedup.copies import DedupConfig, band_keys, content_hash
from ..transforms.paths import child
from ..transforms.readers import read_file
from ..transforms.records import Example, FieldMap, Rejected
from ..transforms.selection.super_batches import BUCKETS, bucket_of, key_hash
from ..transforms.spill.dedup_rows import MEMBER
from ..transforms.spill.files import SpillWriter
from ..transforms.spill.rows import PAYLOAD, payload_row, payload_size
from .counters import count
from .sinks import write_rejected

if TYPE_CHECKING:
    from .config import CurateConfig, RunPlan

BATCH = 1024  # examples fingerprinted for dedup at once
COARSE = 256  # dedup bucket groups: the member spills' partitions, the dedup step's elements
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReadSettings:
    output: str
    temporary: str  # the run's spill folder
    fields: FieldMap
    seed: int  # the selection seed: super-batch buckets
    dedup: DedupConfig
    dedup_method: str

    @classmethod
    def of(cls, config: CurateConfig, plan: RunPlan) -> ReadSettings:
        return cls(
            output=config.output,
            temporary=plan.temporary,
            fields=config.fields,
            seed=config.selection.seed,
            dedup=config.dedup_settings,
            dedup_method=config.dedup_method,
        )


@dataclass(frozen=True, kw_only=True)
class FileSpill:
    """What reading one input file left behind."""

    index: int
    payloads: list[str]  # spill runs, partitioned by super-batch bucket
    members: list[str]  # dedup members, partitioned by coarse group
    examples: int
    reasons: Counter[str] = field(default_factory=Counter)  # rejected records by reason
    not_shingled: int = 0  # near dedup: texts with nothing to shingle


def read_and_spill(element: tuple[int, str], settings: ReadSettings) -> FileSpill:
    index, url = element
    name = f"file-{index:06d}"
    payloads = SpillWriter(child(settings.temporary, "payload"), name, PAYLOAD, BUCKETS)
    members = SpillWriter(child(settings.temporary, "members"), name, MEMBER, COARSE)
    rejected: list[Rejected] = []
    batch: list[Example] = []
    examples, not_shingled = 0, 0
    for record in read_file(url, settings.fields):
        if isinstance(record, Rejected):
            rejected.append(record)
            continue
        examples += 1
        bucket = bucket_of(key_hash(record.key, settings.seed))
        payloads.add(payload_row(record, index), bucket, size=payload_size(record))
        if settings.dedup_method != "none":
            batch.append(record)
            if len(batch) == BATCH:
                not_shingled += spill_members(batch, index, settings, members)
                batch = []
    not_shingled += spill_members(batch, index, settings, members)
    reasons = Counter(r.reason for r in rejected)
    if rejected:
        write_rejected((index, rejected), settings.output)
    count_file(examples, reasons)
    log.info("read %s: %d records, %d rejected", url, examples + len(rejected), len(rejected))
    return FileSpill(
        index=index,
        payloads=payloads.close(),
        members=members.close(),
        examples=examples,
        reasons=reasons,
        not_shingled=not_shingled,
    )


def spill_members(
    batch: list[Example], index: int, settings: ReadSettings, out: SpillWriter
) -> int:
    """Each example's dedup buckets (its content hash for exact dedup; its LSH bands for near
    dedup, or its content hash when it has nothing to shingle), as columns; returns the examples
    with nothing to shingle."""
    if not batch:
        return 0
    near = settings.dedup_method == "near"
    keys = band_keys(batch, settings.dedup) if near else [[] for _ in batch]
    contents = [content_hash(example) for example in batch]
    buckets = [bands or [content] for bands, content in zip(keys, contents, strict=True)]
    repeats = np.asarray([len(b) for b in buckets])
    bucket = np.fromiter((k for b in buckets for k in b), dtype=np.int64, count=int(repeats.sum()))
    starts = np.repeat(np.cumsum(repeats) - repeats, repeats)
    columns = [
        bucket,
        (np.arange(len(bucket)) - starts).astype(np.int16),  # each bucket's band
        np.full(len(bucket), index, dtype=np.int32),
        np.repeat([example.position for example in batch], repeats),
        np.repeat(np.asarray([example.key for example in batch], dtype=object), repeats),
        np.repeat(np.asarray(contents, dtype=np.int64), repeats),
    ]
    out.add_columns(bucket % COARSE, columns, size=80 * len(bucket))
    return sum(near and not bands for bands in keys)


def count_file(examples: int, reasons: Counter[str]) -> None:
    """The file's counters, once per file (a counter update per record costs)."""
    rejected = sum(reasons.values())
    for name, n in {
        "parsed": examples,
        "rejected": rejected,
        "read": examples + rejected,
        **{f"rejected.{reason}": n for reason, n in reasons.items()},
    }.items():
        if n:
            count(name, n)
