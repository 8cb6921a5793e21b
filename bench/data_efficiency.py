"""Data efficiency: the same student, steps and batch size, trained on the demo corpora by each
selection method, over several seeds. Prints a table per task.

LM (pool: 20 % clean docstrings, 80 % noise):
  uniform             raw pool, the first b of each draw (the baseline)
  hard learner        raw pool, online: highest student loss ℓ(θ) (no teacher)
  easy reference      offline only: `jestflow curate` keeps the half the teacher finds easiest,
                      the student trains uniformly on those shards
  learnability        online, per example: ℓ(θ) − ℓ(θ*) over the whole teacher-scored pool
  offline + online    the `jestflow demo` recipe: learnability online on the easy-reference shards
  offline + weighted  the zero-overhead arm: the first b of each draw from the easy-reference
                      shards, each weighted by its learnability from the training forward itself
  offline + curated weights  the first b of each draw from the easy-reference shards, each
                      weighted by the soft weight curate wrote into its json (no student values)
Contrastive (pool: (docstring summary, code) pairs, half mispaired; teacher: the calibrated
MiniLM where the `minilm` extra is installed, else the built-in n-gram teacher; `--pair-teacher`)
and image-text (pool: synthetic scenes, 40 % mispaired, 10 % a wrong attribute, 10 % generic
captions; teacher: the built-in CNN + n-gram towers, 600 steps):
  uniform             raw pool
  easy reference      offline only: the half the teacher finds easiest, trained on uniformly
  offline + online    the recipe: learnability online (joint) on the easy-reference shards
  offline + weighted  the zero-overhead arm (as for lm, with each pair's share of the batch loss)
  offline + curated weights  as for lm
  independent         learnability online on the whole scored pool, diagonal only (one chunk)
  joint               learnability online on the whole scored pool, JEST blocked sampling
  offline + online at 32 px (image-text) the recipe with the student scoring at 32 pixels

ρ cheap: Spearman's ρ of the student's cheap scores (images at 32 px) against its full ones on a
step's candidates, at each evaluation (the trainer logs it), averaged.

Steps-to-target: the first evaluation at or below the uniform run's final held-out loss (same
seed). Compute-to-target: the student's training and online-scoring FLOPs by then (counted per
input, trainer/flops.py) against the uniform run's total. Time-to-target: the steps' wall-clock
seconds by then (drawing, scoring, training; no evaluations) against uniform's: the arms run one
after another, so give the benchmark the machine. The teacher's one offline pass (the `jestflow
curate` run: FLOPs and seconds) is reported apart, with the student runs on its shards that pay
it back. Corpora, teachers, curated sets: bench/common_demo.py. "clean only (oracle)" (lm, text
pairs; --ablation-arms): uniform on the pool's clean records, the ceiling of any filter.

Image-text with the softmax (CLIP) loss (`--tasks image-text-softmax`, not in the default tasks):
the same scenes and arms, with teacher, curation and students on the softmax loss; set beside
image-text's (sigmoid) for the same gains under the other loss.

LM on long documents (`--tasks lm-documents`, not in the default tasks; bench/common_documents.py:
documents of 1–8 KB, a quarter clean, a quarter with a clean start and a noise body, half noise;
the teacher fit on clean documents; held out: clean documents, judged whole): the LM arms.

Run: python bench/data_efficiency.py [--seeds 0,1,2] [--steps N]
     [--tasks lm,contrastive,image-text,lm-documents,image-text-softmax] [--documents 2000] [--pair-teacher auto|minilm|built-in]
     [--out build/bench-data-efficiency] [--arms "offline + online"] [--warmup-steps N] [--ablations]
     [--ablation-arms "learnability τ=0.1"] [--sweep]
--sweep adds the recipe at r = 2, 3, 5 on the 50 % and 30 % curated sets (image-text: scoring at
64 px, at 32 px, and at 32 px with every other step trained at 32 px), on every seed.
Data, teachers, curated sets and finished runs under --out are reused: pick a new --out after
changing the teacher steps or the evaluation interval.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import torch
from common_arms import ABLATIONS, ARMS, SWEEP
from common_demo import (
    CURATED,
    FIELDS,
    MODEL_TASK,
    clean_file,
    curated_dir,
    data_file,
    prepare,
    shard_set,
)
from common_results import command_line, record, run_figures

from jestflow.demo.config import RECIPES
from jestflow.trainer.core import load_examples
from jestflow.trainer.core import prepare as prepare_inputs
from jestflow.trainer.flops import FlopCount
from jestflow.trainer.loop import TrainConfig, train
from jestflow.trainer.results import RunLog, compare, read_log
from jestflow.transforms.formats.model_files import load_model
from jestflow.transforms.models.documents import document_windows
from jestflow.transforms.reporting.tables import text_table
from jestflow.transforms.vocabulary import PAIR_TEACHERS


def steps_for(task: str, args) -> int:
    """`--steps`, else the demo's for the task: 300, and 150 for text pairs (its curated half,
    2,000 pairs, is then trained on about twice and not overfit)."""
    demo = {"contrastive": RECIPES["text-pairs"].steps, "image-text": RECIPES["image-text"].steps}
    demo["image-text-softmax"] = demo["image-text"]
    return args.steps or demo.get(task, RECIPES["lm"].steps)


def run_arm(task: str, name: str, source: str, options: dict, seed: int, out: Path, args):
    run_dir = out / "runs" / task / f"{name.replace(' ', '_')}-seed{seed}"
    steps = steps_for(task, args)
    if not (run_dir / "trainer_state.json").exists() or read_log(str(run_dir)).steps != steps:
        shutil.rmtree(run_dir, ignore_errors=True)
        fields = FIELDS[task]
        where = (
            {"data": (data_file(out, task, 2),)}
            if source == "raw"
            else {"data": (clean_file(out, task),)}
            if source == "clean"
            else {"shards": (shard_set(out, task, source),)}
        )
        began = time.perf_counter()
        train(
            TrainConfig(
                **where,
                task=MODEL_TASK[task],
                output=str(run_dir),
                fields=fields,
                steps=steps,
                batch_size=32,
                eval_inputs=(data_file(out, task, 1),),
                eval_every=args.eval_every,
                seed=seed,
                **args.schedule,
                **options,
            )
        )
        print(f"{task} {name} seed {seed}: {time.perf_counter() - began:.0f} s", flush=True)
    return read_log(str(run_dir))


def teacher_pass(task: str, out: Path, logs: dict[str, list[RunLog]], rows: list[dict]) -> dict:
    """The teacher's one offline pass over the pool (paid once by `curate`, reused by every
    student): FLOPs (counted as the students' are), the curate run's wall-clock seconds, and per arm on
    curated shards the break-even: student runs on those shards that pay the pass back."""
    teacher = load_model(str(out / f"teacher-{task}"))
    pool, _ = load_examples([data_file(out, task, 2)], FIELDS[task])
    if MODEL_TASK[task] == "lm":  # whole documents, window by window, up to the default cap
        windows = document_windows(teacher, [ex.text for ex in pool])
        inputs = [torch.tensor(w) for document in windows for w in document]
    else:
        inputs = prepare_inputs(teacher, pool)
    flops = FlopCount(teacher).forward(inputs)  # counted as the students' are
    uniform_flops = statistics.mean(r.final.flops for r in logs["uniform"])
    uniform_seconds = statistics.mean(r.final.seconds for r in logs["uniform"])
    # every curated set is one full pass over the pool: the first one made with the defaults
    default = [source for source, (_, length) in CURATED.items() if length is None]
    made = [d for d in map(lambda s: curated_dir(out, task, s), default) if d.exists()]
    stats = json.loads((made[0] / "stats.json").read_text())
    seconds = stats["timing"]["seconds"]
    metrics = out / f"teacher-{task}" / "metrics.json"  # a built-in teacher's training
    trained = json.loads(metrics.read_text())["seconds"] if metrics.exists() else None
    break_even, with_training = {}, {}
    for row in rows:
        to_target = row["seconds_to_target"]
        source = {**ARMS[task], **ABLATIONS[task], **SWEEP[task]}[row["arm"]][0]
        on_shards = source not in ("raw", "clean")  # the pool itself, or its clean records
        if on_shards and to_target is not None and to_target < uniform_seconds:
            break_even[row["arm"]] = seconds / (uniform_seconds - to_target)
            if trained is not None:
                with_training[row["arm"]] = (seconds + trained) / (uniform_seconds - to_target)
    return {
        "flops": flops,
        "flops_share": flops / uniform_flops,
        "seconds": seconds,
        "seconds_share": seconds / uniform_seconds,
        "break_even_runs": break_even,
        "teacher_training_seconds": trained,
        "break_even_runs_with_training": with_training,
    }


def pass_report(found: dict) -> str:
    runs = ", ".join(f"{arm} {n:.2f}" for arm, n in found["break_even_runs"].items())
    text = (
        f"the teacher's one pass over the pool: {found['flops']:.3g} FLOPs "
        f"({found['flops_share']:.2f}× a uniform run's training), {found['seconds']:.0f} s "
        f"({found['seconds_share']:.2f}× a uniform run's steps); student runs that pay it "
        f"back: {runs or '—'}"
    )
    if found["teacher_training_seconds"] is not None:
        runs = ", ".join(
            f"{arm} {n:.2f}" for arm, n in found["break_even_runs_with_training"].items()
        )
        text += (
            f"\nwith the teacher's training ({found['teacher_training_seconds']:.0f} s): "
            f"{runs or '—'}"
        )
    return text


def summarize(task: str, logs: dict[str, list[RunLog]]) -> list[dict]:
    """Mean (and spread) over seeds of each arm against the uniform run of the same seed."""
    baselines = logs["uniform"]
    rows = []
    for name, runs in logs.items():
        row = {"arm": name, "seeds": len(runs)}
        finals = [r.final.loss for r in runs]
        row["final_loss"] = (statistics.mean(finals), _sd(finals))
        recalls = [r.final.recall_at_1 for r in runs if r.final.recall_at_1 is not None]
        row["recall"] = (statistics.mean(recalls), _sd(recalls)) if recalls else None
        found = [compare(run, base) for run, base in zip(runs, baselines, strict=False)]
        found = [f for f in found if f.reached is not None]
        row["reached"] = len(found)
        for key in ("speed_up", "compute_saving", "time_saving"):
            values = [getattr(f, key) for f in found]
            row[key] = (statistics.mean(values), _sd(values)) if values else None
        row["seconds_to_target"] = (
            statistics.mean(f.reached.seconds for f in found) if found else None
        )
        clean = [r.fraction("clean") for r in runs if r.fraction("clean") is not None]
        row["clean"] = statistics.mean(clean) if clean else None
        row["seconds"] = statistics.mean(r.step_seconds for r in runs)
        agreement = [rho for r in runs for rho in r.score_agreement]
        row["cheap_rho"] = statistics.mean(agreement) if agreement else None
        rows.append(row)
    return rows


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(task: str, rows: list[dict], steps: int) -> str:
    def pm(pair, fmt):
        return "—" if pair is None else f"{pair[0]:{fmt}} ± {pair[1]:{fmt}}"

    head = [
        "arm",
        "seeds",
        "final held-out loss",
        "recall@1",
        "steps-to-target ×",
        "compute-to-target ×",
        "time-to-target ×",
        "reached",
        "clean",
        "step s",
        "ρ cheap",
    ]
    cells = [
        [
            r["arm"],
            str(r["seeds"]),
            pm(r["final_loss"], ".3f"),
            pm(r["recall"], ".3f") if task != "lm" else "—",
            pm(r["speed_up"], ".1f"),
            pm(r["compute_saving"], ".1f"),
            pm(r["time_saving"], ".1f"),
            f"{r['reached']}/{r['seeds']}",
            "—" if r["clean"] is None else f"{r['clean']:.0%}",
            f"{r['seconds']:.0f}",
            "—" if r["cheap_rho"] is None else f"{r['cheap_rho']:.2f}",
        ]
        for r in rows
    ]
    return f"{task}, {steps} steps, b = 32:\n" + text_table(cells, header=head)


def run_task(task: str, seeds: list[int], out: Path, args) -> dict[str, list[RunLog]]:
    """The arms (`--arms`, always with uniform) on every seed, then the ablations."""
    chosen = [a for a in args.arms.split(",") if a] or list(ARMS[task])
    logs = {
        name: [run_arm(task, name, source, options, seed, out, args) for seed in seeds]
        for name, (source, options) in ARMS[task].items()
        if name == "uniform" or name in chosen
    }
    if args.sweep:
        for name, (source, options) in SWEEP[task].items():
            logs[name] = [run_arm(task, name, source, options, seed, out, args) for seed in seeds]
    extra = {**ABLATIONS[task], **SWEEP[task]}  # --ablation-arms: any of them, every seed
    for name in (name for name in args.ablation_arms.split(",") if name):
        source, options = extra[name]
        logs[name] = [run_arm(task, name, source, options, seed, out, args) for seed in seeds]
    for name, (source, options) in ABLATIONS[task].items():
        if args.ablations and name not in logs:
            logs[name] = [run_arm(task, name, source, options, seeds[0], out, args)]
    return logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, help="Default: the demo's (300; 150 text pairs).")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--tasks", default="lm,contrastive,image-text")
    parser.add_argument("--pair-teacher", choices=PAIR_TEACHERS, default="auto")
    parser.add_argument("--pair-teacher-steps", type=int, default=600)
    parser.add_argument("--documents", type=int, default=2000, help="lm-documents: pool size.")
    parser.add_argument("--out", default="build/bench-data-efficiency")
    parser.add_argument("--record", default="data_efficiency", help="Its bench/results.json entry.")
    parser.add_argument("--arms", default="", help="Comma-separated arms (default: all).")
    parser.add_argument(
        "--warmup-steps", type=int, help="Every student's warm-up (default: the trainer's)."
    )
    parser.add_argument("--ablations", action="store_true", help="Extra arms on the first seed.")
    parser.add_argument(
        "--sweep", action="store_true", help="r × keep (× image scoring size) on every seed."
    )
    parser.add_argument(
        "--ablation-arms",
        default="",
        help="Comma-separated ablation or sweep arms to run on every seed.",
    )
    args = parser.parse_args()
    args.tasks = args.tasks.split(",")
    args.schedule = {} if args.warmup_steps is None else {"warmup_steps": args.warmup_steps}
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"jestflow {version('jestflow')}, {os.cpu_count()} CPUs",
        flush=True,
    )
    began = time.perf_counter()
    prepare(out, args)
    results, figures = {}, {}
    for task in args.tasks:
        logs = run_task(task, seeds, out, args)
        rows = summarize(task, logs)
        found = teacher_pass(task, out, logs, rows)
        results[task] = {"arms": rows, "teacher_pass": found}
        figures[task] = {**results[task], **run_figures(logs, seeds, steps_for(task, args))}
        print("\n" + table(task, rows, steps_for(task, args)), flush=True)
        print(pass_report(found) + "\n", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"total {time.perf_counter() - began:.0f} s; results in {out / 'results.json'}")
    record(args.record, title="Data efficiency", command=command_line(), data={"tasks": figures})


if __name__ == "__main__":
    main()
