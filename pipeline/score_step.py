"""Scoring as the examples stream in, before any grouping: each input file's spilled payloads are
read back, its removed copies written to the manifest, the rest cut into chunks with the outputs
the score cache holds for them, scored (RunInference, `handlers.py`), and each chunk's small
records — key, hash, file and position, the models' outputs — spilled by super-batch bucket for
the selection step. Fresh outputs go to the score cache, a part per chunk and model.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import apache_beam as beam

from ..transforms.cache import CachedOutputs, Candidate, cache_parts, write_cache_part
from ..transforms.dedup import Copies
from ..transforms.manifest import duplicate_row
from ..transforms.paths import child
from ..transforms.spill import SpillWriter, read_spill
from ..transforms.spill_rows import SCORED, example_of, payload_size, scored_row
from ..transforms.super_batches import BUCKETS, bucket_of, key_hash
from .counters import count
from .handlers import Chunk, Scored
from .read_step import FileSpill
from .sinks import write_manifest_part

CHUNK = 4096  # examples scored per call, at most …
CHUNK_BYTES = 64 << 20  # … and payload bytes
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ScoredChunk:
    """What scoring one chunk left behind: its spill runs and counts."""

    urls: list[str]
    buckets: Counter[int]  # examples per super-batch bucket
    scoring: Counter[str]  # teacher.scored, teacher.cached, …


def list_cache_parts(cache: str | None, keys: Mapping[str, str]) -> list[tuple[str, str]]:
    """(role, part URL) of every part the cache holds for the run's models, before this run adds
    any (the scoring step waits for this listing)."""
    if cache is None:
        return []
    return [(role, url) for role, key in sorted(keys.items()) for url in cache_parts(cache, key)]


class CutChunks(beam.DoFn):
    """FileSpill → the file's kept examples as `Chunk`s (its removed copies go to the manifest),
    each example with what the score cache holds for it."""

    def __init__(self, output: str, urls: list[str]) -> None:
        self.output, self.urls = output, urls
        self._cached: tuple[tuple, dict[str, CachedOutputs]] | None = None

    def process(self, spill: FileSpill, copies: Copies, parts: Sequence[tuple[str, str]]):
        cached = self._cache(parts)
        duplicates, chunk, size, number = [], [], 0, 0
        for batch in read_spill(spill.payloads):
            for row in batch.to_pylist():
                example = example_of(row, self.urls)
                kept = copies.kept_of.get(example.key)
                if kept is not None:
                    kind = copies.kinds[example.key]
                    duplicates.append(duplicate_row(example, kept=kept.key, kind=kind))
                    continue
                chunk.append(candidate(example, cached))
                size += payload_size(example)
                if len(chunk) == CHUNK or size >= CHUNK_BYTES:
                    yield Chunk(spill.index, number, chunk)
                    chunk, size, number = [], 0, number + 1
        if chunk:
            yield Chunk(spill.index, number, chunk)
        if duplicates:
            count("duplicates", len(duplicates))
            write_manifest_part(duplicates, self.output, f"duplicate-{spill.index:06d}")

    def _cache(self, parts: Sequence[tuple[str, str]]) -> dict[str, CachedOutputs]:
        """Each model's cached outputs, loaded once per worker."""
        listing = tuple(parts)
        if self._cached is None or self._cached[0] != listing:
            by_role: dict[str, list[str]] = {}
            for role, url in listing:
                by_role.setdefault(role, []).append(url)
            self._cached = (listing, {r: CachedOutputs(u) for r, u in by_role.items()})
        return self._cached[1]


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
    name = f"file-{scored.file:06d}-chunk-{scored.number:06d}"
    out = SpillWriter(child(temporary, "scored"), name, SCORED, BUCKETS)
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
    log.info("scored file %d chunk %d: %d examples in %.1f s", scored.file, scored.number,
             len(scored.examples), scored.seconds)  # fmt: skip
    return ScoredChunk(urls=out.close(), buckets=buckets, scoring=counts)


def chunk_rows(chunks: Sequence[ScoredChunk]) -> Iterator[str]:
    """Every scored spill file, in a fixed order."""
    for chunk in chunks:
        yield from chunk.urls
