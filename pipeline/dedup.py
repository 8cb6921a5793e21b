"""The dedup step of the curation job, before anything is scored (`transforms/dedup.py` says what
makes two examples copies).

    examples, in batches → their buckets (the exact content hash, or one LSH bucket per band),
    sent as COARSE groups of buckets → group → a bucket of one content: its edges (exact copies);
    of more contents: the MinHash signatures of its members, and its edges (`bucket_edges`:
    exact, or near when the signatures agree) → connected components → split the examples into
    the kept and the removed copies

Only small records (a bucket key and the example's file, position, key and content hash) travel
through the grouping, never the payloads or the signatures, and a few elements per batch rather
than one per bucket (the local runner's shuffle costs per element). The signatures are computed
again for the members of mixed buckets only and reach the edges as a side input. The components are built
on each worker and merged (a combiner), and the examples are split against the removed copies as
a side input: past the grouping (which the local runner holds in memory, as it does every
grouping), memory grows with the number of copies, not with the pool.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import apache_beam as beam

from ..transforms.dedup import (
    Components,
    Copies,
    DedupConfig,
    Member,
    band_keys,
    bucket_edges,
    content_hash,
    near_members,
)
from ..transforms.manifest import duplicate_row
from ..transforms.minhash import signatures
from ..transforms.records import Example
from .counters import count

BATCH = 1024  # examples fingerprinted at once
COARSE = 256  # bucket groups in the shuffle
log = logging.getLogger(__name__)


class Deduplicate(beam.PTransform):
    """PCollection[Example] → (the kept examples, (input file index, manifest row) of every
    removed copy, a one-element summary for stats.json)."""

    def __init__(self, config: DedupConfig, method: str, urls: list[str]) -> None:
        super().__init__()
        self.config, self.method = config, method
        self.index = {url: i for i, url in enumerate(urls)}

    def expand(self, examples):
        settings = {"method": self.method, **self._settings()}
        if self.method == "none":
            none = Copies(kept_of={}, kinds={}, cluster_sizes={})
            nothing = examples.pipeline | "No copies" >> beam.Create([])
            summary = examples.pipeline | "Nothing removed" >> beam.Create([none])
            return examples, nothing, summary | "Summary" >> beam.Map(_summary, settings, 0)
        bucketed = (
            examples
            | "Batch" >> beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
            | "Buckets"
            >> beam.FlatMap(buckets, self.config, self.method, self.index).with_outputs(
                "not_shingled", main="buckets"
            )
        )
        copies = self._copies(examples, bucketed.buckets)
        split = examples | "Split" >> beam.ParDo(
            _Split(self.index), beam.pvalue.AsSingleton(copies)
        ).with_outputs("duplicate", main="kept")
        not_shingled = (
            bucketed.not_shingled | "Count not shingled" >> beam.combiners.Count.Globally()
        )
        summary = copies | "Summary" >> beam.Map(
            _summary, settings, beam.pvalue.AsSingleton(not_shingled)
        )
        return split.kept, split.duplicate, summary

    def _copies(self, examples, bucketed):
        """The clusters: exact copies linked as their buckets are read, the buckets that hold
        more than one content (near candidates) linked on their members' signatures."""
        linked = (
            bucketed
            | "Group buckets" >> beam.GroupByKey()
            | "Link buckets" >> beam.FlatMap(_link_buckets).with_outputs("mixed", main="edges")
        )
        if self.method == "near":
            ends = (
                linked.mixed
                | "Near members" >> beam.FlatMap(near_members)
                | "Ends" >> beam.combiners.ToSet()
            )
            sigs = (
                examples
                | "Ends only"
                >> beam.Filter(lambda e, ends: e.key in ends, beam.pvalue.AsSingleton(ends))
                | "Batch ends" >> beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
                | "Signatures" >> beam.FlatMap(_signatures, self.config)
            )
        else:  # a bucket holds one content, but for a (64-bit) hash collision
            sigs = examples.pipeline | "No signatures" >> beam.Create([])
        near = linked.mixed | "Near copies" >> beam.FlatMap(
            _edges, beam.pvalue.AsDict(sigs), self.config.threshold
        )
        return (
            (linked.edges, near)
            | "All edges" >> beam.Flatten()
            | "Clusters" >> beam.CombineGlobally(_Clusters())
        )

    def _settings(self) -> dict:
        if self.method != "near":
            return {}
        bands, rows = self.config.bands
        return {"threshold": self.config.threshold, "num_perm": self.config.num_perm,
                "bands": bands, "rows": rows}  # fmt: skip


