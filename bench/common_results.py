"""The one store of measured results, bench/results.json: a bench script records what it printed
at the end of a run, and the documentation's results page (bench/results_page.py, built by
`make docs`) is generated from it, so no measured figure is copied by hand.

An entry per benchmark run, by name: title, the command that ran, the date, the machine (CPU,
cores, torch and its device), the commit (`+dirty` when the tree had changes other than this
file), an optional note, and `data`, whatever the script measured (tables as rows of dicts,
curves as lists of points). Recording replaces the entry of that name and keeps the others.
`BENCH_RECORD=0` in the environment turns recording off (a trial run).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from common import cpu_model

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results.json"
MAX_POINTS = 60  # a curve keeps at most this many points


def machine(device: str | None = None) -> str:
    """The CPU's name and cores, torch's version and the device it ran on."""
    import torch

    if device is None:
        device = "CUDA" if torch.cuda.is_available() else "CPU"
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name()} (CUDA)"
    cores = len(os.sched_getaffinity(0))
    return f"{cores}-core {cpu_model()}, torch {torch.__version__}, {device}"


def commit(root: Path = ROOT) -> str:
    """The tree's short commit, `+dirty` when it has changes (bench/results.json aside)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    exclude = f":(exclude){RESULTS.relative_to(ROOT).as_posix()}"
    return head + ("+dirty" if git("status", "--porcelain", "--", ".", exclude) else "")


def command_line() -> str:
    """This process's command as a person would type it: `python bench/x.py --options`."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def record(
    name: str,
    *,
    title: str,
    command: str,
    data: dict,
    note: str | None = None,
    path: Path = RESULTS,
    machine_name: str | None = None,
    commit_name: str | None = None,
) -> dict:
    """Write (or replace) one entry of the results file, dated today, keeping the others; the
    entry is returned. `machine_name` and `commit_name` override what is found here (a run on
    another tree, such as a fresh clone)."""
    entry = {
        "title": title,
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": machine_name or machine(),
        "commit": commit_name or commit(),
        "data": data,
    }
    if note:
        entry["note"] = note
    if os.environ.get("BENCH_RECORD", "1") == "0":
        return entry
    path = Path(path)
    found = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    found[name] = entry
    write(found, path)
    print(f"recorded {name!r} in {path}")
    return entry


def write(results: dict, path: Path = RESULTS) -> None:
    """The results as stable JSON: keys sorted, indent 1, a trailing newline; written whole."""
    text = json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --- cells --------------------------------------------------------------------------------------

NUMBER = re.compile(r"[+-]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?")


def parse_cell(text: str):
    """A table cell as printed, as data: `1,928` → 1928, `92.5 %` → 0.925, `3.3×` → 3.3,
    `2.747 ± 0.005` → [2.747, 0.005], `—` → None; anything else stays a string."""
    text = str(text).replace("**", "").strip()
    if text in ("", "—", "–", "-"):
        return None
    if "±" in text:
        mean, spread = (parse_cell(part) for part in text.split("±", 1))
        if not all(isinstance(v, int | float) for v in (mean, spread)):
            return text
        return [mean / 100 if text.endswith("%") else mean, spread]
    body, scale = text, 1.0
    if body.endswith("%"):
        body, scale = body[:-1].strip(), 0.01
    elif body.endswith("×"):
        body = body[:-1].strip()
    if not NUMBER.fullmatch(body):
        return text
    value = float(body.replace(",", "")) * scale
    integral = scale == 1 and re.fullmatch(r"[+-]?[\d,]+", body) is not None
    return int(value) if integral else round(value, 12)


# --- curves --------------------------------------------------------------------------------------


def downsample(points: list, most: int = MAX_POINTS) -> list:
    """At most `most` points, evenly spaced, the first and the last kept."""
    if len(points) <= most:
        return list(points)
    picks = sorted({round(i * (len(points) - 1) / (most - 1)) for i in range(most)})
    return [points[i] for i in picks]


def eval_curve(log) -> list[list[float]]:
    """A `jestflow train` run's held-out curve (a `RunLog`): [step, loss, FLOPs, seconds] per
    evaluation (FLOPs of training and scoring, and the steps' seconds, up to that step)."""
    points = [
        [e.step, round(e.loss, 4), float(f"{e.flops:.4g}"), round(e.seconds, 2)]
        for e in log.evaluations
    ]
    return downsample(points)


def run_figures(logs: dict, seeds: list[int], steps: int) -> dict:
    """A task's training steps and, per arm (name → the `RunLog` of each of `seeds`, uniform
    among them), the first seed's curve and each seed's figures against that seed's uniform run."""
    from jestflow.trainer.results import compare

    curves = {arm: eval_curve(runs[0]) for arm, runs in logs.items()}
    per_seed = {}
    for arm, runs in logs.items():
        per_seed[arm] = []
        for seed, run, base in zip(seeds, runs, logs["uniform"], strict=False):
            found = compare(run, base)
            per_seed[arm].append(
                {
                    "seed": seed,
                    "steps_to_target": found.reached.step if found.reached else None,
                    "speed_up": found.speed_up,
                    "compute_saving": found.compute_saving,
                    "time_saving": found.time_saving,
                    "final_loss": round(run.final.loss, 4),
                    "recall": run.final.recall_at_1,
                }
            )
    return {"steps": steps, "curves": curves, "per_seed": per_seed}
