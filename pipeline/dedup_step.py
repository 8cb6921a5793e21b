"""The dedup step of the curation job, before anything is scored (`transforms/dedup/copies.py` says what
makes two examples copies). Everything per example goes through spill files; Beam carries a few
file names per coarse group and per input file:

    link (a coarse group at a time): its members' buckets, read from every file's member spill →
        a bucket of one content: a star of exact edges (from its band 0 only: exact copies share
        every band) → a bucket of several contents (near candidates): its members spilled, and
        the first copy of each content spilled as a need, by input file
    signatures (near; an input file at a time): the needs of the file → their signatures (MinHash
        of texts, perceptual of images), computed again from its payloads, spilled by coarse group
    near edges (near; a coarse group with candidates): `bucket_edges` on its candidates'
        signatures → edges
    clusters (one element): every edge read as arrays, cut down to a forest as they come in →
        connected components (`components`) → the removed copies, each with the copy kept and
        why, spilled by input file

The scoring step reads a unit's file's removed copies from that spill and leaves them out.
Memory: a group's members, a file's needs, and in the clustering step the forest and each
member's key (a few hundred bytes a copy at its peak).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..transforms.dedup.copies import (
    DedupConfig,
    Member,
    bucket_edges,
    cluster_sizes,
    components,
    copies_summary,
    fingerprints,
    link_buckets,
)
from ..transforms.memory import releasing
from ..transforms.paths import child
from ..transforms.spill.dedup_rows import (
    EDGE,
    MEMBER,
    MEMBER_COLUMNS,
    NEED,
    REMOVED,
    SIGNATURE,
    edge_row,
    member_of,
)
from ..transforms.spill.files import BLOCK_ROWS, SpillWriter, read_rows, read_spill
from ..transforms.spill.rows import example_of
from .read_step import BATCH, COARSE, FileSpill

SIDES = ("kept", "copy")  # an edge's two members
COMPACT = 1 << 20  # edges read before they are cut down to a forest

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Linked:
    """What linking one coarse group left behind (spill URLs)."""

    group: int
    edges: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # near: members of mixed buckets
    needs: list[str] = field(default_factory=list)  # near: signatures wanted, by input file


@dataclass(frozen=True, kw_only=True)
class RemovedCopies:
    """The run's removed copies, spilled by input file (key, kept key, kind), and their counts."""

    removed: list[str] = field(default_factory=list)
    exact: int = 0
    near: int = 0
    cluster_sizes: dict[int, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return self.exact + self.near

    def summary(self) -> dict:
        return copies_summary(self.exact, self.near, self.cluster_sizes)


def removed_of(copies: RemovedCopies, file: int) -> dict[str, tuple[str, str]]:
    """An input file's removed copies: key → (the key of the copy kept, "exact" or "near")."""
    rows = read_rows(copies.removed, file, file + 1)
    return {row["key"]: (row["kept"], row["kind"]) for row in rows}


class Deduplicate(beam.PTransform):
    """PCollection[FileSpill] → (the run's `RemovedCopies`, a one-element summary for stats.json)."""

    def __init__(self, config: DedupConfig, method: str, urls: list[str], temporary: str) -> None:
        super().__init__()
        self.config, self.method, self.urls, self.temporary = config, method, urls, temporary

    def expand(self, files):
        settings = {"method": self.method, **self._settings()}
        not_shingled = files | "Not shingled" >> beam.Map(lambda f: f.not_shingled)
        not_shingled = not_shingled | "Count not shingled" >> beam.CombineGlobally(sum)
        if self.method == "none":
            # From the files, not a root Create: the local runner then runs it in order.
            copies = (
                files
                | "Once read" >> beam.combiners.Count.Globally()
                | "No copies" >> beam.Map(lambda _: RemovedCopies())
            )
        else:
            copies = self._copies(files)
        summary = copies | "Summary" >> beam.Map(
            _summary, settings, beam.pvalue.AsSingleton(not_shingled)
        )
        return copies, summary

    def _copies(self, files):
        spills = files | "All files" >> beam.combiners.ToList()
        linked = (
            spills
            | "Groups" >> beam.FlatMap(lambda _: range(COARSE))
            | "Spread groups" >> beam.Reshuffle()
            | "Link buckets"
            >> beam.Map(link_group, beam.pvalue.AsSingleton(spills), self.method, self.temporary)
        )
        edges = linked | "Exact edges" >> beam.FlatMap(lambda g: g.edges)
        if self.method == "near":
            signed = files | "Signatures" >> beam.Map(
                spill_signatures,
                beam.pvalue.AsList(linked),
                self.config,
                self.urls,
                self.temporary,
            )
            near = (
                linked
                | "With candidates" >> beam.Filter(lambda g: g.candidates)
                | "Near edges"
                >> beam.FlatMap(near_edges, beam.pvalue.AsList(signed), self.config, self.temporary)
            )
            edges = (edges, near) | "All edges" >> beam.Flatten()
        return (
            edges
            | "Edge files" >> beam.combiners.ToList()
            | "Clusters" >> beam.Map(cluster_edges, self.temporary, len(self.urls))
        )

    def _settings(self) -> dict:
        if self.method != "near":
            return {}
        bands, rows = self.config.bands
        kind = {"signature": "image"} if self.config.images else {"num_perm": self.config.num_perm}
        return {"threshold": self.config.min_similarity, **kind, "bands": bands, "rows": rows}


@releasing
def link_group(group: int, spills: list[FileSpill], method: str, temporary: str) -> Linked:
    """A coarse group's buckets (`link_buckets`): exact edges spilled; near candidates and the
    signatures they need spilled."""
    name = f"group-{group:04d}"
    members = _members(group, spills)
    column = {c: members[c].to_numpy() for c in ("bucket", "band", "file", "content")}
    rows = link_buckets(column["bucket"], column["band"], column["content"], near=method == "near")
    edges = SpillWriter(child(temporary, "edges"), name, EDGE)
    if len(rows.copies):
        ends = [members.select(list(MEMBER_COLUMNS)).take(r) for r in (rows.kept, rows.copies)]
        edges.add_columns(np.zeros(len(rows.copies)), [c for t in ends for c in t.columns], size=0)
    candidates = SpillWriter(child(temporary, "candidates"), name, MEMBER)
    needs = SpillWriter(child(temporary, "needs"), name, NEED, max(1, len(spills)))
    if len(rows.candidates):
        candidates.add_columns(
            np.zeros(len(rows.candidates)), members.take(rows.candidates).columns, size=0
        )
        needs.add_columns(
            column["file"][rows.firsts],
            [members["key"].take(rows.firsts), np.full(len(rows.firsts), group)],
            size=0,
        )
    return Linked(
        group=group, edges=edges.close(), candidates=candidates.close(), needs=needs.close()
    )


def _members(group: int, spills: list[FileSpill]) -> pa.Table:
    """The group's member rows in (bucket, input order), each (bucket, member) once."""
    urls = [url for spill in sorted(spills, key=lambda s: s.index) for url in spill.members]
    table = pa.Table.from_batches(list(read_spill(urls, group, group + 1)), schema=MEMBER)
    table = table.sort_by(
        [("bucket", "ascending"), ("file", "ascending"), ("position", "ascending")]
    )
    keep = np.ones(len(table), bool)
    if len(table):
        same = [table[c].to_numpy() for c in ("bucket", "file", "position")]
        keep[1:] = ~np.logical_and.reduce([c[1:] == c[:-1] for c in same])
    return table.filter(pa.array(keep))


@releasing
def spill_signatures(
    spill: FileSpill, linked: list[Linked], config, urls: list[str], temporary: str
) -> list[str]:
    """The signatures (MinHash, or an image's) the coarse groups need of one input file's
    examples, by group."""
    needed: dict[str, set[int]] = defaultdict(set)
    for row in read_rows([u for g in linked for u in g.needs], spill.index, spill.index + 1):
        needed[row["key"]].add(row["group"])
    if not needed:
        return []
    out = SpillWriter(child(temporary, "signatures"), f"file-{spill.index:06d}", SIGNATURE, COARSE)
    wanted = pa.array(sorted(needed))
    batch = []
    for part in read_spill(spill.payloads):
        for row in part.filter(pc.is_in(part.column("key"), value_set=wanted)).to_pylist():
            batch.append(example_of(row, urls))
        if len(batch) >= BATCH:
            _sign(batch, needed, config, out)
            batch = []
    _sign(batch, needed, config, out)
    return out.close()


def _sign(batch, needed: dict[str, set[int]], config: DedupConfig, out: SpillWriter) -> None:
    for example, sig in zip(batch, fingerprints(batch, config), strict=True):
        if sig is not None:
            for group in sorted(needed[example.key]):
                out.add((example.key, sig.tobytes()), group, size=sig.nbytes + 88)


@releasing
def near_edges(
    linked: Linked, signed: Sequence[list[str]], config: DedupConfig, temporary: str
) -> list[str]:
    """A coarse group's near candidates linked on their signatures (`bucket_edges`)."""
    group = linked.group
    urls = [url for file_urls in signed for url in file_urls]
    sigs = {row["key"]: row["signature"] for row in read_rows(urls, group, group + 1)}
    by_bucket: dict[int, list[Member]] = defaultdict(list)
    for row in read_rows(linked.candidates):
        by_bucket[row["bucket"]].append(member_of(row))
    out = SpillWriter(child(temporary, "edges"), f"near-{group:04d}", EDGE)
    for members in by_bucket.values():
        for kept, copy in bucket_edges(members, sigs, config.min_similarity, config.similarities):
            out.add(edge_row(kept, copy))
    return out.close()


@releasing
def cluster_edges(urls: list[str], temporary: str, files: int) -> RemovedCopies:
    """Every edge → the copy graph's components, each keeping its first member in input order →
    the removed copies spilled by input file. The edges are read twice: their members' places
    (16 bytes an edge) for the components, then each member's key and content once."""
    urls = sorted(urls)
    edges = np.empty((0, 2), np.int64)
    pending = []
    wanted = [f"{side}_{c}" for side in SIDES for c in ("file", "position")]
    for batch in read_spill(urls, columns=wanted):
        pending.append(np.stack([_places(batch, side) for side in SIDES], axis=1))
        if sum(map(len, pending)) > COMPACT:  # a copy shares several bands: edges repeat
            edges, pending = _forest(np.concatenate([edges, *pending])), []
    ids, root = _components(np.concatenate([edges, *pending]))
    removed = np.flatnonzero(root != np.arange(len(ids)))
    if not len(removed):
        return RemovedCopies()
    keys, contents = _members_named(urls, ids)
    exact = contents[removed] == contents[root[removed]]
    out = SpillWriter(child(temporary, "removed"), "copies", REMOVED, max(1, files))
    for start in range(0, len(removed), BLOCK_ROWS):  # a run every 32 MiB
        rows = removed[start : start + BLOCK_ROWS]
        kinds = np.where(exact[start : start + BLOCK_ROWS], "exact", "near")
        out.add_columns(
            ids[rows] >> 40, [keys.take(rows), keys.take(root[rows]), kinds], size=100 * len(rows)
        )
    return RemovedCopies(
        removed=out.close(),
        exact=int(exact.sum()),
        near=int((~exact).sum()),
        cluster_sizes=cluster_sizes(root),
    )


def _components(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the members the edges name, sorted; each one's root as an index into them)."""
    ids, index = np.unique(edges.ravel(), return_inverse=True)
    index = index.reshape(edges.shape)
    return ids, components(index[:, 0], index[:, 1], len(ids))


def _forest(edges: np.ndarray) -> np.ndarray:
    """The same components with one edge per member that is not a root: at most as many edges
    as members, however many times the edges repeated."""
    ids, root = _components(edges)
    linked = np.flatnonzero(root != np.arange(len(ids)))
    return np.stack([ids[root[linked]], ids[linked]], axis=1)


def _places(batch: pa.RecordBatch, side: str) -> np.ndarray:
    """A side's members as (input file, position) packed in an int64, in input order."""
    file = batch.column(f"{side}_file").to_numpy().astype(np.int64)
    return file << 40 | batch.column(f"{side}_position").to_numpy()


def _members_named(urls: list[str], ids: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The key and content of each member `ids` names, from the first edge that holds it."""
    seen = np.zeros(len(ids), bool)
    found, keys, contents = [], [], []
    for batch in read_spill(urls):
        for side in SIDES:
            node, at = np.unique(np.searchsorted(ids, _places(batch, side)), return_index=True)
            new = ~seen[node]
            seen[node[new]] = True
            found.append(node[new])
            keys.append(batch.column(f"{side}_key").take(at[new]))
            contents.append(batch.column(f"{side}_content").to_numpy()[at[new]])
    order = np.argsort(np.concatenate(found))
    return pa.concat_arrays(keys).take(order), np.concatenate(contents)[order]


def _summary(copies: RemovedCopies, settings: dict, not_shingled: int) -> dict:
    """stats.json's `dedup`: the settings, the copies removed by kind, the cluster sizes, and
    the texts near-dedup could not shingle (deduplicated exactly instead)."""
    summary = {**settings, **copies.summary()}
    if settings["method"] == "near":
        summary["not_shingled"] = not_shingled
    if settings["method"] != "none":
        log.info(
            "dedup (%s): %d copies removed, in %d clusters",
            settings["method"],
            summary["duplicates"],
            summary["clusters"],
        )
    return summary
