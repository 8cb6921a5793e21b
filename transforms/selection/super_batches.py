"""Super-batches that do not depend on arrival order or parallelism, and stay put when the pool is
edited; the shard groups that read them.

Every example gets a 64-bit hash of (seed, key) — the key is the content id plus its source and
its occurrence there, so exact duplicates spread over super-batches the way a random draw would.
A pool of N examples is cut into K super-batches, K = `super_batch_count(N, B)`, and super-batch s
is the fixed range [s/K, (s+1)/K) of the hash space: an example's super-batch is a function of its
own hash and K alone. An edited, added or removed record moves only itself; every other example
keeps its super-batch and its neighbours. Sizes vary around N/K ≤ B like a binomial draw (±√B),
and each super-batch's budget comes from its actual size (`kept_count`).

K is the smallest count on the grid {⌈2^(j/8)⌉: j = 0, 1, …} that gives super-batches of at most B
on average: every whole number up to 12, then steps of about 9 % (at most 12.5 %). K changes only
when N crosses a step (so a 0.1 % change of N moves it in about one pool of 90), and then the mean
size goes from about B to about B/1.09.

The job never sorts the whole pool. The hash space is also cut into `BUCKETS` ordered buckets, and
the scored examples are spilled by bucket. A shard group (`per_group` consecutive super-batches)
is a range of the hash space, so it reads only the buckets that overlap it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BUCKETS = 1024  # ordered ranges of the hash space: the spill files' partitions
GRID = 8  # super-batch counts ⌈2^(j/GRID)⌉


def key_hash(key: str, seed: int) -> int:
    """A 64-bit hash of an example key under a seed."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bucket_of(h: int, n_buckets: int = BUCKETS) -> int:
    """The bucket of a 64-bit hash; buckets are contiguous, ordered ranges of the hash space."""
    return (h * n_buckets) >> 64


def super_batch_of(h: int, count: int) -> int:
    """The super-batch of a 64-bit hash in a pool cut into `count` super-batches."""
    return (h * count) >> 64


def super_batch_count(n: int, size: int) -> int:
    """How many super-batches a pool of n examples is cut into: the smallest ⌈2^(j/8)⌉ with at most
    `size` examples a super-batch on average (integers only: the same count on every machine)."""
    if n <= size:
        return 1
    j = max(0, GRID * (math.ceil(n / size).bit_length() - 2))  # a grid point below the answer
    while (count := _grid(j)) * size < n:
        j += 1
    return count


def _grid(j: int) -> int:
    """⌈2^(j/GRID)⌉, exactly."""
    power = 1 << j
    root = math.isqrt(math.isqrt(math.isqrt(power)))  # ⌊power^(1/8)⌋: GRID = 8
    return root if root**GRID == power else root + 1


def _first_hash(s: int, count: int) -> int:
    """The smallest hash of super-batch s (2^64 for s = count)."""
    return -(-(s << 64) // count)


@dataclass(frozen=True, kw_only=True)
class GroupRange:
    """Shard group `group`: super-batches [first, end) of `count`, found in buckets [lo, hi)."""

    group: int
    first: int
    end: int
    count: int
    lo: int
    hi: int


def group_ranges(
    counts: Mapping[int, int], *, size: int, per_group: int, n_buckets: int = BUCKETS
) -> list[GroupRange]:
    """Every shard group of a pool whose buckets hold `counts` examples (super-batches of at most
    `size` on average, `per_group` of them to a group); a group whose buckets are empty has
    nothing to select and is left out."""
    total = sum(counts.values())
    if total == 0:
        return []
    count = super_batch_count(total, size)
    ranges = []
    for group in range(math.ceil(count / per_group)):
        first, end = group * per_group, min((group + 1) * per_group, count)
        lo = bucket_of(_first_hash(first, count), n_buckets)
        hi = bucket_of(_first_hash(end, count) - 1, n_buckets) + 1
        if any(counts.get(b, 0) for b in range(lo, hi)):
            ranges.append(GroupRange(group=group, first=first, end=end, count=count, lo=lo, hi=hi))
    return ranges


def ranked(rows: Iterable[dict[str, Any]], span: GroupRange) -> dict[int, list]:
    """A shard group's rows by super-batch, each in (hash, key) order: `rows` are every row of
    buckets [lo, hi), with their `hash` and `key`."""
    batches: dict[int, list] = {}
    for row in sorted(rows, key=lambda row: (row["hash"], row["key"])):
        s = super_batch_of(row["hash"], span.count)
        if span.first <= s < span.end:
            batches.setdefault(s, []).append(row)
    return batches
