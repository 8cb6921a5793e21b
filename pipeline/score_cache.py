"""The score cache inside the job: attach each example's cached model outputs before scoring,
and write the outputs scored afresh after (see `transforms/cache.py` for the layout).

Cached outputs are joined to examples by content id, so a re-run with the same teacher scores
only examples it has not seen (new raw data appended to the pool), and a duplicate is scored
once. When several parts hold an id (two runs scored it at once), the first part by name wins,
so the choice does not depend on the runner.
"""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam

from ..transforms.cache import (
    Candidate,
    ModelOutput,
    cache_parts,
    read_cache_part,
    write_cache_part,
)
from .handlers import Scored


def _list_parts(element: tuple[str, str], cache: str):
    role, fingerprint = element
    for url in cache_parts(cache, fingerprint):
        yield role, url


def _read_part(element: tuple[str, str]):
    role, url = element
    for example_id, output in read_cache_part(url):
        yield example_id, (role, url, output)


def _attach(element):
    _, joined = element
    cached: dict[str, dict[str, ModelOutput]] = {}
    for role, _url, output in sorted(joined["cached"], key=lambda c: (c[0], c[1])):
        cached.setdefault(role, {}).setdefault(output.precision, output)
    for example in joined["examples"]:
        yield Candidate(example=example, cached=cached)


class AttachCached(beam.PTransform):
    """PCollection[Example] → PCollection[Candidate]: each example with the outputs the cache
    holds for it, by model role and precision. Without a cache, or when it holds nothing for
    these models, every candidate starts with none (and there is no join)."""

    def __init__(self, cache: str | None, fingerprints: Mapping[str, str]) -> None:
        super().__init__()
        self.cache, self.fingerprints = cache, dict(fingerprints)

    def expand(self, examples):
        models = sorted(self.fingerprints.items())
        if self.cache is None or not any(cache_parts(self.cache, fp) for _, fp in models):
            return examples | "No cache" >> beam.Map(lambda ex: Candidate(example=ex))
        # Parts are listed by the job, not here: the graph stays small however many there are.
        cached = (
            examples.pipeline
            | "Models" >> beam.Create(models)
            | "List cache parts" >> beam.FlatMap(_list_parts, self.cache)
            | "Spread parts" >> beam.Reshuffle()
            | "Read cache" >> beam.FlatMap(_read_part)
        )
        by_id = examples | "By id" >> beam.Map(lambda ex: (ex.id, ex))
        return (
            {"examples": by_id, "cached": cached}
            | "Join cache" >> beam.CoGroupByKey()
            | "Attach" >> beam.FlatMap(_attach)
        )


def write_fresh(scored: Scored, cache: str, fingerprints: Mapping[str, str]) -> int:
    """Write a super-batch's newly scored outputs, a part per model; returns the rows written."""
    return sum(
        write_cache_part(cache, fingerprints[role], outputs)
        for role, outputs in sorted(scored.fresh.items())
    )
