"""Exact score counts → tiers and histograms; the data part of stats.json."""

from __future__ import annotations

import random

from jestflow.transforms.selection.stats import (
    count_scores,
    histogram,
    summarize,
    tier_of,
    tier_thresholds,
)


def tiers_of(values, k):
    counts = count_scores(values, 1e-4)
    thresholds = tier_thresholds(counts, k)
    return [tier_of(round(v / 1e-4), thresholds) for v in values], thresholds


def test_distinct_scores_split_into_equal_tiers_best_first():
    values = [i / 100 for i in range(100)]
    random.Random(0).shuffle(values)
    tiers, thresholds = tiers_of(values, 4)
    assert len(thresholds) == 3 and thresholds == sorted(thresholds, reverse=True)
    assert [tiers.count(t) for t in range(4)] == [25, 25, 25, 25]
    by_tier = {t: [v for v, tt in zip(values, tiers, strict=True) if tt == t] for t in range(4)}
    for t in range(3):  # every score of a better tier beats every score of the next
        assert min(by_tier[t]) > max(by_tier[t + 1])
    assert max(values) in by_tier[0] and min(values) in by_tier[3]


def test_equal_scores_share_a_tier_and_the_best_is_always_tier_0():
    values = [1.0] * 30 + [0.5] * 10
    tiers, _ = tiers_of(values, 4)
    assert tiers == [0] * 30 + [3] * 10  # 30 of 40 are above 0.5: tier ⌊4·30/40⌋
    tiers, _ = tiers_of([5.0] * 10 + [4.0, 3.0], 2)  # a tie bigger than n/K at the top
    assert tiers == [0] * 10 + [1, 1]
    assert tiers_of([7.0], 3) == ([0], [None, None])  # fewer scores than tiers
    assert tiers_of(values, 1) == ([0] * 40, [])
    assert tiers_of([], 3)[1] == [None, None]


def test_histogram_counts_every_score_once_on_shared_edges():
    selected = count_scores([0.0, 0.1, 0.9, 1.0], 1e-4)
    rest = count_scores([-1.0, -0.5, 0.2], 1e-4)
    hist = histogram({"selected": selected, "not_selected": rest}, 1e-4, bins=4)
    assert hist["edges"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert hist["selected"] == [0, 0, 2, 2] and hist["not_selected"] == [1, 1, 1, 0]


def test_summary_accounts_for_every_input():
    scores = {"selected": count_scores([3.0, 2.0], 1e-4), "not_selected": count_scores([1.0], 1e-4)}
    shards = [{"name": "b.tar", "count": 1, "bytes": 10}, {"name": "a.tar", "count": 1, "bytes": 5}]
    dedup = {"method": "near", "duplicates": 4, "exact": 3, "near": 1}
    stats = summarize(
        scores, {"bad_json": 2, "empty": 1}, shards, dedup=dedup, quantum=1e-4, thresholds=[20000]
    )
    assert stats["counts"] == {
        "selected": 2,
        "not_selected": 1,
        "duplicate": 4,
        "rejected": 3,
        "inputs": 10,
    }
    assert stats["dedup"] == dedup
    assert stats["tiers"] == {"thresholds": [2.0], "counts": [1, 1]}
    assert stats["shards"]["files"] == 2 and stats["shards"]["bytes"] == 15
    assert [s["name"] for s in stats["shards"]["list"]] == ["a.tar", "b.tar"]
    assert sum(stats["scores"]["histogram"]["selected"]) == 2
