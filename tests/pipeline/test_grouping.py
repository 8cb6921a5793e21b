"""Super-batch membership depends on the examples and the seed only, not on order or workers."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from jestflow.pipeline.grouping import AssignSuperBatches, bucket_of, key_hash
from jestflow.transforms.records import make_example

EXAMPLES = [
    make_example(layout="text", text=f"doc {i % 250}", source="a.jsonl", position=i)
    for i in range(300)
]


def expected(size: int, seed: int) -> list[tuple[int, list[str]]]:
    ordered = sorted(EXAMPLES, key=lambda ex: (key_hash(ex.key, seed), ex.key))
    return [
        (i // size, [ex.key for ex in ordered[i : i + size]]) for i in range(0, len(ordered), size)
    ]


def run(examples, size, seed, workers, n_buckets):
    options = PipelineOptions(direct_num_workers=workers, direct_running_mode="multi_processing")
    with TestPipeline(runner=FnApiRunner(), options=options) as p:
        batches = (
            p
            | beam.Create(examples, reshuffle=False)
            | AssignSuperBatches(size, seed=seed, n_buckets=n_buckets)
            | beam.MapTuple(lambda batch, members: (batch, [ex.key for ex in members]))
        )
        assert_that(batches, equal_to(expected(size, seed)))


@pytest.mark.parametrize(
    ("workers", "n_buckets", "shuffle_seed"), [(1, 16, 0), (2, 7, 1), (2, 1, 2)]
)
def test_super_batches_are_exact_and_independent_of_order_and_workers(
    workers, n_buckets, shuffle_seed
):
    examples = list(EXAMPLES)
    random.Random(shuffle_seed).shuffle(examples)
    run(examples, size=64, seed=5, workers=workers, n_buckets=n_buckets)  # 4 × 64 and a rest of 44


def test_expected_layout_itself():
    batches = expected(64, 5)
    assert [len(members) for _, members in batches] == [64, 64, 64, 64, 44]
    assert expected(64, 6) != batches  # the seed reshuffles membership
    # Exact duplicates (same text, so the same id) spread like a random draw: most copies of a
    # duplicated document land in different super-batches (same batch by chance: about 1 in 5).
    batch_of = {key: batch for batch, members in batches for key in members}
    copies: dict[str, list[int]] = {}
    for ex in EXAMPLES:
        copies.setdefault(ex.id, []).append(batch_of[ex.key])
    pairs = [found for found in copies.values() if len(found) == 2]
    assert len(pairs) == 50 and sum(a != b for a, b in pairs) >= 30
    assert sorted({bucket_of(key_hash(ex.key, 5), 8) for ex in EXAMPLES}) == list(range(8))
