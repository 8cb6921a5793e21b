"""Semantic dedup's core (`transforms/dedup/semantic.py`): the vectors, k-means, and the copies
inside a cluster (planted copies removed with the first kept, distinct examples kept, the same
answer whatever order the sample came in or however the blocks fall)."""

from __future__ import annotations

import numpy as np
import pytest

from jestflow.transforms.dedup import semantic
from jestflow.transforms.dedup.semantic import (
    SemanticConfig,
    assign,
    cluster_count,
    find_copies,
    fit_centroids,
    sample_size,
    vectors,
)
from jestflow.transforms.errors import JestflowError


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def pool(n=300, d=32, copies=40, noise=0.01, seed=0):
    """n distinct pair embeddings [n, 2, d] and `copies` planted near copies of some of them,
    shuffled in: (embeddings, for each row the row it copies or itself)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 2, d))
    sources = rng.choice(n, copies, replace=False)
    planted = base[sources] + noise * rng.normal(size=(copies, 2, d))
    every = np.concatenate([base, planted])
    original = np.concatenate([np.arange(n), sources])
    order = rng.permutation(len(every))
    # the copy that comes first in the shuffled order is the one kept
    first = {}
    for at, row in enumerate(order):
        first.setdefault(original[row], at)
    return every[order], np.array([first[original[row]] for row in order])


def test_vectors_are_unit_and_their_cosine_is_the_mean_of_the_sides():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 2, 16)) * [[3], [0.5]]
    v = vectors(np.stack([a, b]))
    assert v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    sides = [float(unit(a[s]) @ unit(b[s])) for s in range(2)]
    assert float(v[0] @ v[1]) == pytest.approx(np.mean(sides), abs=1e-6)


def test_planted_copies_are_removed_and_the_first_is_kept():
    embeddings, expected = pool()
    kept_of = find_copies(vectors(embeddings), 0.95)
    assert kept_of.tolist() == expected.tolist()
    assert (kept_of != np.arange(len(kept_of))).sum() == 40


def test_every_copy_is_within_the_threshold_of_the_member_kept():
    rng = np.random.default_rng(2)
    # a chain: each point close to the one before, the ends far apart
    angles = np.linspace(0, 1.2, 40)
    side = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x = vectors(np.stack([side, side], axis=1) + 1e-9 * rng.normal(size=(40, 2, 2)))
    kept_of = find_copies(x, 0.99)
    cos = (x * x[kept_of]).sum(axis=1)
    assert (cos >= 0.99 - 1e-6).all()
    assert len(set(kept_of.tolist())) > 1  # no chain merges the far ends
    assert (kept_of <= np.arange(40)).all() and (kept_of[kept_of] == kept_of).all()


def test_blocks_do_not_change_the_copies(monkeypatch):
    embeddings, expected = pool(n=500, copies=120, seed=3)
    x = vectors(embeddings)
    whole = find_copies(x, 0.95)
    monkeypatch.setattr(semantic, "BLOCK", 7)
    assert find_copies(x, 0.95).tolist() == whole.tolist() == expected.tolist()


def test_distinct_examples_are_kept():
    rng = np.random.default_rng(4)
    x = vectors(rng.normal(size=(400, 2, 64)))
    assert find_copies(x, 0.9).tolist() == list(range(400))


def test_kmeans_is_seeded_and_does_not_depend_on_the_order_of_assignment():
    rng = np.random.default_rng(5)
    centres = unit(rng.normal(size=(6, 2, 16)))
    points = centres[rng.integers(6, size=600)] + 0.05 * rng.normal(size=(600, 2, 16))
    x = vectors(points)
    c = fit_centroids(x, 6, seed=1)
    assert np.array_equal(c, fit_centroids(x, 6, seed=1))
    labels = assign(x, c)
    assert len(set(labels.tolist())) == 6
    order = rng.permutation(600)
    assert np.array_equal(assign(x[order], c), labels[order])  # a row's cluster is its own
    # points of one planted centre share a cluster
    truth = np.argmax(x @ vectors(centres).T, axis=1)
    assert all(len(set(labels[truth == t].tolist())) == 1 for t in range(6))


def test_copies_found_per_cluster_are_the_copies_of_the_whole():
    embeddings, expected = pool(n=400, copies=80, noise=0.002, seed=6)
    x = vectors(embeddings)
    labels = assign(x, fit_centroids(x[:200], 8, seed=1))
    kept_of = np.arange(len(x))
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)  # in input order
        kept_of[members] = members[find_copies(x[members], 0.95)]
    assert kept_of.tolist() == expected.tolist()


def test_defaults_and_checks():
    assert cluster_count(0) == 1 and cluster_count(500) == 1 and cluster_count(5000) == 5
    assert cluster_count(10**8) == semantic.MAX_CLUSTERS and cluster_count(50, 80) == 50
    assert sample_size(500, 1) == 500 and sample_size(10**6, 1024) == 32 * 1024
    assert not SemanticConfig().enabled and SemanticConfig(threshold=0.9).enabled
    for bad in ({"threshold": 0.0}, {"threshold": 1.0}, {"threshold": 0.9, "clusters": 0}):
        with pytest.raises(JestflowError):
            SemanticConfig(**bad)
    with pytest.raises(JestflowError, match="off"):
        SemanticConfig(clusters=4)
