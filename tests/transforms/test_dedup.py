"""What makes two examples copies, and how copies form clusters (transforms/dedup/copies.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from jestflow.transforms.dedup.copies import (
    PAIRED,
    DedupConfig,
    Member,
    band_keys,
    bucket_edges,
    cluster_sizes,
    clusters,
    components,
    content_hash,
    link_buckets,
    near_members,
    normalise,
    signature,
)
from jestflow.transforms.dedup.minhash import (
    BATCH_CHARS,
    lsh_bands,
    shingles,
    signatures,
    similarity,
)
from jestflow.transforms.errors import JestflowError
from jestflow.transforms.records import make_example

NEAR = DedupConfig().resolved("text")
TEXT = (
    "Return a new list containing all items from the iterable in ascending order. A custom key "
    "function can be supplied to customize the sort order, and the reverse flag can be set to "
    "request the result in descending order."
)


def text(t: str, position: int = 0):
    return make_example(layout="text", text=t, position=position)


def shared_band(a, b) -> bool:
    return bool(set(keys(a)) & set(keys(b)))


def keys(example) -> list[int]:
    return band_keys([example], NEAR)[0]


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
    assert len(shingles(text("!!! ... ???"))) == 0
    assert keys(text("!!! ... ???")) == []
    assert len(keys(text("ab"))) == 13  # shorter than a shingle: one shingle
    binary = bytes(range(256)).decode("latin-1") * 4
    assert len(keys(text(binary))) == 13
    huge = "word " * 500_000
    assert len(keys(text(huge))) == 13
    one = set(shingles(text("a query")).tolist())
    pair = set(shingles(make_example(layout="text_pair", text="a query", pair="a query")).tolist())
    assert len(one) == 3 and len(pair) == 6  # each side hashed apart
    # The shingles are the near form's 5-grams: case, punctuation and spacing do not count.
    assert set(shingles(text("A  QUERY!")).tolist()) == one


def test_a_batch_fingerprints_each_example_as_it_would_alone(monkeypatch):
    batch = [text(TEXT), text(""), text("ab"), text("!!!"), text(TEXT.upper() + " more")]
    batch.append(make_example(layout="text_pair", text="a query", pair=TEXT))
    alone = [signature(e, NEAR) for e in batch]
    assert [s is None for s in alone] == [False, True, False, True, False, False]
    for chars in (BATCH_CHARS, 300):  # also cut into parts of at most 300 characters
        monkeypatch.setattr("jestflow.transforms.dedup.minhash.BATCH_CHARS", chars)
        together = signatures(batch, NEAR.num_perm, NEAR.seed)
        for a, b in zip(alone, together, strict=True):
            assert (a is None and b is None) or a.tobytes() == b.tobytes()
    assert band_keys(batch, NEAR) == [keys(e) for e in batch]


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
    assert copies.summary() == {
        "duplicates": 3,
        "exact": 2,
        "near": 1,
        "clusters": 2,
        "cluster_sizes": {"2": 1, "3": 1},
    }


def test_a_bucket_links_each_copy_once_to_an_earlier_member():
    a, b, c = member(0, 3), member(0, 1), member(1, 0)
    assert bucket_edges([a, c, b, b], {}, 0.8) == [(b, a), (b, c)]  # one content: a star
    assert bucket_edges([a], {}, 0.8) == [] and near_members([a, b, c]) == []
    # Distinct contents without signatures are not copies; each exact copy goes to its first.
    d, e = member(0, 0, content=1), member(0, 2, content=1)
    assert bucket_edges([e, a, d, b], {}, 0.8) == [(d, e), (b, a)]
    assert near_members([e, a, d, b]) == [d.key, b.key]  # the first copy of each content


def test_near_candidates_are_copies_only_when_their_signatures_agree():
    edited = TEXT.replace("ascending", "ascendant")
    unlike = TEXT[:120] + " Then something else entirely follows, with other words and other ends."
    texts = [unlike, TEXT, edited, TEXT + " ", edited.upper()]
    examples = [text(t, i) for i, t in enumerate(texts)]
    members = [
        Member(file=0, position=i, key=e.key, content=content_hash(e))
        for i, e in enumerate(examples)
    ]
    wanted = near_members(members)
    assert wanted == [m.key for i, m in enumerate(members) if i != 3]  # 3: an exact copy of 1
    signatures = {e.key: signature(e, NEAR).tobytes() for e in examples if e.key in wanted}
    assert similarity(signatures[members[1].key], signatures[members[2].key]) >= 0.8
    assert similarity(signatures[members[0].key], signatures[members[1].key]) < 0.8
    # 1 is not a copy of 0 (they share a band, not enough rows), so it represents its own copies.
    edges = bucket_edges(members, signatures, NEAR.threshold)
    assert edges == [(members[1], members[2]), (members[1], members[3]), (members[1], members[4])]
    copies = clusters(edges)
    assert copies.kinds == {members[2].key: "near", members[3].key: "exact", members[4].key: "near"}
    # Beyond PAIRED representatives, a new content is compared with the first PAIRED only.
    many = [member(0, i, content=i) for i in range(PAIRED + 2)]
    last = many[-1]
    sigs = {m.key: bytes([i]) * 512 for i, m in enumerate(many)}
    assert bucket_edges(many, {**sigs, last.key: sigs[many[PAIRED].key]}, 0.8) == []
    assert bucket_edges(many, {**sigs, last.key: sigs[many[0].key]}, 0.8) == [(many[0], last)]


def find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        x = parent[x]
    return x


def test_components_of_any_graph_are_its_connected_components_rooted_at_their_smallest_node():
    rng = np.random.default_rng(0)
    for n, m in ((1, 0), (6, 4), (50, 30), (400, 390), (400, 2000)):
        first, second = rng.integers(0, n, m), rng.integers(0, n, m)
        root = components(first, second, n)
        expected = list(range(n))  # a plain union–find, smallest root kept
        for a, b in zip(first.tolist(), second.tolist(), strict=True):
            ra, rb = find(expected, a), find(expected, b)
            expected[max(ra, rb)] = min(ra, rb)
        assert root.tolist() == [find(expected, x) for x in range(n)], (n, m)
    chain = np.arange(999)  # a long chain, given backwards: still one component
    assert set(components(chain[::-1], chain[::-1] + 1, 1000).tolist()) == {0}
    assert cluster_sizes(np.array([0, 0, 2, 0, 4, 4])) == {1: 1, 2: 1, 3: 1}


def test_linking_buckets_as_arrays_gives_the_edges_and_candidates_of_bucket_edges():
    rng = np.random.default_rng(1)
    for near in (True, False):
        n = 400
        bucket = np.sort(rng.integers(0, 60, n))  # in (bucket, input order): rows are members
        band = (bucket % 3).astype(np.int16)  # a bucket's band
        content = np.where(bucket % 2, rng.integers(0, 4, n), 9)  # even buckets: one content
        members = [member(0, i, content=int(c)) for i, c in enumerate(content)]
        rows = link_buckets(bucket, band, content, near=near)
        edges, candidates, firsts = set(), set(), set()
        for b in np.unique(bucket):
            inside = [members[i] for i in np.flatnonzero(bucket == b)]
            if len(inside) < 2:
                continue
            if near and len({m.content for m in inside}) > 1:
                candidates.update(inside)
                firsts.update(k for k in near_members(inside))
            elif band[bucket == b][0] == 0:
                edges.update(bucket_edges(inside, {}, 1.0))
        got = {(members[k], members[c]) for k, c in zip(rows.kept, rows.copies, strict=True)}
        assert got == edges and len(rows.copies) == len(edges)
        assert {members[i] for i in rows.candidates} == candidates
        assert {members[i].key for i in rows.firsts} == firsts and len(rows.firsts) == len(firsts)
        assert (len(candidates) > 0) == near and len(edges) > 10


def test_near_is_the_default_with_each_layouts_threshold_and_bad_options_are_refused():
    assert DedupConfig().resolved("text").method == "near"
    assert DedupConfig().resolved("image_text").method == "near"
    assert DedupConfig(method="exact").resolved("image_text").method == "exact"
    assert DedupConfig(method="none").resolved("text_pair").method == "none"
    text, images = DedupConfig().resolved("text"), DedupConfig().resolved("image_text")
    assert (text.method, text.threshold, text.images) == ("near", 0.8, False)
    assert (images.method, images.threshold, images.images) == ("near", 0.875, True)
    assert images.bands != text.bands and text.bands == (13, 8)
    given = DedupConfig(threshold=0.9).resolved("image_text")
    assert given.threshold == given.min_similarity == 0.9
    with pytest.raises(JestflowError, match="unknown dedup method"):
        DedupConfig(method="fuzzy")
    with pytest.raises(JestflowError, match="threshold"):
        DedupConfig(threshold=1.0)
