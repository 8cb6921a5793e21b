"""Memory over long runs: every long-running training path, run for `--steps` steps, with its
peak resident memory at step `--early` against its peak at the last step.

The training loops log their process's peak RSS (`peak_rss_mib`: in `log.jsonl` for `jestflow
train`, in the curve of `metrics.json` for `jestflow teacher train`), so the table reads it from
there; under torchrun that is rank 0's. The whole process tree's peak is polled from /proc as
well, and a train run's resident memory at its last step (`rss_mib`, "now"): a peak that
steps up while "now" stays low is a rare step that needed more, not memory kept. A path whose
memory does not grow has a ratio near 1.0 (target: ≤ 1.2).

Data: bench/data_efficiency.py's, made by bench/common_demo.py (the demo corpora: LM pool of
10,000 records, the text pairs and the image–text scenes), its built-in teachers trained briefly
(100 steps), and its "scored" shard sets (each pool curated with keep 1: every example scored).

Run: python bench/memory.py [--steps 2000] [--early 200] [--cases lm-learnability,...]
     [--out build/bench-memory] [--env MALLOC_MMAP_THRESHOLD_=65536]
     (--cases takes names from the table; default: all; --env runs each case once more with
     that in its environment, beside the plain run)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common_demo
from common import MIB, wait_tree_peak
from common_results import command_line, record

from jestflow.trainer.results import read_log
from jestflow.transforms.reporting.tables import text_table

# case prefix → the data-efficiency bench's task, whose corpora, teachers and curated sets these
# runs read
TASKS = {"lm": "lm", "pairs": "contrastive", "image-text": "image-text"}
TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc-per-node",
    "2",
    "-m",
    "jestflow.cli",
]
JESTFLOW = [sys.executable, "-m", "jestflow.cli"]


def field_options(task: str) -> list[str]:
    """The task's field map as `jestflow` options (`--text-field text`, ...)."""
    fields = common_demo.FIELDS[task]
    found = []
    for name in ("text", "query", "doc", "image", "caption"):
        if getattr(fields, name):
            found += [f"--{name}-field", getattr(fields, name)]
    return found


def cases(out: Path) -> dict[str, tuple[list[str], str]]:
    """name → (command, what logs the peaks: `train` or `teacher`). Every run reads its task's
    pool: raw (`--data`) for the modes that need no teacher values, curated shards otherwise."""
    found = {}
    for prefix, task in TASKS.items():
        data, fields = common_demo.data_file(out, task, 2), field_options(task)
        shards = str(common_demo.curated_dir(out, task, "scored") / "shards" / "*.tar")
        model_task = common_demo.MODEL_TASK[task]
        found[f"teacher-{prefix}"] = (
            [*JESTFLOW, "teacher", "train", data, "--task", model_task, *fields],
            "teacher",
        )
        modes = ["learnability"]
        if task == "lm":
            modes = ["uniform", "hard_learner", "easy_reference", "learnability"]
        for mode in modes:
            where = (
                ["--data", data, *fields]
                if mode in ("uniform", "hard_learner")
                else ["--shards", shards]
            )
            train = ["train", *where, "--task", model_task, "--mode", mode, "--eval-every", "1000"]
            found[f"{prefix}-{mode}"] = ([*JESTFLOW, *train], "train")
            if task == "lm" and mode == "learnability":
                found["lm-learnability-full-length"] = (
                    [*JESTFLOW, *train, "--score-seq-len", "0"],
                    "train",
                )
                found["lm-learnability-torchrun2"] = ([*TORCHRUN, *train], "train")
    return found


def prepare(out: Path) -> None:
    """The data-efficiency bench's corpora, brief built-in teachers and scored shard sets."""
    settings = argparse.Namespace(
        tasks=list(TASKS.values()),
        teacher_steps=100,
        pair_teacher="built-in",
        pair_teacher_steps=100,
    )
    common_demo.prepare(out, settings)
    for task in TASKS.values():
        common_demo.shard_set(out, task, "scored")


