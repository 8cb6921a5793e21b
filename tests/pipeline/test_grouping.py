"""Super-batch membership depends on the examples and the seed only: the shard groups, each
reading only the buckets that overlap its range of the hash space, rebuild exactly the
super-batches of the whole pool, whatever the bucket count and the order the examples came in;
and an edit of the pool moves only the edited examples."""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import pairwise

import pytest

from jestflow.transforms.readers import read_file
from jestflow.transforms.records import FieldMap, make_example
from jestflow.transforms.selection.super_batches import (
    bucket_of,
    group_ranges,
    key_hash,
    ranked,
    super_batch_count,
)

EXAMPLES = [  # 50 documents twice: the copies are their second occurrence in the file
    make_example(
        layout="text", text=f"doc {i % 250}", source="a.jsonl", position=i, occurrence=i // 250
    )
    for i in range(300)
]


def expected(examples, size: int, seed: int) -> dict[int, list[str]]:
    """The super-batches by definition: K from the pool's size, each a range of the hash space."""
    count = super_batch_count(len(examples), size)
    batches: dict[int, list] = {}
    for ex in sorted(examples, key=lambda ex: (key_hash(ex.key, seed), ex.key)):
        h = key_hash(ex.key, seed)
        assert h < 2**64
        batches.setdefault(h * count // 2**64, []).append(ex.key)
    return dict(sorted(batches.items()))


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
        for batch, members in ranked(read, span).items():
            assert batch not in batches  # each super-batch belongs to one group
            batches[batch] = [row["key"] for row in members]
    return dict(sorted(batches.items())), spans


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
    want = expected(EXAMPLES, 64, 5)
    assert got == want
    assert sorted(k for keys in got.values() for k in keys) == sorted(e.key for e in EXAMPLES)
    assert len(want) == 5  # 300 / 64 = 4.7 → 5 super-batches of 60 on average
    assert [s.group for s in spans] == list(range(len(spans)))
    assert spans[-1].end == 5


def test_groups_read_only_the_buckets_that_overlap_their_range():
    _, spans = by_groups(EXAMPLES, 16, 5, 2, 1024)  # 20 super-batches, 10 groups
    assert len(spans) == 10
    used = {bucket_of(key_hash(ex.key, 5)) for ex in EXAMPLES}
    read = sum(len(used & set(range(s.lo, s.hi))) for s in spans)
    assert read <= len(used) + len(spans)  # a boundary bucket is read by two groups at most
    assert all(a.hi - 1 <= b.lo for a, b in pairwise(spans))


def test_an_empty_pool_or_an_empty_group_has_nothing_to_read():
    assert group_ranges(Counter(), size=8, per_group=2) == []
    # 40 examples of super-batches of 8: 5 super-batches, one per group, over 8 buckets; only
    # buckets 0 and 7 hold examples, so groups 1–3 (buckets 1–6) are left out
    spans = group_ranges(Counter({0: 20, 7: 20}), size=8, per_group=1, n_buckets=8)
    assert [s.group for s in spans] == [0, 4]


def test_the_super_batch_count_is_on_a_grid():
    assert [super_batch_count(n, 10) for n in (1, 10, 11, 20, 21, 120, 121)] == [
        1,
        1,
        2,
        2,
        3,
        12,
        13,
    ]
    counts = [super_batch_count(n, 1024) for n in range(1, 3_000_000, 997)]
    for n, k in zip(range(1, 3_000_000, 997), counts, strict=True):
        assert n / k <= 1024  # at most B on average …
        assert k <= 12 or n / k > 1024 / 1.125  # … and more than B / 1.125 above 12
    steps = sorted(set(counts))
    assert steps[:12] == list(range(1, 13)) and all(b / a <= 1.125 for a, b in pairwise(steps[11:]))
    # 12,024 examples of 1,024: 12 super-batches, whether 12 are added or removed
    assert {super_batch_count(n, 1024) for n in range(12_012, 12_037)} == {12}


def test_an_edit_moves_only_the_edited_examples():
    """Membership of the others is kept: same super-batch, same neighbours, whatever was edited,
    added or removed, while the count does not change."""
    examples = [
        make_example(layout="text", text=f"text {i}", source="a.jsonl", position=i)
        for i in range(2_000)
    ]
    edited = list(examples)
    for i in (5, 700, 1_500):
        edited[i] = make_example(layout="text", text=f"edited {i}", source="a.jsonl", position=i)
    del edited[1_200]
    edited.append(make_example(layout="text", text="new", source="a.jsonl", position=2_000))
    before, after = expected(examples, 100, 0), expected(edited, 100, 0)
    assert len(before) == len(after) == 20
    changed = {e.key for e in examples} ^ {e.key for e in edited}
    assert len(changed) == 8  # 3 edits (old and new), one removed, one added
    for s in before:
        assert [k for k in before[s] if k not in changed] == [
            k for k in after[s] if k not in changed
        ]


def test_exact_duplicates_spread_like_a_random_draw():
    batches = expected(EXAMPLES, 64, 5)
    assert expected(EXAMPLES, 64, 6) != batches  # the seed reshuffles membership
    # Exact duplicates (same text, so the same id) spread like a random draw: most copies of a
    # duplicated document land in different super-batches (same batch by chance: about 1 in 5).
    batch_of = {key: batch for batch, members in batches.items() for key in members}
    copies: dict[str, list[int]] = {}
    for ex in EXAMPLES:
        copies.setdefault(ex.id, []).append(batch_of[ex.key])
    pairs = [found for found in copies.values() if len(found) == 2]
    assert len(pairs) == 50 and sum(a != b for a, b in pairs) >= 30
    assert sorted({bucket_of(key_hash(ex.key, 5), 8) for ex in EXAMPLES}) == list(range(8))


def test_keys_count_copies_in_a_file_and_ignore_positions(tmp_path):
    texts = ["a", "b", "a", "c", "a", "b"]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    first = list(read_file(str(path), FieldMap(text="text")))
    assert [e.occurrence for e in first] == [0, 0, 1, 0, 2, 1]
    assert len({e.key for e in first}) == 6  # copies share the id, not the key
    # a line inserted at the top and one removed in the middle: every other key is kept
    path.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["new", *texts[:3], "c", *texts[5:]])
    )
    second = {e.key for e in read_file(str(path), FieldMap(text="text"))}
    assert {e.key for e in first} - second == {first[4].key}  # the third "a" is gone
    assert len(second - {e.key for e in first}) == 1  # "new"
