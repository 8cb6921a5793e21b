"""Grouping examples into super-batches that do not depend on arrival order or parallelism.

Every example gets a 64-bit hash of (seed, key) — the key is the content id plus its source
position, so exact duplicates spread over super-batches the way a random draw would. The hash
space is cut into ordered buckets; counting the buckets gives each one its offset, sorting inside
a bucket gives each example its exact rank in hash order, and rank // B is its super-batch. So
every super-batch holds exactly B examples except the last (the remainder), each sorted by
(hash, key), whatever the runner's bundles and workers were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import apache_beam as beam

from ..transforms.cache import Candidate
from ..transforms.records import Example


def key_hash(key: str, seed: int) -> int:
    """A 64-bit hash of an example key under a seed."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bucket_of(h: int, n_buckets: int) -> int:
    """The bucket of a 64-bit hash; buckets are contiguous, ordered ranges of the hash space."""
    return (h * n_buckets) >> 64


class _RankInBucket(beam.DoFn):
    """(bucket, examples) → (super-batch, (rank, example)) using the bucket offsets."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed

    def process(self, element, counts: Mapping[int, int]):
        bucket, examples = element
        offset = sum(count for other, count in counts.items() if other < bucket)
        ordered = sorted(examples, key=lambda ex: (key_hash(ex.key, self.seed), ex.key))
        for rank, example in enumerate(ordered, start=offset):
            yield rank // self.size, (rank, example)


def _sorted_batch(element) -> tuple[int, list[Example | Candidate]]:
    super_batch, ranked = element
    return super_batch, [example for _, example in sorted(ranked, key=lambda item: item[0])]


class AssignSuperBatches(beam.PTransform):
    """PCollection[Example] → PCollection[(super-batch id, [Example] in a fixed order)]; any
    element with the example's `key` (a `Candidate`) groups the same way."""

    def __init__(self, size: int, *, seed: int = 0, n_buckets: int = 1024) -> None:
        super().__init__()
        if size < 1 or n_buckets < 1:
            raise ValueError("super-batch size and bucket count must be positive")
        self.size, self.seed, self.n_buckets = size, seed, n_buckets

    def expand(self, examples):
        bucketed = examples | "Bucket" >> beam.Map(
            lambda ex: (bucket_of(key_hash(ex.key, self.seed), self.n_buckets), ex)
        )
        counts = (
            bucketed
            | "One per example" >> beam.Map(lambda kv: (kv[0], 1))
            | "Count per bucket" >> beam.CombinePerKey(sum)
        )
        return (
            bucketed
            | "Group buckets" >> beam.GroupByKey()
            | "Rank" >> beam.ParDo(_RankInBucket(self.size, self.seed), beam.pvalue.AsDict(counts))
            | "Group super-batches" >> beam.GroupByKey()
            | "Sort super-batches" >> beam.Map(_sorted_batch)
        )
