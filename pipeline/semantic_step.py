"""Semantic dedup (SemDeDup) of the curation job, after scoring and before selection
(`transforms/dedup/semantic.py` says what makes two examples semantic copies). Everything per
example goes through spill files; Beam carries a few file names per scored chunk and per group
of clusters:

    fit (one element): the first examples in the run's hash order (the lowest super-batch
        buckets of the scored spills) → their teacher vectors → k-means centroids
    assign (a scored chunk at a time): its examples' vectors → their nearest centroid → spilled
        by cluster
    copies (a range of clusters at a time): each cluster's members in input order →
        `find_copies` → the removed copies' manifest rows (`manifest/semantic-GGGGGG.parquet`),
        and their keys spilled by super-batch bucket

The select step leaves the removed keys out of its super-batches (and its bucket counts), so a
semantic copy is neither selected nor "not selected": its manifest row says `duplicate`,
reason `semantic`, with the key of the copy kept. Memory: the sample (one element), a chunk, a
range of clusters.
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import apache_beam as beam
import numpy as np
import pyarrow as pa

from ..transforms.dedup.semantic import (
    SemanticConfig,
    assign,
    cluster_count,
    find_copies,
    fit_centroids,
    sample_size,
    vectors,
)
from ..transforms.formats.manifest import MANIFEST_SCHEMA, duplicate_row
from ..transforms.memory import releasing
from ..transforms.paths import child
from ..transforms.selection.super_batches import BUCKETS, bucket_of
from ..transforms.spill.dedup_rows import SEMANTIC_MEMBER, SEMANTIC_REMOVED
from ..transforms.spill.files import SpillWriter, read_rows, read_spill
from ..transforms.spill.rows import stub_example
from .counters import count, sum_counters
from .sinks import write_manifest_part

if TYPE_CHECKING:
    from .score_step import ScoredChunk

GROUPS = 64  # ranges of clusters: the copies step's elements, at most
EMBEDDINGS = "teacher_embeddings"
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Centroids:
    """The k-means centroids (k × D, float64) and the sample they were fit on."""

    centroids: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    sample: int = 0

    @property
    def k(self) -> int:
        return len(self.centroids)


@dataclass(frozen=True, kw_only=True)
class SemanticGroup:
    """What finding the copies of one range of clusters left behind."""

    removed: list[str] = field(default_factory=list)  # their keys, spilled by bucket
    buckets: Counter[int] = field(default_factory=Counter)  # removed copies per bucket
    cluster_sizes: Counter[int] = field(default_factory=Counter)  # kept + its copies → how many


@dataclass(frozen=True, kw_only=True)
class SemanticCopies:
    """The run's semantic copies: their keys spilled by bucket, their counts per bucket."""

    removed: list[str] = field(default_factory=list)
    buckets: Counter[int] = field(default_factory=Counter)
    cluster_sizes: dict[int, int] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # threshold, clusters, sample (when on)

    @property
    def copies(self) -> int:
        return sum(self.buckets.values())


def removed_keys(copies: SemanticCopies, lo: int, hi: int) -> set[str]:
    """The semantic copies in super-batch buckets [lo, hi)."""
    return {row["key"] for row in read_rows(copies.removed, lo, hi)}


def without_copies(counts: Counter[int], copies: SemanticCopies) -> Counter[int]:
    """The pool's examples per bucket, less its semantic copies."""
    return Counter({b: n - copies.buckets.get(b, 0) for b, n in counts.items()})


class SemanticDedup(beam.PTransform):
    """PCollection[ScoredChunk] → a one-element PCollection of the run's `SemanticCopies`
    (empty when `config` is off)."""

    def __init__(self, config: SemanticConfig, urls: list[str], temporary: str, output: str):
        super().__init__()
        self.config, self.urls, self.temporary, self.output = config, urls, temporary, output

    def expand(self, chunks):
        if not self.config.enabled:  # from the chunks, not a root Create (the runner's order)
            return (
                chunks
                | "Once scored" >> beam.combiners.Count.Globally()
                | "No semantic copies" >> beam.Map(lambda _: SemanticCopies())
            )
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
        fitted = counts | "Fit centroids" >> beam.Map(
            fit, beam.pvalue.AsSingleton(scored), self.config
        )
        assigned = chunks | "Assign clusters" >> beam.Map(
            assign_chunk, beam.pvalue.AsSingleton(fitted), self.temporary
        )
        groups = (
            fitted
            | "Cluster ranges" >> beam.FlatMap(cluster_ranges)
            | "Spread ranges" >> beam.Reshuffle()
            | "Find copies"
            >> beam.Map(
                copies_of_range,
                beam.pvalue.AsList(assigned),
                threshold=self.config.threshold,
                urls=self.urls,
                temporary=self.temporary,
                output=self.output,
            )
        )
        return (
            groups
            | "All ranges" >> beam.combiners.ToList()
            | "Semantic copies"
            >> beam.Map(merge, beam.pvalue.AsSingleton(fitted), self.config.threshold)
        )


@releasing
def fit(counts: Counter[int], scored: list[tuple[str, int, int]], config: SemanticConfig):
    """The centroids, fit on the first `sample_size` examples in the run's hash order: the
    lowest buckets' scored rows, sorted by (hash, key)."""
    n = sum(counts.values())
    if not n:
        return Centroids()
    k = cluster_count(n, config.clusters)
    m = sample_size(n, k)
    hi, total = 0, 0
    while total < m:
        total, hi = total + counts.get(hi, 0), hi + 1
    urls = sorted(url for url, lo, _ in scored if lo < hi)
    batches = read_spill(urls, 0, hi, columns=["hash", "key", EMBEDDINGS])
    table = pa.Table.from_batches(list(batches))
    table = table.sort_by([("hash", "ascending"), ("key", "ascending")]).slice(0, m)
    centroids = fit_centroids(vectors(_embeddings(table[EMBEDDINGS])), k, config.seed)
    log.info("semantic dedup: %d centroids fit on %d of %d examples", len(centroids), m, n)
    return Centroids(centroids=centroids, sample=m)


