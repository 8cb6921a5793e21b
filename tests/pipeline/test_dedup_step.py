"""The dedup step's last stage on its own: clusters from edge spill files, read as arrays (and cut
down to a forest as they come in), are the clusters of the same edges held as Python objects."""

from __future__ import annotations

import numpy as np
import pytest

import jestflow.pipeline.dedup_step as dedup
from jestflow.transforms.dedup.copies import Member, clusters
from jestflow.transforms.spill.dedup_rows import EDGE, edge_row
from jestflow.transforms.spill.files import SpillWriter


@pytest.mark.parametrize("compact", [1 << 20, 5])
def test_clusters_from_edge_spills_are_the_clusters_of_the_edges(tmp_path, monkeypatch, compact):
    monkeypatch.setattr(dedup, "COMPACT", compact)
    monkeypatch.setattr(dedup, "BLOCK_ROWS", min(compact, 2048))  # the removed copies in slices
    rng = np.random.default_rng(3)
    members = [
        Member(file=int(f), position=int(p), key=f"k{f}-{p}", content=int(rng.integers(0, 3)))
        for f, p in zip(rng.integers(0, 4, 300), rng.permutation(300) * 7, strict=True)
    ]
    edges = []
    for _ in range(400):  # repeated and in any order, as the bands give them
        a, b = sorted(rng.choice(len(members), 2, replace=False))
        a, b = sorted((members[a], members[b]))
        edges.append((a, b))
    urls = []
    for part in range(3):
        writer = SpillWriter(str(tmp_path / "edges"), f"group-{part:04d}", EDGE)
        for kept, copy in edges[part::3] * 2:
            writer.add(edge_row(kept, copy))
        urls += writer.close()
    got = dedup.cluster_edges(urls, str(tmp_path), files=4)
    expected = clusters(edges)
    assert got.duplicates == len(expected.kept_of) > 100
    assert got.cluster_sizes == expected.cluster_sizes
    removed = {}
    for file in range(4):
        removed |= dedup.removed_of(got, file)
    assert removed == {
        key: (kept.key, expected.kinds[key]) for key, kept in expected.kept_of.items()
    }
    assert (
        got.exact == sum(k == "exact" for k in expected.kinds.values()) == got.duplicates - got.near
    )


def test_no_edges_no_copies(tmp_path):
    assert dedup.cluster_edges([], str(tmp_path), files=2) == dedup.RemovedCopies()
