"""`report.html`: one self-contained page a person can read after a curation run.

Counts, rejection reasons, the score histogram of selected vs not selected examples (inline
SVG), tiers, shards, timing and the options used — all read from `stats.json`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .tables import html_table as table

COLOURS = {"selected": "#2a7ab0", "not_selected": "#c8773a"}
WIDTH, HEIGHT, PAD = 640, 220, 36


def histogram_svg(hist: Mapping[str, Sequence[float]]) -> str:
    """Overlaid bars of the `selected` and `not_selected` counts over shared `edges`."""
    edges = hist.get("edges") or []
    if len(edges) < 2:
        return "<p>No scored examples.</p>"
    bins = len(edges) - 1
    top = max(max(hist[name]) for name in COLOURS) or 1
    bar = (WIDTH - 2 * PAD) / bins
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT + PAD}" role="img">']
    for name, colour in COLOURS.items():
        for i, count in enumerate(hist[name]):
            h = (HEIGHT - PAD) * count / top
            parts.append(
                f'<rect x="{PAD + i * bar:.1f}" y="{HEIGHT - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}" fill-opacity="0.6">'
                f"<title>{name}: {count} in [{edges[i]:.3f}, {edges[i + 1]:.3f})</title></rect>"
            )
    parts.append(
        f'<line x1="{PAD}" y1="{HEIGHT}" x2="{WIDTH - PAD}" y2="{HEIGHT}" stroke="black"/>'
        f'<text x="{PAD}" y="{HEIGHT + 16}" font-size="12">{edges[0]:.3f}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT + 16}" font-size="12" text-anchor="end">'
        f"{edges[-1]:.3f}</text>"
        f'<text x="{WIDTH / 2}" y="{HEIGHT + 30}" font-size="12" text-anchor="middle">score</text>'
        f'<text x="{PAD}" y="14" font-size="12">max {top} per bin</text></svg>'
    )
    legend = " ".join(
        f'<span style="color:{c}">■ {n.replace("_", " ")}</span>' for n, c in COLOURS.items()
    )
    return "".join(parts) + f"<p>{legend}</p>"


COUNTS = ("inputs", "selected", "not_selected", "duplicate", "rejected")
SHARD_HEADER = ["file", "samples", "bytes"]


def tier_rows(tiers: Mapping[str, Sequence[float]]) -> list[list[Any]]:
    """Tier t holds the scores above threshold t (the last tier: the rest)."""
    lows = ["—" if t is None else f"{t:.4f}" for t in tiers["thresholds"]] + ["—"]
    return [[t, n, lows[t]] for t, n in enumerate(tiers["counts"])]


def dedup_section(dedup: Mapping[str, Any]) -> str:
    """How dedup ran, the copies it removed by kind, and a histogram of the cluster sizes; then
    semantic dedup's, when it ran."""
    return _copies_section(dedup) + _semantic_section(dedup.get("semantic_dedup"), dedup)


def _copies_section(dedup: Mapping[str, Any]) -> str:
    if dedup.get("method", "none") == "none":
        return "<p>Not deduplicated before scoring (--dedup none).</p>"
    settings = ", ".join(
        f"{k} {dedup[k]}" for k in ("threshold", "num_perm", "bands", "rows") if k in dedup
    )
    lines = [
        f"<p>Method: {dedup['method']}{' (' + settings + ')' if settings else ''}. "
        f"{dedup['exact'] + dedup['near']} copies removed ({dedup['exact']} exact, "
        f"{dedup['near']} near) in {dedup['clusters']} clusters; the first copy of each cluster "
        "is kept.</p>"
    ]
    if dedup.get("not_shingled"):
        lines.append(
            f"<p>{dedup['not_shingled']} texts had nothing to shingle and were "
            "deduplicated exactly.</p>"
        )
    sizes = [[size, n] for size, n in dedup["cluster_sizes"].items()]
    if sizes:
        lines.append(table(sizes, ["cluster size (copies)", "clusters"]))
    return "".join(lines)


def _semantic_section(semantic: Mapping[str, Any] | None, dedup: Mapping[str, Any]) -> str:
    if not semantic:
        return ""
    lines = [
        f"<p>Semantic dedup after scoring (cosine ≥ {semantic['threshold']} of the teacher's "
        f"embeddings, {semantic['clusters']} k-means clusters fit on {semantic['sample']} "
        f"examples): {dedup['semantic']} copies removed in {semantic['clusters_with_copies']} "
        "groups; the first copy of each is kept.</p>"
    ]
    sizes = [[size, n] for size, n in semantic["cluster_sizes"].items()]
    if sizes:
        lines.append(table(sizes, ["group size (copies)", "groups"]))
    return "".join(lines)


def render(stats: Mapping[str, Any]) -> str:
    counts, shards, tiers = stats["counts"], stats["shards"], stats["tiers"]
    timing = stats.get("timing", {})
    sections = [
        "<h1>jestflow curation report</h1>",
        "<h2>Counts</h2>",
        table([[k, counts[k]] for k in COUNTS], ["", "examples"]),
        "<h2>Rejected by reason</h2>",
        table(sorted(stats["rejected"].items()), ["reason", "records"])
        if stats["rejected"]
        else "<p>None.</p>",
        "<h2>Duplicates</h2>",
        dedup_section(stats.get("dedup", {})),
        "<h2>Scores: selected vs not selected</h2>",
        histogram_svg(stats["scores"]["histogram"]),
        "<h2>Tiers</h2>",
        table(tier_rows(tiers), ["tier", "selected", "scores above"]),
        "<h2>Shards</h2>",
        f"<p>{shards['files']} files, {shards['samples']} samples, {shards['bytes']} bytes.</p>",
        table([[s["name"], s["count"], s["bytes"]] for s in shards["list"][:50]], SHARD_HEADER),
        "<h2>Teacher</h2>",
        table([[k, v] for k, v in stats["teacher"].items()], ["", ""]),
    ]
    if "student" in stats:
        sections += ["<h2>Student</h2>", table(list(stats["student"].items()), ["", ""])]
    if timing:
        sections += ["<h2>Timing</h2>", table(list(timing.items()), ["", ""])]
    if stats.get("scoring"):
        scoring = stats["scoring"]
        rows = [[role, n["scored"], n["cached"]] for role, n in scoring.items() if role != "cache"]
        sections += [
            "<h2>Scoring</h2>",
            f"<p>Score cache: {html.escape(str(scoring.get('cache') or 'none'))}</p>",
            table(rows, ["model", "scored", "from the cache"]),
        ]
    if stats.get("lm_scoring"):
        sections.append(f"<p>{html.escape(lm_scoring_text(stats['lm_scoring']))}</p>")
    options = json.dumps(stats["options"], indent=2, sort_keys=True)
    sections += ["<h2>Options</h2>", f"<pre>{html.escape(options)}</pre>"]
    style = (
        "body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:left}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>jestflow report</title>'
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def lm_scoring_text(scoring: Mapping[str, Any]) -> str:
    """What the lm models read of each text, and how many texts were longer."""
    if scoring["scored"] == "first tokens":
        what = f"the first {scoring['tokens']:,} tokens of each text"
    else:
        window = "the model's context" if scoring["window"] is None else f"{scoring['window']:,}"
        what = (
            f"whole documents, at most {scoring['max_tokens']:,} tokens each, in windows of "
            f"{window} tokens"
        )
    return f"LM scoring: {what}; {scoring['capped']:,} texts were longer (scored in part)."
