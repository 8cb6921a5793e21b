"""`jestflow demo`: the whole loop on the demo corpora, on one machine, in one command.

For each demo task (`--task`, all three by default):

- `lm`: docstrings among web-dump noise; the LM teacher is trained on the clean reference set;
- `text-pairs`: (docstring summary, function code) pairs, half mispaired; the teacher is the
  offline MiniLM of the `minilm` extra with its (t, β) calibrated on the reference pairs, or the
  built-in n-gram two-tower teacher where the extra is not installed (the output says which);
- `image-text`: synthetic PIL scenes with captions (WebDataset tars, png + txt), part mispaired,
  part with a wrong attribute or a generic caption; the built-in CNN + n-gram teacher;

make the data → the teacher → curate the pool with the Beam job (contrastive tasks: joint
selection) → train the same student twice for the same number of steps, once uniformly on the raw
pool (the baseline) and once on the curated shards with online JEST (learnability) → a table per
task (steps to reach the baseline's final held-out loss, final held-out loss and recall@1, the
clean share of what each run trained on, wall time of every stage), `results.json`, and the
held-out curves against steps (`TASK/eval.png`) and against estimated FLOPs (`eval-flops.png`).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

from ..pipeline.config import CurateConfig
from ..pipeline.job import run_curation
from ..trainer.calibrate import CalibrateConfig, calibrate
from ..trainer.fit import TeacherConfig, train_teacher
from ..trainer.loop import TrainConfig, train
from ..trainer.plot import plot_runs
from ..trainer.results import RunLog, compare, read_log
from ..transforms.errors import JestflowError
from ..transforms.paths import writable_directory, write_json
from ..transforms.reporting.tables import text_table
from ..transforms.selection.offline import SelectionConfig
from ..transforms.vocabulary import DEMO_TASKS
from .config import RECIPES, DemoConfig, Recipe, minilm_model
from .corpora import DemoDataConfig, make_corpora
from .scenes import SceneConfig, make_scenes

STAGES = ("teacher", "curate", "student-uniform", "student-jest")
RESULTS = "results.json"
OUTPUTS = ("data", *DEMO_TASKS, RESULTS)


class _Stages:
    """Numbered progress lines and the wall time of each stage."""

    def __init__(self, echo: Callable[[str], None], total: int) -> None:
        self.echo, self.total, self.seconds = echo, total, {}

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.echo(f"[{len(self.seconds) + 1}/{self.total}] {what}")
        began = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - began, 1)
        self.echo(f"      {name} done in {self.seconds[name]:.0f} s")


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> dict:
    """Run every stage of every task; returns (and writes) `results.json`."""
    _prepare(config)
    stages = _Stages(echo, 1 + len(STAGES) * len(config.tasks))
    with stages.stage("data", f"demo corpora → {config.path('data')}"):
        records = make_corpora(
            DemoDataConfig(
                output=config.path("data"),
                pool_size=config.pool_size,
                pair_pool_size=config.pair_pool_size,
                seed=config.seed,
            )
        )
        if "image-text" in config.tasks:
            records |= make_scenes(
                SceneConfig(
                    output=config.path("data"), pool_size=config.scene_pool_size, seed=config.seed
                )
            )
    results: dict = {"config": asdict(config), "records": records, "tasks": {}}
    for name in config.tasks:
        results["tasks"][name] = _run_task(config, RECIPES[name], stages, echo)
    results["seconds"] = {**stages.seconds, "total": round(sum(stages.seconds.values()), 1)}
    write_json(results, config.path(RESULTS))
    for name, task in results["tasks"].items():
        echo(f"\n{name} (teacher: {task['teacher']['kind']})\n{results_table(task)}")
    echo(
        f"curves: {config.path('TASK', 'eval.png')} (by step), eval-flops.png (by FLOPs), "
        "eval-time.png (by the steps' seconds)"
    )
    echo(f"results: {config.path(RESULTS)}")
    return results


def _run_task(config: DemoConfig, recipe: Recipe, stages: _Stages, echo) -> dict:
    """Teacher → curate → the two students, for one task; its part of results.json."""
    where = posixpath.join
    root = config.path(recipe.name)
    with stages.stage(f"{recipe.name}/teacher", f"{recipe.name}: the teacher"):
        teacher = _teacher(config, recipe, where(root, "teacher"), echo)
    with stages.stage(
        f"{recipe.name}/curate",
        f"{recipe.name}: curate the pool (keep {recipe.keep_for(config):.0%}, Beam local runner)",
    ):
        curated = _curate(config, recipe, root)
    uniform, jest = _students(config, recipe, root, stages)
    runs = {"student-uniform": read_log(uniform), "student-jest": read_log(jest)}
    target = runs["student-uniform"].final.loss  # what the JEST student must reach
    plot_runs([uniform, jest], where(root, "eval.png"), target=target)
    plot_runs([uniform, jest], where(root, "eval-flops.png"), x="flops", target=target)
    plot_runs([uniform, jest], where(root, "eval-time.png"), x="time", target=target)
    seconds = {k.split("/")[1]: v for k, v in stages.seconds.items() if k.startswith(recipe.name)}
    compared = _compare(runs, seconds)
    return {
        "teacher": teacher,
        "curation": curated["counts"],
        "runs": compared,
        "teacher_pass": _teacher_pass(curated, compared, seconds["teacher"]),
        "seconds": seconds,
    }


def _curate(config: DemoConfig, recipe: Recipe, root: str) -> dict:
    """The offline pass over the task's pool: the teacher's scores, JEST, ranked shards."""
    return run_curation(
        CurateConfig(
            inputs=(recipe.file(config, 2),),
            output=posixpath.join(root, "curated"),
            teacher=posixpath.join(root, "teacher"),
            task=recipe.task,
            fields=recipe.fields,
            selection=SelectionConfig(keep=recipe.keep_for(config), seed=config.seed),
            super_batch=config.super_batch,
            tiers=config.tiers,
            workers=config.workers,
            device=config.device,
            overwrite=True,
        )
    )


def _students(config: DemoConfig, recipe: Recipe, root: str, stages: _Stages) -> tuple[str, str]:
    """The same student twice: uniformly on the raw pool, and with online JEST on the curated
    shards; their run folders."""
    where = posixpath.join
    student = {
        "task": recipe.task,
        "steps": recipe.steps_for(config),
        "batch_size": config.batch_size,
        "eval_inputs": (recipe.file(config, 1),),
        "eval_every": config.eval_every,
        "seed": config.seed,
        "device": config.device,
    }
    uniform, jest = where(root, "student-uniform"), where(root, "student-jest")
    with stages.stage(
        f"{recipe.name}/student-uniform",
        f"{recipe.name}: student, uniform on the raw pool (the baseline)",
    ):
        train(
            TrainConfig(
                data=(recipe.file(config, 2),),
                fields=recipe.fields,
                mode="uniform",
                output=uniform,
                **student,
            )
        )
    with stages.stage(
        f"{recipe.name}/student-jest",
        f"{recipe.name}: student, online JEST (learnability) on the curated shards",
    ):
        train(
            TrainConfig(
                shards=(where(root, "curated", "shards", "*.tar"),),
                fields=recipe.plain,
                mode="learnability",
                super_batch_ratio=config.super_batch_ratio,
                score_image_size=recipe.score_image_size,
                temperature=config.temperature,
                relative_temperature=config.relative_temperature,
                output=jest,
                **student,
            )
        )
    return uniform, jest


def _teacher_pass(curated: dict, runs: dict[str, dict], teacher_seconds: float) -> dict:
    """The curate run (the teacher's one pass over the pool): its seconds, and how many student
    runs on its shards pay them back (its seconds over the seconds one saves against uniform),
    alone and with the teacher's own training (or calibration) added."""
    seconds = curated["timing"]["seconds"]
    uniform, jest = runs["student-uniform"], runs["student-jest"]
    saved = (
        None
        if jest["seconds_to_target"] is None
        else (uniform["step_seconds"] - jest["seconds_to_target"])
    )
    if not saved or saved <= 0:
        return {"seconds": seconds, "break_even_runs": None, "with_teacher_runs": None}
    return {
        "seconds": seconds,
        "break_even_runs": seconds / saved,
        "with_teacher_runs": (seconds + teacher_seconds) / saved,
    }


def _teacher(config: DemoConfig, recipe: Recipe, output: str, echo) -> dict:
    """The task's teacher, written to `output`; what it is and its held-out figures."""
    reference, held_out = recipe.file(config, 0), recipe.file(config, 1)
    wanted = recipe.name == "text-pairs" and config.pair_teacher != "built-in"
    minilm = minilm_model() if wanted else None
    if minilm is not None:
        echo("      MiniLM (the minilm extra), its (t, β) calibrated on the reference pairs")
        fit = calibrate(
            CalibrateConfig(
                model=minilm,
                inputs=(reference,),
                eval_inputs=(held_out,),
                output=output,
                fields=recipe.plain,
                seed=config.seed,
                device=config.device,
                overwrite=True,
            )
        )
        return {
            "kind": "MiniLM, calibrated",
            "eval_loss": fit.after[0],
            "eval_recall_at_1": fit.after[1],
        }
    if wanted:
        echo(
            "      the minilm extra is not installed (in a clone: pip install -e '.[minilm]'): the "
            "built-in n-gram teacher instead"
        )
    steps = config.teacher_steps if recipe.task == "lm" else config.pair_teacher_steps
    result = train_teacher(
        TeacherConfig(
            inputs=(reference,),
            eval_inputs=(held_out,),
            output=output,
            task=recipe.task,
            fields=recipe.plain,
            steps=steps,
            seed=config.seed,
            device=config.device,
        )
    )
    return {
        "kind": f"built-in, {steps} steps",
        "eval_loss": result.eval_loss,
        "eval_recall_at_1": result.eval_recall_at_1,
    }


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
    """Per run: final held-out loss (and recall@1), steps and FLOPs to the baseline's final loss,
    clean share."""
    baseline = runs["student-uniform"]
    out = {}
    for name, log in runs.items():
        found = compare(log, baseline)
        out[name] = {
            "final_eval_loss": round(log.final.loss, 4),
            "final_recall_at_1": log.final.recall_at_1,
            "steps": log.steps,
            "steps_to_target": None if found.reached is None else found.reached.step,
            "speed_up": found.speed_up,
            "flops_to_target": None if found.reached is None else found.reached.flops,
            "compute_saving": found.compute_saving,
            "seconds_to_target": None if found.reached is None else found.reached.seconds,
            "time_saving": found.time_saving,
            "step_seconds": log.step_seconds,
            "clean_fraction": log.fraction("clean"),
            "seconds": seconds[name],
        }
    return out


def results_table(results: dict) -> str:
    """One task's table: a row per student, and the wall time of its stages."""
    runs = results["runs"]
    target = runs["student-uniform"]["final_eval_loss"]
    recall = any(r["final_recall_at_1"] is not None for r in runs.values())
    rows = [
        (
            "run",
            f"steps to {target:.3f}",
            "× fewer",
            "compute ×",
            "time ×",
            "final loss",
            *(("recall@1",) if recall else ()),
            "clean",
            "step s",
            "seconds",
        )
    ]
    for name, r in runs.items():
        rows.append(
            (
                name,
                "not reached" if r["steps_to_target"] is None else str(r["steps_to_target"]),
                "—" if r["speed_up"] is None else f"{r['speed_up']:.1f}×",
                "—" if r["compute_saving"] is None else f"{r['compute_saving']:.1f}×",
                "—" if r["time_saving"] is None else f"{r['time_saving']:.1f}×",
                f"{r['final_eval_loss']:.3f}",
                *((f"{r['final_recall_at_1']:.3f}",) if recall else ()),
                "—" if r["clean_fraction"] is None else f"{r['clean_fraction']:.0%}",
                f"{r['step_seconds']:.0f}",
                f"{r['seconds']:.0f}",
            )
        )
    stages = "  ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    paid = results["teacher_pass"]
    runs_to_pay = paid["break_even_runs"]
    pays = (
        "not paid back (no time saved)"
        if runs_to_pay is None
        else f"paid back by {runs_to_pay:.2f} student runs on its shards "
        f"({paid['with_teacher_runs']:.2f} with the teacher's own)"
    )
    return (
        text_table(rows[1:], header=rows[0]) + f"\nwall time: {stages}"
        f"\nthe teacher's pass over the pool (curate): {paid['seconds']:.0f} s, {pays}"
    )