def member(example: Example, index: dict[str, int]) -> Member:
    return Member(file=index[example.source], position=example.position, key=example.key,
                  content=content_hash(example))  # fmt: skip


def buckets(batch: list[Example], config: DedupConfig, method: str, index: dict[str, int]):
    """A batch's buckets, as (coarse group, [(bucket, member as a plain tuple), …]) for each
    coarse group its buckets fall in: each example's content hash (exact), its LSH bands (near),
    or its content hash when nothing is left to shingle (near; counted). Grouping the buckets in
    COARSE groups, each a few elements per batch, spares the shuffle one element per bucket."""
    members = [member(example, index) for example in batch]
    keys = band_keys(batch, config) if method == "near" else [[] for _ in batch]
    groups: dict[int, list] = defaultdict(list)
    for m, bands in zip(members, keys, strict=True):
        if method == "near" and not bands:
            yield beam.pvalue.TaggedOutput("not_shingled", m.key)
        for key in bands or [m.content]:
            groups[key % COARSE].append((key, tuple(m)))
    yield from groups.items()


def _link_buckets(group):
    """A coarse group's buckets: one of one content as its edges (a star from its first member);
    one of more contents as its sorted members, for the signature check."""
    by_bucket: dict[int, list] = defaultdict(list)
    for entries in group[1]:
        for key, m in entries:
            by_bucket[key].append(m)
    for bucket in by_bucket.values():
        if len(bucket) < 2:
            continue
        members = sorted({Member(*t) for t in bucket})
        if all(m.content == members[0].content for m in members):
            yield from _edges(members, {}, 1.0)
        else:
            yield beam.pvalue.TaggedOutput("mixed", [tuple(m) for m in members])  # packed


def _edges(members, sigs, threshold: float):
    """`bucket_edges` as pairs of plain tuples, which Beam packs compactly."""
    return [(tuple(a), tuple(b)) for a, b in bucket_edges(members, sigs, threshold)]


def _signatures(batch: list[Example], config: DedupConfig):
    """(key, MinHash signature as bytes) of each example of a batch that has one."""
    for example, sig in zip(batch, signatures(batch, config.num_perm, config.seed), strict=True):
        if sig is not None:
            yield example.key, sig.tobytes()


class _Clusters(beam.CombineFn):
    """The copy graph's components, built on each worker and merged: memory grows with the
    copies, never with the edges."""

    def create_accumulator(self) -> Components:
        return Components()

    def add_input(self, components: Components, edge) -> Components:
        return components.link(Member(*edge[0]), Member(*edge[1]))

    def merge_accumulators(self, accumulators) -> Components:
        first, *rest = accumulators
        for other in rest:
            first.merge(other)
        return first

    def extract_output(self, components: Components) -> Copies:
        return components.copies()


class _Split(beam.DoFn):
    def __init__(self, index: dict[str, int]) -> None:
        self.index = index

    def process(self, example: Example, copies: Copies):
        kept = copies.kept_of.get(example.key)
        if kept is None:
            yield example
            return
        count("duplicates")
        row = duplicate_row(example, kept=kept.key, kind=copies.kinds[example.key])
        yield beam.pvalue.TaggedOutput("duplicate", (self.index[example.source], row))


def _summary(copies: Copies, settings: dict, not_shingled: int) -> dict:
    """stats.json's `dedup`: the settings, the copies removed by kind, the cluster sizes, and
    the texts near-dedup could not shingle (deduplicated exactly instead)."""
    summary = {**settings, **copies.summary()}
    if settings["method"] == "near":
        summary["not_shingled"] = not_shingled
    if settings["method"] != "none":
        log.info("dedup (%s): %d copies removed, in %d clusters", settings["method"],
                 summary["duplicates"], summary["clusters"])  # fmt: skip
    return summary