def peaks(output: Path, logged_by: str, early: int) -> tuple[float, float, float | None]:
    """(peak RSS MiB at step `early`, at the last step, RSS at the last step), as the run logged
    them; a teacher run logs only its peak, so the last is None for it."""
    if logged_by == "teacher":
        curve = json.loads((output / "metrics.json").read_text())["curve"]
    else:
        lines = (output / "log.jsonl").read_text().splitlines()
        curve = [r for r in map(json.loads, lines) if "peak_rss_mib" in r]
    at_early = next(r for r in curve if r["step"] >= early)
    return at_early["peak_rss_mib"], curve[-1]["peak_rss_mib"], curve[-1].get("rss_mib")


def step_seconds(output: Path, logged_by: str) -> float | None:
    """A `train` run's mean wall-clock seconds per step (None for a teacher run)."""
    if logged_by == "teacher":
        return None
    log = read_log(str(output))
    return log.step_seconds / log.steps


def run_case(
    name: str, command: list[str], logged_by: str, out: Path, args, extra: dict[str, str]
) -> dict:
    """One case in its own process tree, alone on the machine (with `extra` in its environment);
    its peaks and seconds."""
    output = out / "runs" / name.replace(" ", "-").replace("=", "-")
    command = [*command, "-o", str(output), "--steps", str(args.steps), "--device", "cpu"]
    command += ["--overwrite"] if logged_by == "teacher" else []
    shutil.rmtree(output, ignore_errors=True)
    env = {**os.environ, **extra}
    if "torch.distributed.run" in command:
        env["OMP_NUM_THREADS"] = "1"
    began = time.perf_counter()
    with open(out / f"{output.name}.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        tree_peak, _ = wait_tree_peak(proc, every=0.5)
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}); see {out / f'{output.name}.log'}")
    seconds = time.perf_counter() - began
    early, last, now = peaks(output, logged_by, args.early)
    return {
        "case": name,
        "early": early,
        "last": last,
        "ratio": last / early,
        "tree": tree_peak / MIB,
        "seconds": seconds,
        "step_seconds": step_seconds(output, logged_by),
        "now": now,
    }


def table_row(r: dict) -> list[str]:
    per_step = "—" if r["step_seconds"] is None else f"{r['step_seconds']:.3f}"
    now = "—" if r["now"] is None else f"{r['now']:.0f}"
    cells = [r["case"], f"{r['early']:.0f}", f"{r['last']:.0f}", f"{r['ratio']:.2f}", now]
    return [*cells, f"{r['tree']:.0f}", per_step, f"{r['seconds']:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--early", type=int, default=200)
    parser.add_argument("--cases", default="", help="Comma-separated case names (default: all).")
    parser.add_argument("--out", default="build/bench-memory")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="KEY=VALUE: run each case once more with this in its environment "
        "(e.g. MALLOC_MMAP_THRESHOLD_=65536), side by side.",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prepare(out)
    every = cases(out)
    chosen = [c for c in args.cases.split(",") if c] or list(every)
    unknown = sorted(set(chosen) - set(every))
    if unknown:
        sys.exit(f"unknown cases {unknown}; choose from {sorted(every)}")
    settings = [{}] + [dict([pair.split("=", 1)]) for pair in args.env]
    rows = []
    for name in chosen:
        for extra in settings:
            label = " ".join([name, *(f"{k}={v}" for k, v in extra.items())])
            rows.append(run_case(label, *every[name], out, args, extra))
            r = rows[-1]
            print(
                f"{label}: {r['early']:.0f} → {r['last']:.0f} MiB ({r['ratio']:.2f}×), "
                f"{r['seconds']:.0f} s",
                flush=True,
            )
    print(f"\npeak RSS of the process (MiB), step {args.early} against step {args.steps}:")
    header = ("case", f"step {args.early}", "last", "×", "now", "tree", "s/step", "s")
    print(text_table([table_row(r) for r in rows], header=header))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    record(
        "memory_env" if args.env else "memory",
        title="Memory over long runs",
        command=command_line(),
        data={"steps": args.steps, "early": args.early, "rows": rows},
    )


if __name__ == "__main__":
    main()
