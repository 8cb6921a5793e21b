"""Scoring as the examples stream in, before any grouping: each input file's spilled payloads are
read back a range of buckets at a time (a `Unit`, spread over the workers), its removed copies
sent on to the manifest, the rest cut into chunks with the outputs the score cache holds for
them, scored (RunInference, `handlers.py`), and each chunk's small records — key, hash, file and
position, kept fields, the models' outputs — spilled by super-batch bucket for the selection
step. Fresh outputs go to the score cache, a part per chunk and model.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from ..transforms.formats.manifest import MANIFEST_SCHEMA, duplicate_row
from ..transforms.formats.score_cache import CachedOutputs, Candidate, cache_parts, write_cache_part
from ..transforms.paths import child
from ..transforms.selection.super_batches import BUCKETS, bucket_of, key_hash
from ..transforms.spill.files import SpillWriter, read_rows, read_spill
from ..transforms.spill.rows import SCORED, example_of, payload_size, scored_row
from .counters import count
from .dedup_step import RemovedCopies, removed_of
from .handlers import Chunk, Scored, ScoringHandler
from .read_step import FileSpill
from .sinks import write_manifest_part

if TYPE_CHECKING:
    from .config import CurateConfig

CHUNK = 4096  # examples scored per call, at most …
CHUNK_BYTES = 64 << 20  # … and payload bytes
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ScoredChunk:
    """What scoring one chunk left behind: its spill runs and counts."""

    urls: list[str]
    buckets: Counter[int]  # examples per super-batch bucket
    scoring: Counter[str]  # teacher.scored, teacher.cached, …

    def files(self) -> list[tuple[str, int, int]]:
        """(spill URL, first bucket, last bucket + 1) of each file: the buckets it holds rows of."""
        if not self.buckets:
            return []
        return [(url, min(self.buckets), max(self.buckets) + 1) for url in self.urls]


class ListCacheParts(beam.PTransform):
    """(role, part URL) of every part the score cache holds for the run's models: listed in the
    graph, before this run writes any part (the scoring waits for it)."""

    def __init__(self, cache: str | None, keys: Mapping[str, str]) -> None:
        super().__init__()
        self.cache, self.keys = cache, keys

    def expand(self, begin):
        return (
            begin
            | "Cache" >> beam.Create([self.cache])
            | "List cache parts" >> beam.FlatMap(list_cache_parts, self.keys)
        )


def list_cache_parts(cache: str | None, keys: Mapping[str, str]) -> list[tuple[str, str]]:
    """(role, part URL) of every part the cache holds for the run's models, before this run adds
    any (the scoring step waits for this listing)."""
    if cache is None:
        return []
    return [(role, url) for role, key in sorted(keys.items()) for url in cache_parts(cache, key)]


@dataclass(frozen=True, kw_only=True)
class Unit:
    """A unit of scoring work: the examples in super-batch buckets [lo, hi) of one input file
    (small: it travels through Beam and spreads the scoring over the workers)."""

    file: int
    lo: int
    hi: int
    payloads: tuple[str, ...]


def units_of(spill: FileSpill) -> list[Unit]:
    """A file's scoring units: its buckets cut into ranges of about CHUNK examples."""
    n = min(BUCKETS, math.ceil(spill.examples / CHUNK))
    edges = [i * BUCKETS // n for i in range(n + 1)] if n else []
    return [
        Unit(file=spill.index, lo=lo, hi=hi, payloads=tuple(spill.payloads))
        for lo, hi in itertools.pairwise(edges)
    ]


class CutChunks(beam.DoFn):
    """Unit → its kept examples as `Chunk`s, each example with what the score cache holds for
    it; its removed copies' manifest rows spilled, their file's name to the `duplicates` output
    as (input file, spill URL)."""

    def __init__(self, urls: list[str], temporary: str) -> None:
        self.urls, self.temporary = urls, temporary
        self._cached: tuple[tuple, dict[str, CachedOutputs]] | None = None
        self._removed: tuple[int, dict[str, tuple[str, str]]] | None = None

    def process(self, unit: Unit, copies: RemovedCopies, parts: Sequence[tuple[str, str]]):
        cached, removed = self._cache(parts), self._removed_of(copies, unit.file)
        duplicates = SpillWriter(
            child(self.temporary, "duplicates"), chunk_name(unit, 0), MANIFEST_SCHEMA
        )
        chunk, size, part = [], 0, 0
        for batch in read_spill(unit.payloads, unit.lo, unit.hi):
            for row in batch.to_pylist():
                example = example_of(row, self.urls)
                if example.key in removed:
                    kept, kind = removed[example.key]
                    manifest_row = duplicate_row(example, kept=kept, kind=kind)
                    duplicates.add(tuple(manifest_row[n] for n in MANIFEST_SCHEMA.names))
                    continue
                chunk.append(candidate(example, cached))
                size += payload_size(example)
                if len(chunk) == CHUNK or size >= CHUNK_BYTES:
                    yield Chunk(unit.file, chunk_name(unit, part), chunk)
                    chunk, size, part = [], 0, part + 1
        if chunk:
            yield Chunk(unit.file, chunk_name(unit, part), chunk)
        for url in duplicates.close():
            yield beam.pvalue.TaggedOutput("duplicates", (unit.file, url))

    def _removed_of(self, copies: RemovedCopies, file: int) -> dict[str, tuple[str, str]]:
        """The file's removed copies, read once per worker while its units come in a row."""
        if self._removed is None or self._removed[0] != file:
            self._removed = (file, removed_of(copies, file))
        return self._removed[1]

    def _cache(self, parts: Sequence[tuple[str, str]]) -> dict[str, CachedOutputs]:
        """Each model's cached outputs, loaded once per worker."""
        listing = tuple(parts)
        if self._cached is None or self._cached[0] != listing:
            by_role: dict[str, list[str]] = {}
            for role, url in listing:
                by_role.setdefault(role, []).append(url)
            self._cached = (listing, {r: CachedOutputs(u) for r, u in by_role.items()})
        return self._cached[1]


def chunk_name(unit: Unit, part: int) -> str:
    return f"file-{unit.file:06d}-buckets-{unit.lo:04d}-{part:02d}"


def write_duplicates(element: tuple[int, Iterable[str]], output: str) -> int:
    """One input file's removed copies, from its units' spills: its `duplicate-FFFFFF` manifest
    part."""
    file, urls = element
    rows = list(read_rows(sorted(urls)))
    count("duplicates", len(rows))
    return write_manifest_part(rows, output, f"duplicate-{file:06d}")


def candidate(example, cached: Mapping[str, CachedOutputs]) -> Candidate:
    outputs = {}
    for role, index in cached.items():
        found = {p: out for p in ("fp32", "bf16") if (out := index.get(example.id, p))}
        if found:
            outputs[role] = found
    return Candidate(example=example, cached=outputs)


def spill_scores(
    scored: Scored, temporary: str, seed: int, cache: str | None, keys: Mapping[str, str]
) -> ScoredChunk:
    """Spill a scored chunk's small records by bucket, and write its fresh outputs to the cache."""
    out = SpillWriter(child(temporary, "scored"), scored.name, SCORED, BUCKETS)
    buckets: Counter[int] = Counter()
    for i, example in enumerate(scored.examples):
        h = key_hash(example.key, seed)
        outputs = {role: every[i] for role, every in scored.outputs.items()}
        bucket = bucket_of(h)
        out.add(scored_row(example, scored.file, h, outputs), bucket)
        buckets[bucket] += 1
    if cache is not None:
        for role, fresh in sorted(scored.fresh.items()):
            write_cache_part(cache, keys[role], fresh)
    counts = scored.counts()
    for name, n in counts.items():
        count(name, n)
    log.info("scored %s: %d examples in %.1f s", scored.name, len(scored.examples), scored.seconds)
    return ScoredChunk(urls=out.close(), buckets=buckets, scoring=counts)


def chunk_rows(chunks: Sequence[ScoredChunk]) -> Iterator[str]:
    """Every scored spill file, in a fixed order."""
    for chunk in chunks:
        yield from chunk.urls


def score_with_models(config: CurateConfig) -> beam.PTransform:
    """RunInference with the teachers (and student); only this step asks for an accelerator."""
    handler = ScoringHandler(
        config.models,
        task=config.task,
        device=config.device,
        lm_scoring=config.lm_scoring,
        large_model=config.large_model,
        model_copies=config.model_copies,
        torch_threads=config.torch_threads,
    )
    step = RunInference(handler)
    if config.accelerator:  # Dataflow right fitting: GPU workers for this step only
        step = step.with_resource_hints(accelerator=config.accelerator)
    return step


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