def _embeddings(column) -> np.ndarray:
    """A list column of flattened [2, d] embeddings → [n, 2, d]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("semantic dedup needs the teacher's embeddings of every example")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), 2, -1)


@releasing
def assign_chunk(chunk: ScoredChunk, fitted: Centroids, temporary: str) -> list[str]:
    """A scored chunk's examples, each with its vector, spilled by nearest centroid."""
    if not chunk.urls or not fitted.k:
        return []
    name = posixpath.basename(chunk.urls[0]).removesuffix(".arrow")
    out = SpillWriter(child(temporary, "semantic"), name, SEMANTIC_MEMBER, fitted.k)
    for batch in read_spill(chunk.urls):
        x = vectors(_embeddings(batch.column(EMBEDDINGS)))
        labels = assign(x, fitted.centroids)
        flat = pa.array(x.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(len(x) + 1, dtype=np.int32) * x.shape[1])
        columns = [batch.column(c) for c in SEMANTIC_MEMBER.names[1:-1]]
        out.add_columns(
            labels,
            [labels, *columns, pa.ListArray.from_arrays(offsets, flat)],
            size=x.nbytes + 200 * len(x),
        )
    return out.close()


def cluster_ranges(fitted: Centroids) -> list[tuple[int, int, int]]:
    """(range, first cluster, end cluster) of every range of clusters."""
    n = min(fitted.k, GROUPS)
    return [(g, g * fitted.k // n, (g + 1) * fitted.k // n) for g in range(n)]


@releasing
def copies_of_range(
    span: tuple[int, int, int],
    assigned: list[list[str]],
    *,
    threshold: float,
    urls: list[str],
    temporary: str,
    output: str,
) -> SemanticGroup:
    """A range of clusters: each cluster's members in input order → `find_copies` → the
    removed copies' manifest part, and their keys spilled by bucket."""
    group, lo, hi = span
    spills = sorted(url for chunk in assigned for url in chunk)
    table = pa.Table.from_batches(list(read_spill(spills, lo, hi)), schema=SEMANTIC_MEMBER)
    table = table.sort_by([(c, "ascending") for c in ("cluster", "file", "position")])
    cluster = table["cluster"].to_numpy()
    starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]]) if len(table) else []
    kept_of = np.arange(len(table))
    for start, end in zip(starts, [*starts[1:], len(table)], strict=True):
        members = table["vector"].slice(start, end - start).combine_chunks()
        x = members.flatten().to_numpy().reshape(end - start, -1)
        kept_of[start:end] = start + find_copies(x, threshold)
    removed = np.flatnonzero(kept_of != np.arange(len(kept_of)))
    return _write_copies(group, table, kept_of, removed, urls, temporary, output)


def _write_copies(group, table, kept_of, removed, urls, temporary, output) -> SemanticGroup:
    """The removed copies' manifest rows and their keys, spilled by bucket."""
    keys = table["key"].to_pylist()
    rows = table.select(["key", "hash", "id", "file", "position", "occurrence", "meta"])
    name = f"group-{group:06d}"
    out = SpillWriter(child(temporary, "semantic-removed"), name, SEMANTIC_REMOVED, BUCKETS)
    manifest, buckets = [], Counter()
    for at, row in zip(removed.tolist(), rows.take(removed).to_pylist(), strict=True):
        kept = keys[kept_of[at]]
        manifest.append(duplicate_row(stub_example(row, urls), kept=kept, kind="semantic"))
        bucket = bucket_of(row["hash"])
        out.add((row["key"],), bucket)
        buckets[bucket] += 1
    if manifest:
        write_manifest_part(
            [{n: r[n] for n in MANIFEST_SCHEMA.names} for r in manifest],
            output,
            f"semantic-{group:06d}",
        )
    count("semantic_duplicates", len(manifest))
    sizes = np.bincount(kept_of[removed], minlength=len(kept_of))
    sizes = Counter((sizes[sizes > 0] + 1).tolist())
    return SemanticGroup(removed=out.close(), buckets=buckets, cluster_sizes=sizes)


def merge(groups: list[SemanticGroup], fitted: Centroids, threshold: float) -> SemanticCopies:
    """Every range's copies as the run's `SemanticCopies`."""
    buckets, sizes = Counter(), Counter()
    for g in groups:
        buckets.update(g.buckets)
        sizes.update(g.cluster_sizes)
    settings = {"threshold": threshold, "clusters": fitted.k, "sample": fitted.sample}
    copies = SemanticCopies(
        removed=sorted(url for g in groups for url in g.removed),
        buckets=buckets,
        cluster_sizes=dict(sorted(sizes.items())),
        settings=settings,
    )
    log.info("semantic dedup: %d copies removed, %d clusters", copies.copies, sum(sizes.values()))
    return copies


def with_semantic(dedup: dict, copies: SemanticCopies) -> dict:
    """stats.json's `dedup` with the semantic copies: counted among the duplicates, and how
    semantic dedup ran (`semantic_dedup`: threshold, k, sample, its clusters by size)."""
    if not copies.settings:
        return dedup
    sizes = copies.cluster_sizes
    return dedup | {
        "duplicates": dedup["duplicates"] + copies.copies,
        "semantic": copies.copies,
        "semantic_dedup": copies.settings
        | {
            "clusters_with_copies": sum(sizes.values()),
            "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
        },
    }
