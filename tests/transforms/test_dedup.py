"""What makes two examples copies, and how copies form clusters (transforms/dedup.py)."""

from __future__ import annotations

import random

import pytest

from jestflow.transforms.dedup import (
    DedupConfig,
    Member,
    band_keys,
    clusters,
    content_hash,
    lsh_bands,
    normalise,
    shingles,
    star_edges,
)
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.records import make_example

NEAR = DedupConfig()
TEXT = (
    "Return a new list containing all items from the iterable in ascending order. A custom key "
    "function can be supplied to customize the sort order, and the reverse flag can be set to "
    "request the result in descending order."
)


def text(t: str, position: int = 0):
    return make_example(layout="text", text=t, position=position)


def shared_band(a, b) -> bool:
    return bool(set(band_keys(a, NEAR)) & set(band_keys(b, NEAR)))


def test_exact_copies_differ_only_in_unicode_form_and_whitespace():
    assert normalise("  caf\u0065\u0301 \n au\tlait ") == "caf\u00e9 au lait"
    same = content_hash(text("café  au\nlait")) == content_hash(text("cafe\u0301 au lait "))
    assert same
    assert content_hash(text("Café au lait")) != content_hash(text("café au lait"))  # case counts
    # A text pair is the pair: the same texts on the other sides are not a copy.
    ab = make_example(layout="text_pair", text="a b", pair="c d")
    assert content_hash(ab) == content_hash(
        make_example(layout="text_pair", text="a  b", pair="c d")
    )
    assert content_hash(ab) != content_hash(
        make_example(layout="text_pair", text="c d", pair="a b")
    )


def test_near_copies_share_a_band_and_distinct_texts_do_not():
    edited = TEXT.upper().replace("new list", "fresh list").replace(",", " ;").replace(" ", "  ")
    assert shared_band(text(TEXT), text(edited))
    other = (
        "Open the file and return a stream; raise OSError on failure. The mode defaults to "
        "reading text, and the encoding to the locale's preferred one."
    )
    assert not shared_band(text(TEXT), text(other))


def test_the_bands_find_pairs_at_the_threshold_and_rarely_dissimilar_ones():
    assert lsh_bands(0.8, 128) == NEAR.bands == (13, 8)
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_bands(threshold, 128)
        assert bands * rows <= 128
        found = [1 - (1 - j**rows) ** bands for j in (threshold, threshold - 0.3)]
        assert found[0] >= 0.9 and found[1] < 0.4


def test_texts_with_nothing_to_shingle_and_odd_texts_do_not_crash():
    assert shingles(text("!!! ... ???")) == []
    assert band_keys(text("!!! ... ???"), NEAR) == []
    assert len(band_keys(text("ab"), NEAR)) == 13  # shorter than a shingle: one shingle
    binary = bytes(range(256)).decode("latin-1") * 4
    assert len(band_keys(text(binary), NEAR)) == 13
    huge = "word " * 500_000
    assert len(band_keys(text(huge), NEAR)) == 13
    pair = make_example(layout="text_pair", text="a query", pair="a query")
    assert any(s.startswith("doc:") for s in shingles(pair))  # each side tagged


def member(file: int, position: int, content: int = 0) -> Member:
    return Member(file=file, position=position, key=f"k{file}-{position}", content=content)


def test_clusters_are_connected_components_keeping_the_first_in_input_order():
    a, b, c = member(1, 5, content=7), member(0, 9, content=7), member(2, 0, content=8)
    d, e = member(3, 1), member(3, 2)
    edges = [(a, c), (b, a), (d, e)]
    for seed in range(5):  # any order of the edges, the same clusters
        random.Random(seed).shuffle(edges)
        copies = clusters(edges)
        assert copies.kept_of == {a.key: b, c.key: b, e.key: d}
        assert copies.kinds == {a.key: "exact", c.key: "near", e.key: "exact"}
        assert copies.cluster_sizes == {3: 1, 2: 1}
    assert copies.summary() == {"duplicates": 3, "exact": 2, "near": 1, "clusters": 2,
                                "cluster_sizes": {"2": 1, "3": 1}}  # fmt: skip


def test_a_bucket_links_its_members_to_its_first():
    a, b, c = member(0, 3), member(0, 1), member(1, 0)
    assert star_edges([a, c, b, b]) == [(b, a), (b, c)]
    assert star_edges([a]) == []


def test_the_method_follows_the_layout_and_bad_options_are_refused():
    assert DedupConfig().method_for("text") == "near"
    assert DedupConfig().method_for("image_text") == "exact"
    assert DedupConfig(method="none").method_for("text_pair") == "none"
    with pytest.raises(JestflowError, match="near-duplicate detection works on text"):
        DedupConfig(method="near").method_for("image_text")
    with pytest.raises(JestflowError, match="unknown dedup method"):
        DedupConfig(method="fuzzy")
    with pytest.raises(JestflowError, match="threshold"):
        DedupConfig(threshold=1.0)
