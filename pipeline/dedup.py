"""The dedup step of the curation job, before anything is scored (`transforms/dedup.py` says what
makes two examples copies).

    the read step spilled each example's buckets (the exact content hash, or one LSH bucket per
    band) by COARSE group → a group at a time: its buckets → a bucket of one content: its edges
    (exact copies); of more contents: its members, whose MinHash signatures are computed again
    (from the spilled payloads of the first copy of each content) and compared (`bucket_edges`:
    exact, or near when the signatures agree) → connected components → the removed copies

Only a few elements per input file and per group travel through Beam; the members and payloads
are read from the spill files. The components are built on each worker and merged (a combiner),
and the scoring step leaves out the removed copies as it reads each file (`Copies` is a side
input): memory grows with the number of copies, not with the pool.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from ..transforms.dedup import (
    Components,
    Copies,
    DedupConfig,
    Member,
    bucket_edges,
    near_members,
)
from ..transforms.minhash import signatures
from ..transforms.spill import read_rows, read_spill
from ..transforms.spill_rows import example_of
from .read_step import BATCH, COARSE, FileSpill

log = logging.getLogger(__name__)


class Deduplicate(beam.PTransform):
    """PCollection[FileSpill] → (the copies to remove, a one-element summary for stats.json)."""

    def __init__(self, config: DedupConfig, method: str, urls: list[str]) -> None:
        super().__init__()
        self.config, self.method, self.urls = config, method, urls

    def expand(self, files):
        settings = {"method": self.method, **self._settings()}
        not_shingled = files | "Not shingled" >> beam.Map(lambda f: f.not_shingled)
        not_shingled = not_shingled | "Count not shingled" >> beam.CombineGlobally(sum)
        if self.method == "none":
            none = Copies(kept_of={}, kinds={}, cluster_sizes={})
            # From the files, not a root Create: the local runner then runs it in order.
            copies = (
                files
                | "Once read" >> beam.combiners.Count.Globally()
                | "No copies" >> beam.Map(lambda _: none)
            )
        else:
            copies = self._copies(files)
        summary = copies | "Summary" >> beam.Map(
            _summary, settings, beam.pvalue.AsSingleton(not_shingled)
        )
        return copies, summary

    def _copies(self, files):
        """The clusters: exact copies linked as their buckets are read, the buckets that hold
        more than one content (near candidates) linked on their members' signatures."""
        spills = files | "All files" >> beam.combiners.ToList()
        linked = (
            spills
            | "Groups" >> beam.FlatMap(lambda _: range(COARSE))
            | "Spread groups" >> beam.Reshuffle()
            | "Link buckets"
            >> beam.FlatMap(_link_group, beam.pvalue.AsSingleton(spills)).with_outputs(
                "mixed", main="edges"
            )
        )
        if self.method == "near":
            ends = (
                linked.mixed
                | "Near members" >> beam.FlatMap(near_members)
                | "Ends" >> beam.combiners.ToSet()
            )
            sigs = files | "Signatures" >> beam.FlatMap(
                _signatures, beam.pvalue.AsSingleton(ends), self.config, self.urls
            )
        else:  # a bucket holds one content, but for a (64-bit) hash collision
            sigs = files.pipeline | "No signatures" >> beam.Create([])
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


def _link_group(group: int, spills: list[FileSpill]):
    """A coarse group's buckets: one of one content as its edges (a star from its first member);
    one of more contents as its sorted members, for the signature check."""
    by_bucket: dict[int, list] = defaultdict(list)
    urls = [url for spill in sorted(spills, key=lambda s: s.index) for url in spill.members]
    for row in read_rows(urls, group, group + 1):
        by_bucket[row["bucket"]].append(
            Member(row["file"], row["position"], row["key"], row["content"])
        )
    for bucket in by_bucket.values():
        if len(bucket) < 2:
            continue
        members = sorted(set(bucket))
        if all(m.content == members[0].content for m in members):
            yield from _edges(members, {}, 1.0)
        else:
            yield beam.pvalue.TaggedOutput("mixed", [tuple(m) for m in members])  # packed


def _edges(members, sigs, threshold: float):
    """`bucket_edges` as pairs of plain tuples, which Beam packs compactly."""
    return [(tuple(a), tuple(b)) for a, b in bucket_edges(members, sigs, threshold)]


def _signatures(spill: FileSpill, ends: set[str], config: DedupConfig, urls: list[str]):
    """(key, MinHash signature as bytes) of each example of a file that a near check needs."""
    if not ends:
        return
    wanted = pa.array(sorted(ends))
    batch = []
    for part in read_spill(spill.payloads):
        for row in part.filter(pc.is_in(part.column("key"), value_set=wanted)).to_pylist():
            batch.append(example_of(row, urls))
            if len(batch) == BATCH:
                yield from _signed(batch, config)
                batch = []
    yield from _signed(batch, config)


def _signed(batch, config: DedupConfig):
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
