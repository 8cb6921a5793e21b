"""Reading curation runs back: a summary of one run, and what changed between two (before and
after the teacher improved, say): counts, the overlap of the selected examples, and how the
teacher's losses and the selection scores moved for the examples both runs scored.

Examples are matched by content id, so a run over a grown pool still lines up with the old one;
duplicates count once (their losses averaged).
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JestflowError
from ..formats.manifest import STATUSES, read_manifest, status_counts
from ..formats.run_folder import MANIFEST, RUN, STARTED, is_complete
from ..paths import filesystem, read_json
from ..selection.stats import SCORED
from .tables import text_table

STATUS_COUNTS = ("inputs", *STATUSES)


def _by_id(manifest: pa.Table) -> pa.Table:
    """One row per scored content id: mean teacher loss and score, and whether it was selected."""
    scored = manifest.filter(pc.is_in(manifest["status"], pa.array(SCORED)))
    selected = pc.equal(scored["status"], "selected").cast(pa.int8())
    table = scored.select(["id", "teacher_loss", "score"]).append_column("selected", selected)
    aggregated = table.group_by("id").aggregate(
        [("teacher_loss", "mean"), ("score", "mean"), ("selected", "max")]
    )
    plain = {"teacher_loss_mean": "teacher_loss", "score_mean": "score", "selected_max": "selected"}
    return aggregated.rename_columns([plain.get(n, n) for n in aggregated.column_names])


def _describe(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"mean": None, "median": None, "min": None, "max": None}
    return {
        "mean": round(float(values.mean()), 6),
        "median": round(float(np.median(values)), 6),
        "min": round(float(values.min()), 6),
        "max": round(float(values.max()), 6),
    }


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks: tied values share the mean of their positions (independent of row order)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts) - 1
    return (last - (counts - 1) / 2)[inverse]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's ρ with average ranks for ties: 1 when the two orders agree."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return round(float(np.corrcoef(ra, rb)[0, 1]), 6)


def load_run(url: str) -> tuple[dict[str, Any], pa.Table]:
    """(summary, per-id table) of the curation run in the folder `url`."""
    fs, root = filesystem(url)
    manifest_url = posixpath.join(url, MANIFEST)
    if not fs.exists(posixpath.join(root, MANIFEST)):
        if fs.exists(posixpath.join(root, STARTED)):
            raise JestflowError(
                f"{url} holds a curation run interrupted before it wrote any manifest part "
                "(_STARTED, no manifest/): nothing to summarise; the same curate command redoes it"
            )
        raise JestflowError(f"{url} holds no curation run (no manifest/)")
    manifest = read_manifest(manifest_url)
    run = read_json(posixpath.join(url, RUN)) if fs.exists(posixpath.join(root, RUN)) else {}
    by_id = _by_id(manifest)
    selected = by_id.filter(pc.equal(by_id["selected"], 1))
    summary = {
        "url": url,
        "complete": is_complete(url),
        "teacher": run.get("models", {}).get("teacher", {}).get("fingerprint"),
        "student": run.get("models", {}).get("student", {}).get("fingerprint"),
        "created": run.get("created"),
        "counts": status_counts(manifest),
        "selected_ids": selected.num_rows,
        "selected_score": _describe(selected["score"].to_numpy()),
        "teacher_loss": _describe(by_id["teacher_loss"].to_numpy()),
    }
    return summary, by_id


def summarize_run(url: str) -> dict[str, Any]:
    return load_run(url)[0]


def compare_runs(old_url: str, new_url: str) -> dict[str, Any]:
    """What changed from the run in `old_url` to the one in `new_url`."""
    old, old_ids = load_run(old_url)
    new, new_ids = load_run(new_url)
    both = old_ids.join(new_ids, "id", join_type="inner", left_suffix="_old", right_suffix="_new")
    selected_old = set(old_ids.filter(pc.equal(old_ids["selected"], 1))["id"].to_pylist())
    selected_new = set(new_ids.filter(pc.equal(new_ids["selected"], 1))["id"].to_pylist())
    union = selected_old | selected_new
    loss_old, loss_new = both["teacher_loss_old"].to_numpy(), both["teacher_loss_new"].to_numpy()
    score_old, score_new = both["score_old"].to_numpy(), both["score_new"].to_numpy()
    return {
        "old": old,
        "new": new,
        "same_teacher": old["teacher"] is not None and old["teacher"] == new["teacher"],
        "selected": {
            "both": len(selected_old & selected_new),
            "only_old": len(selected_old - selected_new),
            "only_new": len(selected_new - selected_old),
            "jaccard": round(len(selected_old & selected_new) / len(union), 6) if union else None,
        },
        "scored_in_both": both.num_rows,
        "teacher_loss_shift": {
            **_describe(loss_new - loss_old),
            "rank_correlation": rank_correlation(loss_old, loss_new),
        },
        "score_shift": {
            **_describe(score_new - score_old),
            "rank_correlation": rank_correlation(score_old, score_new),
        },
    }


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _side_by_side(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The runs' URLs, then their figures in a column each."""
    rows = [
        ("", list(runs)),
        ("complete", ["yes" if r["complete"] else "NO" for r in runs.values()]),
        ("teacher", [r["teacher"] or "—" for r in runs.values()]),
        *[
            (name.replace("_", " "), [_number(r["counts"][name]) for r in runs.values()])
            for name in STATUS_COUNTS
        ],
        ("mean teacher loss", [_number(r["teacher_loss"]["mean"]) for r in runs.values()]),
        ("mean selected score", [_number(r["selected_score"]["mean"]) for r in runs.values()]),
    ]
    if any(r["student"] for r in runs.values()):
        rows.insert(3, ("student", [r["student"] or "—" for r in runs.values()]))
    urls = [f"{label}: {r['url']}" for label, r in runs.items()]
    return [*urls, text_table([(name, *values) for name, values in rows])]


