"""`jestflow demo`: the whole loop on the demo corpora, on one machine, in one command.

make the data → train the LM teacher on the clean reference set → curate the noisy pool with the
Beam job → train the same student twice for the same number of steps, once uniformly on the raw
pool (the baseline) and once on the curated shards with online JEST (learnability) → a table
(steps to reach the baseline's final held-out loss, final held-out loss, the clean share of what
each run trained on, wall time of every stage), `results.json`, and the held-out curves against
steps (`eval.png`) and against estimated FLOPs (`eval-flops.png`).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..trainer.fit import TeacherConfig, train_teacher
from ..trainer.loop import TrainConfig, train
from ..trainer.plot import plot_runs
from ..trainer.results import RunLog, compare, read_log
from ..transforms.errors import JestflowError
from ..transforms.offline_selection import SelectionConfig
from ..transforms.paths import writable_directory, write_json
from ..transforms.records import FieldMap
from ..transforms.selection import RELATIVE_TEMPERATURE
from ..transforms.tables import text_table
from .demo_data import DemoDataConfig, make_corpora
from .job import CurateConfig, run_curation

STAGES = ("data", "teacher", "curate", "student-uniform", "student-jest")
RESULTS = "results.json"
OUTPUTS = ("data", "teacher-lm", "curated-lm", "student-uniform", "student-jest", RESULTS,
           "eval.png", "eval-flops.png")  # fmt: skip


@dataclass(kw_only=True)
class DemoConfig:
    output: str = "build/demo"
    pool_size: int = 10_000
    teacher_steps: int = 300
    student_steps: int = 300
    batch_size: int = 32  # b
    super_batch_ratio: int = 5  # r: the student scores r·b per step
    # The online sampling temperature: relative to each draw's scores by default (selection.py).
    temperature: float | None = None
    relative_temperature: float = RELATIVE_TEMPERATURE
    keep: float = 0.5  # the offline pass keeps the half the teacher finds easiest
    super_batch: int = 1000  # of the offline pass
    tiers: int = 4  # the offline pass's shards in four score bands
    score_seq_len: int | None = 64  # the student scores the first 64 bytes only
    eval_every: int = 10
    workers: int = 1
    seed: int = 0
    device: str = "auto"  # every stage: teacher, curation, students
    overwrite: bool = False

    def path(self, name: str) -> str:
        return posixpath.join(self.output, name)


class _Stages:
    """Numbered progress lines and the wall time of each stage."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo, self.seconds = echo, {}

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.echo(f"[{len(self.seconds) + 1}/{len(STAGES)}] {what}")
        began = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - began, 1)
        self.echo(f"      {name} done in {self.seconds[name]:.0f} s")


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> dict:
    """Run every stage; returns (and writes) `results.json`."""
    _prepare(config)
    text, tagged = FieldMap(text="text"), FieldMap(text="text", keep=("kind",))
    lm = config.path("data/lm")
    stages = _Stages(echo)
    with stages.stage("data", f"demo corpora from the standard library → {config.path('data')}"):
        counts = make_corpora(
            DemoDataConfig(output=config.path("data"), pool_size=config.pool_size, seed=config.seed)
        )
    with stages.stage("teacher", f"LM teacher, {config.teacher_steps} steps on the clean set"):
        teacher = train_teacher(TeacherConfig(
            inputs=(f"{lm}/reference.jsonl",), eval_inputs=(f"{lm}/eval.jsonl",),
            output=config.path("teacher-lm"), task="lm", fields=text, steps=config.teacher_steps,
            seed=config.seed, device=config.device,
        ))  # fmt: skip
    with stages.stage("curate", f"curate the pool (keep {config.keep:.0%}, Beam local runner)"):
        curated = run_curation(CurateConfig(
            inputs=(f"{lm}/pool.jsonl",), output=config.path("curated-lm"),
            teacher=config.path("teacher-lm"), task="lm", fields=tagged,
            selection=SelectionConfig(keep=config.keep, seed=config.seed),
            super_batch=config.super_batch, tiers=config.tiers, workers=config.workers,
            device=config.device, overwrite=True,
        ))  # fmt: skip
    student = {
        "task": "lm", "steps": config.student_steps, "batch_size": config.batch_size,
        "eval_inputs": (f"{lm}/eval.jsonl",), "eval_every": config.eval_every,
        "seed": config.seed, "device": config.device,
    }  # fmt: skip
    with stages.stage("student-uniform", "student, uniform on the raw pool (the baseline)"):
        train(TrainConfig(data=(f"{lm}/pool.jsonl",), fields=tagged, mode="uniform",
                          output=config.path("student-uniform"), **student))  # fmt: skip
    with stages.stage("student-jest", "student, online JEST (learnability) on the curated shards"):
        train(TrainConfig(
            shards=(config.path("curated-lm/shards/*.tar"),), fields=text, mode="learnability",
            super_batch_ratio=config.super_batch_ratio, temperature=config.temperature,
            relative_temperature=config.relative_temperature,
            score_seq_len=config.score_seq_len, output=config.path("student-jest"), **student,
        ))  # fmt: skip
    seconds = stages.seconds
    runs = {name: read_log(config.path(name)) for name in ("student-uniform", "student-jest")}
    plot_runs([config.path(name) for name in runs], config.path("eval.png"))
    plot_runs([config.path(name) for name in runs], config.path("eval-flops.png"), x="flops")
    results = {
        "config": asdict(config),
        "records": counts,
        "teacher_eval_loss": teacher.eval_loss,
        "curation": curated["counts"],
        "runs": _compare(runs, seconds),
        "seconds": {**seconds, "total": round(sum(seconds.values()), 1)},
    }
    write_json(results, config.path(RESULTS))
    echo(results_table(results))
    echo(f"curves: {config.path('eval.png')} (by step), {config.path('eval-flops.png')} (by FLOPs)")
    echo(f"results: {config.path(RESULTS)}")
    return results


