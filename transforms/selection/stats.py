"""Score statistics of a curation run: exact counts of quantised scores, tiers, histograms.

Scores are quantised before selection (`SelectionConfig.quantum`), so counting them per grid
point is exact, mergeable in any order and small (at most one entry per distinct score). Tier
thresholds and histograms are read off those counts, so they are the same whatever the
runner's parallelism — unlike a streaming quantile sketch, whose answer depends on merge order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SCORED = ("selected", "not_selected")


def grid(score: float, quantum: float) -> int:
    """A quantised score as an integer multiple of the quantum."""
    return round(score / quantum)


def count_scores(scores: Iterable[float], quantum: float) -> Counter[int]:
    return Counter(grid(s, quantum) for s in scores)


def tier_thresholds(counts: Mapping[int, int], tiers: int) -> list[int | None]:
    """K − 1 descending grid thresholds that cut the scores into K tiers of (nearly) equal size.

    A score with m scores strictly above it out of n is in tier ⌊K·m/n⌋ (0 = best), so the best
    score is always in tier 0 and equal scores share a tier; heavy ties make tiers unequal.
    Threshold t is the highest score in tier t or below (None when no score reaches tier t).
    """
    if tiers < 1:
        raise ValueError("tiers must be at least 1")
    n = sum(counts.values())
    thresholds: list[int | None] = [None] * (tiers - 1)
    above = 0
    for value in sorted(counts, reverse=True):
        tier = min(tiers - 1, tiers * above // n)
        for t in range(1, tier + 1):
            if thresholds[t - 1] is None:
                thresholds[t - 1] = value
        above += counts[value]
    return thresholds


def tier_of(score_grid: int, thresholds: Sequence[int | None]) -> int:
    """The tier of a quantised score: how many thresholds it does not exceed."""
    return sum(t is not None and score_grid <= t for t in thresholds)


def histogram(
    groups: Mapping[str, Mapping[int, int]], quantum: float, bins: int = 30
) -> dict[str, list]:
    """Histograms of several groups of grid counts over shared edges (in score units)."""
    values = [v for counts in groups.values() for v in counts]
    if not values:
        return {"edges": [], **{name: [] for name in groups}}
    low, high = min(values) * quantum, max(values) * quantum
    width = (high - low) / bins or 1.0
    edges = [round(low + i * width, 9) for i in range(bins + 1)]
    out: dict[str, list] = {"edges": edges}
    for name, counts in groups.items():
        heights = [0] * bins
        for value, count in counts.items():
            heights[min(bins - 1, int((value * quantum - low) / width))] += count
        out[name] = heights
    return out


def summarize(
    scores: Mapping[str, Mapping[int, int]],
    rejected: Mapping[str, int],
    shards: Iterable[Mapping[str, Any]],
    *,
    dedup: Mapping[str, Any],
    quantum: float,
    thresholds: Sequence[int],
) -> dict[str, Any]:
    """The data part of `stats.json`: counts, rejection reasons, dedup, score histograms, tiers,
    shards."""
    counts = {status: sum(scores.get(status, {}).values()) for status in SCORED}
    counts["duplicate"] = dedup["duplicates"]
    counts["rejected"] = sum(rejected.values())
    counts["inputs"] = sum(counts.values())
    shards = sorted(shards, key=lambda s: s["name"])
    selected = scores.get("selected", {})
    return {
        "counts": counts,
        "rejected": dict(sorted(rejected.items())),
        "dedup": dict(dedup),
        "scores": {"quantum": quantum, "histogram": histogram(scores, quantum)},
        "tiers": {
            "thresholds": [None if t is None else round(t * quantum, 9) for t in thresholds],
            "counts": [
                sum(c for v, c in selected.items() if tier_of(v, thresholds) == t)
                for t in range(len(thresholds) + 1)
            ],
        },
        "shards": {
            "files": len(shards),
            "samples": sum(s["count"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "list": shards,
        },
    }
