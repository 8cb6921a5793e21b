"""Semantic duplicates (SemDeDup), after scoring: examples whose teacher embeddings are nearly
the same, though their bytes differ (a resized or re-encoded image, a reworded caption).

- **The vector**: a contrastive teacher gives each example a pair of embeddings (left: the
  text or query; right: the image or document). Each side is L2-normalised and the two are
  concatenated and scaled by 1/√2, so the cosine of two examples' vectors is the mean of their
  two sides' cosines: two pairs are copies when both halves agree (the same image under another
  caption is a different training pair).
- **Clusters** (k-means, as SemDeDup does, so that no n × n matrix is ever made): centroids fit
  on a sample — the first `sample_size(k)` examples in the run's hash order, already a random
  permutation of the pool — by k-means++ seeding and Lloyd's iterations in float64 with a fixed
  seed (`fit_centroids`); every example joins its nearest centroid (`assign`).
- **Copies inside a cluster** (`find_copies`): its members in input order (the lowest input file
  index, position first), each one a copy of the first earlier *kept* member whose cosine with
  it is at least the threshold, else kept. So every removed copy is within the threshold of the
  copy kept in its place (no chains), and the copy kept is the first in input order, as exact
  and near dedup keep theirs. Computed in blocks: a block against the members kept before it,
  then inside the block.

Everything is numpy on arrays whose order comes from the data, so the result does not depend on
the workers, bundles or the order rows arrived in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import JestflowError

CLUSTER_SIZE = 1000  # the default k aims at clusters of this many examples …
MAX_CLUSTERS = 1024  # … up to this many clusters (more: `clusters`)
SAMPLE_PER_CLUSTER = 32  # sample examples k-means sees per centroid …
MIN_SAMPLE = 10_000  # … and at least this many (or the whole pool)
ITERATIONS = 30  # Lloyd's iterations at most
BLOCK = 1024  # rows compared at a time


@dataclass(frozen=True, kw_only=True)
class SemanticConfig:
    threshold: float | None = None  # cosine similarity that makes copies; None: off
    clusters: int | None = None  # k of k-means; None: `cluster_count` of the pool's size
    seed: int = 1  # k-means seeding (not the run's seed)

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise JestflowError(
                f"the semantic dedup threshold must be in (0, 1), got {self.threshold}"
            )
        if self.clusters is not None and self.clusters < 1:
            raise JestflowError(f"semantic clusters must be at least 1, not {self.clusters}")
        if self.clusters is not None and self.threshold is None:
            raise JestflowError(
                "semantic clusters are set but semantic dedup is off (no threshold)"
            )

    @property
    def enabled(self) -> bool:
        return self.threshold is not None


def cluster_count(n: int, clusters: int | None = None) -> int:
    """k for a pool of n examples: `clusters` when given, else about one per CLUSTER_SIZE
    examples, at most MAX_CLUSTERS; never more than n (and at least 1)."""
    k = clusters if clusters is not None else min(MAX_CLUSTERS, math.ceil(n / CLUSTER_SIZE))
    return max(1, min(k, n))


def sample_size(n: int, k: int) -> int:
    """The examples k-means is fit on: SAMPLE_PER_CLUSTER per centroid, at least MIN_SAMPLE,
    at most the pool."""
    return min(n, max(MIN_SAMPLE, SAMPLE_PER_CLUSTER * k))


def vectors(embeddings: np.ndarray) -> np.ndarray:
    """[n, 2, d] pair embeddings → [n, 2d] float32 unit vectors: each side normalised, the two
    concatenated over √2 (the cosine of two vectors is the mean of their sides' cosines)."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 3 or e.shape[1] != 2:
        raise ValueError(f"pair embeddings must be [n, 2, d], got {e.shape}")
    norms = np.linalg.norm(e, axis=2, keepdims=True)
    e = e / np.where(norms > 0, norms, 1) / math.sqrt(2)
    return e.reshape(len(e), -1).astype(np.float32)


def fit_centroids(sample: np.ndarray, k: int, seed: int, iterations: int = ITERATIONS):
    """k centroids of `sample` (rows in a fixed order): k-means++ seeding from a generator of
    `seed`, then Lloyd's iterations in float64 until no assignment moves; a centroid left
    without members keeps its place."""
    x = np.asarray(sample, np.float64)
    k = max(1, min(k, len(x)))
    centroids = _seed_centroids(x, k, np.random.default_rng(seed))
    labels = None
    for _ in range(iterations):
        new = assign(x, centroids)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        order = np.argsort(labels, kind="stable")  # members by cluster, each in sample order
        filled, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
        centroids[filled] = np.add.reduceat(x[order], starts, axis=0) / sizes[:, None]
    return centroids


def _seed_centroids(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: the first centroid at random, each next one drawn ∝ squared distance."""
    norms = (x**2).sum(axis=1)

    def distances(i: int) -> np.ndarray:  # squared, from x[i] to every row
        return np.maximum(norms + norms[i] - 2 * (x @ x[i]), 0)

    chosen = [int(rng.integers(len(x)))]
    nearest = distances(chosen[0])
    for _ in range(1, k):
        total = nearest.sum()
        if total <= 0:  # fewer distinct points than k: repeat the first
            chosen.append(chosen[0])
            continue
        pick = int(np.searchsorted(np.cumsum(nearest), rng.random() * total, side="right"))
        pick = min(pick, len(x) - 1)
        chosen.append(pick)
        nearest = np.minimum(nearest, distances(pick))
    return x[chosen].copy()


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's nearest centroid (squared Euclidean distance in float64; ties to the lower
    index), BLOCK rows at a time."""
    c = np.asarray(centroids, np.float64)
    c_norms = (c**2).sum(axis=1)
    labels = np.empty(len(x), np.int64)
    for start in range(0, len(x), BLOCK):
        block = np.asarray(x[start : start + BLOCK], np.float64)
        distances = c_norms[None, :] - 2 * block @ c.T
        labels[start : start + BLOCK] = distances.argmin(axis=1)
    return labels


def find_copies(x: np.ndarray, threshold: float) -> np.ndarray:
    """A cluster's members (unit vectors, in input order) → for each, the index of the member
    kept in its place (itself when kept): the first earlier kept member with cosine ≥
    `threshold`. Blocks of BLOCK rows against the members kept before them, then in order inside
    the block: never more than BLOCK × BLOCK similarities at once."""
    x = np.asarray(x, np.float32)
    kept_of = np.arange(len(x))
    kept: list[int] = []  # the members kept so far, in input order
    for start in range(0, len(x), BLOCK):
        block = x[start : start + BLOCK]
        first = _first_earlier(block, x, kept, threshold)
        inner = block @ block.T
        new: list[int] = []  # rows of this block kept
        for row in range(len(block)):
            if first[row] < 0 and new:
                hits = np.flatnonzero(inner[row, new] >= threshold)
                if len(hits):
                    first[row] = start + new[hits[0]]
            if first[row] < 0:
                new.append(row)
            else:
                kept_of[start + row] = first[row]
        kept += [start + row for row in new]
    return kept_of


def _first_earlier(block: np.ndarray, x: np.ndarray, kept: list[int], threshold: float):
    """For each row of `block`, the first of `kept` (indices into x, increasing) with cosine ≥
    threshold, or -1."""
    first = np.full(len(block), -1, np.int64)
    for start in range(0, len(kept), BLOCK):
        columns = kept[start : start + BLOCK]
        hits = block @ x[columns].T >= threshold
        found = (first < 0) & hits.any(axis=1)
        first[found] = np.asarray(columns)[hits[found].argmax(axis=1)]
    return first