def summary_text(summary: dict[str, Any]) -> str:
    return "\n".join(_side_by_side({"run": summary}))


def _teachers_note(result: dict[str, Any]) -> str:
    """Whether the two runs' teachers differ, when both are known (an interrupted run's
    teacher is named only in its run.json, written last)."""
    if result["same_teacher"]:
        return ""
    if result["old"]["teacher"] is None or result["new"]["teacher"] is None:
        return " (a teacher unknown: an incomplete run)"
    return " (different teachers)"


def comparison_text(result: dict[str, Any]) -> str:
    s, loss, score = result["selected"], result["teacher_loss_shift"], result["score_shift"]
    lines = _side_by_side({"old": result["old"], "new": result["new"]})
    lines += [
        "",
        f"selected: {s['both']:,} in both (Jaccard {_number(s['jaccard'], 3)}), "
        f"{s['only_old']:,} only in old, {s['only_new']:,} only in new",
        f"scored in both: {result['scored_in_both']:,}" + _teachers_note(result),
        f"teacher loss new − old: mean {_number(loss['mean'])}, median {_number(loss['median'])}, "
        f"rank correlation {_number(loss['rank_correlation'], 3)}",
        f"score new − old: mean {_number(score['mean'])}, median {_number(score['median'])}, "
        f"rank correlation {_number(score['rank_correlation'], 3)}",
    ]
    return "\n".join(lines)


def stats_text(stats: dict[str, Any], output: str) -> str:
    """A finished run's stats.json for people (the end of `jestflow curate`): counts, rejection reasons, shards, throughput, where things are."""
    counts, shards, timing = stats["counts"], stats["shards"], stats["timing"]
    inputs = max(1, counts["inputs"])
    rows = [
        (name.replace("_", " "), f"{counts[name]:,}", f"{100 * counts[name] / inputs:5.1f} %")
        for name in STATUS_COUNTS
    ]
    dedup = stats.get("dedup", {})
    rows += [
        (f"  duplicate: {kind}", f"{dedup[kind]:,}", "")
        for kind in ("exact", "near", "semantic")
        if dedup.get(kind)
    ]
    rows += [(f"  rejected: {reason}", f"{n:,}", "") for reason, n in stats["rejected"].items()]
    rows += [
        (f"{role} scored", f"{n['scored']:,}", f"{n['cached']:,} from the cache")
        for role, n in stats["scoring"].items()
        if role != "cache"
    ]
    if stats.get("lm_scoring"):
        scoring = stats["lm_scoring"]
        scored = (
            f"first {scoring['tokens']:,} tokens"
            if scoring["scored"] == "first tokens"
            else f"≤ {scoring['max_tokens']:,} tokens"
        )
        rows.append(("lm scored", scored, f"{scoring['capped']:,} texts longer"))
    rows += [
        ("shards", f"{shards['files']:,} files", f"{shards['bytes'] / 2**20:,.1f} MiB"),
        ("time", f"{timing['seconds']:,.1f} s", f"{timing['inputs_per_s']:,.0f} inputs/s"),
    ]
    root = output.rstrip("/")
    lines = [f"report: {root}/report.html", f"shards: {root}/shards/"]
    return "\n".join([text_table(rows, align="lrl"), *lines])
