"""Super-batches that do not depend on arrival order or parallelism, and the shard groups that
read them.

Every example gets a 64-bit hash of (seed, key) — the key is the content id plus its source
position, so exact duplicates spread over super-batches the way a random draw would. Ordered by
(hash, key), example r of the pool is in super-batch r // B: every super-batch holds exactly B
examples except the last (the remainder), whatever the runner's bundles and workers were.

The job never sorts the whole pool. The hash space is cut into `BUCKETS` ordered buckets, and the
scored examples are spilled by bucket; counting the buckets gives each one its first rank. A shard
group (`per_group` consecutive super-batches) is a range of ranks, so it reads only the buckets
that overlap it, sorts them, and keeps its own ranks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BUCKETS = 1024  # ordered ranges of the hash space: the spill files' partitions


def key_hash(key: str, seed: int) -> int:
    """A 64-bit hash of an example key under a seed."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bucket_of(h: int, n_buckets: int = BUCKETS) -> int:
    """The bucket of a 64-bit hash; buckets are contiguous, ordered ranges of the hash space."""
    return (h * n_buckets) >> 64


@dataclass(frozen=True, kw_only=True)
class GroupRange:
    """Shard group `group`: ranks [first, end) of the pool, found in buckets [lo, hi)."""

    group: int
    first: int
    end: int
    lo: int
    hi: int
    offset: int  # the first rank in bucket lo


def group_ranges(
    counts: Mapping[int, int], *, size: int, per_group: int, n_buckets: int = BUCKETS
) -> list[GroupRange]:
    """Every shard group of a pool whose buckets hold `counts` examples (super-batches of `size`,
    `per_group` of them to a group)."""
    starts, total = [], 0
    for bucket in range(n_buckets):
        starts.append(total)
        total += counts.get(bucket, 0)
    ranges = []
    span = size * per_group
    for group in range(math.ceil(total / span)):
        first, end = group * span, min((group + 1) * span, total)
        lo = _bucket_at(starts, counts, first)
        hi = _bucket_at(starts, counts, end - 1) + 1
        ranges.append(
            GroupRange(group=group, first=first, end=end, lo=lo, hi=hi, offset=starts[lo])
        )
    return ranges


def _bucket_at(starts: list[int], counts: Mapping[int, int], rank: int) -> int:
    """The bucket holding rank `rank` (the last bucket starting at or before it that is not
    empty)."""
    lo, hi = 0, len(starts)
    while hi - lo > 1:  # the last bucket whose start is ≤ rank
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if starts[mid] <= rank else (lo, mid)
    while counts.get(lo, 0) == 0:  # empty buckets share their start with the next one
        lo += 1
    return lo


def ranked(rows: Iterable[dict[str, Any]], span: GroupRange, size: int) -> dict[int, list]:
    """A shard group's rows by super-batch, each in (hash, key) order: `rows` are every row of
    buckets [lo, hi), with their `hash` and `key`."""
    ordered = sorted(rows, key=lambda row: (row["hash"], row["key"]))
    batches: dict[int, list] = {}
    for rank, row in enumerate(ordered, start=span.offset):
        if span.first <= rank < span.end:
            batches.setdefault(rank // size, []).append(row)
    return batches
