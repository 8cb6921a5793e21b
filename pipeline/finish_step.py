"""The curation job's last step: once every other write is done, `stats.json`, `report.html`,
`run.json`, and `_SUCCESS` when the run is usable (the run folder's rules:
`transforms/formats/run_folder.py`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import apache_beam as beam

from ..transforms.formats.run_folder import close, now
from ..transforms.reporting.report import render
from ..transforms.selection.stats import summarize
from .sinks import write_manifest_part

if TYPE_CHECKING:
    from .config import CurateConfig, RunPlan


class Finish(beam.PTransform):
    """One element that waits for the job's summaries as side inputs (Beam runs a step only
    when its side inputs are complete), then closes the run folder."""

    def __init__(self, config: CurateConfig, plan: RunPlan, **summaries) -> None:
        super().__init__()
        self.config, self.plan, self.summaries = config, plan, summaries

    def expand(self, p):
        s = self.summaries
        return (
            p
            | "Once" >> beam.Create([None])
            | "Close"
            >> beam.Map(
                finish,
                self.config,
                self.plan,
                scores=beam.pvalue.AsSingleton(s["scores"]),
                thresholds=beam.pvalue.AsSingleton(s["thresholds"]),
                reasons=beam.pvalue.AsDict(s["reasons"]),
                dedup=beam.pvalue.AsSingleton(s["dedup"]),
                shards=beam.pvalue.AsList(s["shards"]),
                scoring=beam.pvalue.AsSingleton(s["scoring"]),
                written=beam.pvalue.AsSingleton(s["written"]),
            )
        )


def finish(
    _,
    config: CurateConfig,
    plan: RunPlan,
    *,
    scores,
    thresholds,
    reasons,
    dedup,
    shards,
    scoring,
    written,
) -> None:
    """stats.json, report.html, run.json; _SUCCESS unless no record could be used: none read, or
    none parsed (the job then fails with the reason: `job.check_records`)."""
    del written  # a side input only so that this step runs after those writes
    quantum = config.selection.quantum
    stats = summarize(scores, reasons, shards, dedup=dedup, quantum=quantum, thresholds=thresholds)
    stats |= {role: model for role, model in plan.record["models"].items()}
    stats["scoring"] = scoring_summary(config.cache, plan.fingerprints, scoring)
    if config.lm_scoring is not None:  # what the lm models read of each text
        stats["lm_scoring"] = config.lm_scoring.describe() | {"capped": scoring.get("capped", 0)}
    stats["options"] = plan.record["options"]
    seconds = time.time() - plan.started
    counts = stats["counts"]
    stats["timing"] = {
        "seconds": round(seconds, 3),
        "inputs_per_s": round(counts["inputs"] / seconds, 1),
    }
    record = {
        **plan.record,
        "finished": now(),
        "counts": counts,
        "scoring": stats["scoring"],
        **({"lm_scoring": stats["lm_scoring"]} if "lm_scoring" in stats else {}),
        "timing": stats["timing"],
    }
    if not counts["inputs"]:  # no record at all: the manifest is still there to read, empty
        write_manifest_part([], config.output, "empty")
    parsed = counts["selected"] + counts["not_selected"] + counts["duplicate"]
    close(config.output, stats, render(stats), record, succeeded=parsed > 0)


def scoring_summary(
    cache: str | None, fingerprints: Mapping[str, str], scoring: Counter[str]
) -> dict[str, Any]:
    """What each model scored afresh and what came from the score cache."""
    return {"cache": cache} | {
        role: {
            "scored": scoring.get(f"{role}.scored", 0),
            "cached": scoring.get(f"{role}.cached", 0),
        }
        for role in fingerprints
    }