def _prepare(config: DemoConfig) -> None:
    """Refuse an output that holds a demo unless `overwrite`, and then clear its stages."""
    fs, root = writable_directory(config.output)
    held = [name for name in OUTPUTS if fs.exists(posixpath.join(root, name))]
    if held and not config.overwrite:
        raise JestflowError(
            f"{config.output} already holds a demo ({', '.join(held)}); pass --overwrite"
        )
    for name in held:
        fs.rm(posixpath.join(root, name), recursive=True)


def _compare(runs: dict[str, RunLog], seconds: dict[str, float]) -> dict[str, dict]:
    """Per run: final held-out loss, steps and FLOPs to the baseline's final loss, clean share."""
    baseline = runs["student-uniform"]
    out = {}
    for name, log in runs.items():
        found = compare(log, baseline)
        out[name] = {
            "final_eval_loss": round(log.final.loss, 4),
            "steps": log.steps,
            "steps_to_target": None if found.reached is None else found.reached.step,
            "speed_up": found.speed_up,
            "flops_to_target": None if found.reached is None else found.reached.flops,
            "compute_saving": found.compute_saving,
            "clean_fraction": log.fraction("clean"),
            "seconds": seconds[name],
        }
    return out


def results_table(results: dict) -> str:
    runs = results["runs"]
    target = runs["student-uniform"]["final_eval_loss"]
    rows = [("run", f"steps to {target:.3f}", "× fewer", "compute ×", "final loss", "clean",
             "seconds")]  # fmt: skip
    for name, r in runs.items():
        rows.append((
            name,
            "not reached" if r["steps_to_target"] is None else str(r["steps_to_target"]),
            "—" if r["speed_up"] is None else f"{r['speed_up']:.1f}×",
            "—" if r["compute_saving"] is None else f"{r['compute_saving']:.1f}×",
            f"{r['final_eval_loss']:.3f}",
            "—" if r["clean_fraction"] is None else f"{r['clean_fraction']:.0%}",
            f"{r['seconds']:.0f}",
        ))  # fmt: skip
    stages = "  ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    return text_table(rows[1:], header=rows[0]) + f"\nwall time: {stages}"
