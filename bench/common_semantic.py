"""What the two semantic dedup benches share (bench/semantic_dedup.py, bench/semantic_images.py):
the pool curated once per arm — a dedup method and a semantic threshold — through `curate`,
with one score cache for all arms, each arm judged on its manifest; and the semantic step's
functions timed on vectors."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.transforms.dedup import semantic
from jestflow.transforms.dedup.copies import DedupConfig
from jestflow.transforms.dedup.semantic import SemanticConfig
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.records import FieldMap
from jestflow.transforms.selection.offline import SelectionConfig


def curate_arm(
    pool: str,
    out: Path,
    teacher: str,
    fields: FieldMap,
    name: str,
    method: str,
    threshold: float | None,
    keep: float = 0.5,
) -> dict:
    """One arm's run under out/runs/NAME: its manifest rows, seconds and output folder."""
    target = out / "runs" / name.replace(" ", "-").replace("(", "").replace(")", "")
    began = time.perf_counter()
    run_curation(
        CurateConfig(
            inputs=(pool,),
            output=str(target),
            teacher=teacher,
            task="contrastive",
            fields=fields,
            selection=SelectionConfig(keep=keep),
            dedup=DedupConfig(method=method),
            semantic=SemanticConfig(threshold=threshold),
            super_batch=1000,
            cache=str(out / "cache"),
            workers=2,
            overwrite=True,
        )
    )
    seconds = time.perf_counter() - began
    rows = read_manifest(str(target / "manifest")).to_pylist()
    return {"rows": rows, "seconds": seconds, "target": target}


def arm_rows(
    pool: str,
    out: Path,
    teacher: str,
    fields: FieldMap,
    arms: dict[str, tuple[str, float | None]],
    judge: Callable[[list[dict]], dict],
    first_keep: float = 0.5,
) -> tuple[list[dict], Path]:
    """Each arm (name: (dedup method, semantic threshold)) judged, with its seconds per 1,000
    inputs, after a first run without dedup that fills the score cache (its seconds: the
    teacher's scoring); and that first run's output folder."""
    shutil.rmtree(out / "cache", ignore_errors=True)
    first = curate_arm(pool, out, teacher, fields, "uncached", "none", None, keep=first_keep)
    n = len(first["rows"])
    found = []
    for name, (method, threshold) in arms.items():
        run = curate_arm(pool, out, teacher, fields, name, method, threshold)
        found.append(
            {"dedup": name, **judge(run["rows"])} | {"s_per_1k": 1000 * run["seconds"] / n}
        )
        print(found[-1], flush=True)
    found.append(
        {"dedup": "teacher scoring (uncached run)", "s_per_1k": 1000 * first["seconds"] / n}
    )
    return found, first["target"]


def step_seconds(x: np.ndarray, threshold: float) -> tuple[dict[str, float], int, np.ndarray, int]:
    """The semantic step's functions on unit vectors (k and the sample as the step picks them),
    timed: the seconds of each phase (fit, assign, copies), k, each vector's cluster, and how
    many vectors are copies of another at `threshold`."""
    times = {}
    began = time.perf_counter()
    k = semantic.cluster_count(len(x))
    centroids = semantic.fit_centroids(x[: semantic.sample_size(len(x), k)], k, seed=1)
    times["fit"] = time.perf_counter() - began
    began = time.perf_counter()
    labels = semantic.assign(x, centroids)
    times["assign"] = time.perf_counter() - began
    began = time.perf_counter()
    removed = 0
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        kept_of = semantic.find_copies(x[members], threshold)
        removed += int((kept_of != np.arange(len(members))).sum())
    times["copies"] = time.perf_counter() - began
    return times, k, labels, removed
