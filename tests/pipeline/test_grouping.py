"""Super-batch membership depends on the examples and the seed only: the shard groups, each
reading only the buckets that hold its ranks, rebuild exactly the super-batches of a global sort,
whatever the bucket count and the order the examples came in."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from jestflow.transforms.records import make_example
from jestflow.transforms.selection.super_batches import bucket_of, group_ranges, key_hash, ranked

EXAMPLES = [
    make_example(layout="text", text=f"doc {i % 250}", source="a.jsonl", position=i)
    for i in range(300)
]


def expected(size: int, seed: int) -> list[tuple[int, list[str]]]:
    ordered = sorted(EXAMPLES, key=lambda ex: (key_hash(ex.key, seed), ex.key))
    return [
        (i // size, [ex.key for ex in ordered[i : i + size]]) for i in range(0, len(ordered), size)
    ]


def by_groups(examples, size, seed, per_group, n_buckets):
    """What the job does: rows spilled by bucket, each group reading its buckets' rows."""
    rows = [{"hash": key_hash(ex.key, seed), "key": ex.key} for ex in examples]
    buckets: dict[int, list] = {}
    for row in rows:
        buckets.setdefault(bucket_of(row["hash"], n_buckets), []).append(row)
    counts = Counter({b: len(found) for b, found in buckets.items()})
    batches = {}
    spans = group_ranges(counts, size=size, per_group=per_group, n_buckets=n_buckets)
    for span in spans:
        read = [row for b in range(span.lo, span.hi) for row in buckets.get(b, [])]
        random.Random(span.group).shuffle(read)  # spill files come in any order
        for batch, members in ranked(read, span, size).items():
            assert batch not in batches  # each super-batch belongs to one group
            batches[batch] = [row["key"] for row in members]
    return sorted(batches.items()), spans


@pytest.mark.parametrize(
    ("per_group", "n_buckets", "shuffle_seed"),
    [(1, 16, 0), (2, 7, 1), (3, 1, 2), (1, 1024, 3), (10, 64, 4)],
)
def test_super_batches_are_exact_and_independent_of_order_and_buckets(
    per_group, n_buckets, shuffle_seed
):
    examples = list(EXAMPLES)
    random.Random(shuffle_seed).shuffle(examples)
    got, spans = by_groups(examples, 64, 5, per_group, n_buckets)
    assert got == expected(64, 5)  # 4 × 64 and a rest of 44
    assert [s.group for s in spans] == list(range(len(spans)))
    assert spans[-1].end == len(EXAMPLES)


def test_groups_read_only_the_buckets_that_hold_their_ranks():
    _, spans = by_groups(EXAMPLES, 16, 5, 2, 1024)  # 10 groups of 32 ranks over 1,024 buckets
    assert len(spans) == 10
    used = {bucket_of(key_hash(ex.key, 5)) for ex in EXAMPLES}
    read = sum(len(used & set(range(s.lo, s.hi))) for s in spans)
    assert read <= len(used) + len(spans)  # a boundary bucket is read by two groups at most
    assert all(s.lo in used and s.hi - 1 in used for s in spans)  # no empty bucket at an end


def test_an_empty_pool_has_no_group():
    assert group_ranges(Counter(), size=8, per_group=2) == []


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
