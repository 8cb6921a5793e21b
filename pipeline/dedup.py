"""The dedup step of the curation job, before anything is scored (`transforms/dedup.py` says what
makes two examples copies).

    examples → their buckets (the exact content hash, or one LSH bucket per band) → group by
    bucket → edges from each bucket's first member to the others → every edge in one place →
    connected components → split the examples into the kept and the removed copies

Only small records (a bucket key and the example's file, position, key and content hash) travel
through the grouping, never the payloads. The components are computed on one worker from the edges
alone (at most one per removed copy and band), and the examples are split against the removed
copies as a side input: memory grows with the number of copies, not with the pool.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from ..transforms.dedup import (
    Copies,
    DedupConfig,
    Member,
    band_keys,
    clusters,
    content_hash,
    star_edges,
)
from ..transforms.manifest import duplicate_row
from ..transforms.records import Example

NAMESPACE = "jestflow"
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
        bucketed = examples | "Buckets" >> beam.FlatMap(
            buckets, self.config, self.method, self.index
        ).with_outputs("not_shingled", main="buckets")
        copies = (
            bucketed.buckets
            | "Group buckets" >> beam.GroupByKey()
            | "Edges" >> beam.FlatMap(lambda bucket: star_edges(bucket[1]))
            | "All edges" >> beam.combiners.ToList()
            | "Clusters" >> beam.Map(clusters)
        )
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

    def _settings(self) -> dict:
        if self.method != "near":
            return {}
        bands, rows = self.config.bands
        return {"threshold": self.config.threshold, "num_perm": self.config.num_perm,
                "bands": bands, "rows": rows}  # fmt: skip


def member(example: Example, index: dict[str, int]) -> Member:
    return Member(file=index[example.source], position=example.position, key=example.key,
                  content=content_hash(example))  # fmt: skip


def buckets(example: Example, config: DedupConfig, method: str, index: dict[str, int]):
    """(bucket, member) for each bucket of the example: its content hash (exact), its LSH bands
    (near), or its content hash when nothing is left to shingle (near; counted)."""
    m = member(example, index)
    keys = band_keys(example, config) if method == "near" else []
    if method == "near" and not keys:
        yield beam.pvalue.TaggedOutput("not_shingled", m.key)
    for key in keys or [m.content]:
        yield key, m


class _Split(beam.DoFn):
    def __init__(self, index: dict[str, int]) -> None:
        self.index = index

    def process(self, example: Example, copies: Copies):
        kept = copies.kept_of.get(example.key)
        if kept is None:
            yield example
            return
        Metrics.counter(NAMESPACE, "duplicates").inc()
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
