"""The demo, recorded: `jestflow demo` in a fresh process, timed, with the peak resident memory of
its process tree (polled from /proc), and its results — each task's table (steps, compute and
time to the baseline's final held-out loss, clean share), the seconds of every stage, the
teacher's pass — with the two students' held-out curves read from their logs, recorded as the
`demo` entry of bench/results.json (`demo_lm` … for a run of some tasks only).

`--from PATH` records a finished demo's results.json instead of running one (its wall time and
memory unknown, unless given with `--wall-seconds` and `--peak-rss-mib`; `--commit` names the
commit it ran, e.g. the one bench/fresh_clone.py cloned).

Run: python bench/demo.py [--output build/demo] [--task lm]... [--from build/demo/results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from common import MIB, jestflow_cli, wait_tree_peak
from common_results import command_line, eval_curve, record

from jestflow.trainer.results import read_log

TASKS = ("lm", "text-pairs", "image-text")
RUNS = ("student-uniform", "student-jest")


def run_demo(output: str, tasks: list[str]) -> tuple[float, float]:
    """`jestflow demo --output OUTPUT --overwrite` (with the tasks asked for): its wall seconds
    and the peak RSS of its process tree, MiB."""
    command = [jestflow_cli(), "demo", "--output", output, "--overwrite"]
    command += [arg for task in tasks for arg in ("--task", task)]
    began = time.perf_counter()
    proc = subprocess.Popen(command)
    peak, _ = wait_tree_peak(proc)
    if proc.returncode != 0:
        raise SystemExit(f"jestflow demo failed, exit {proc.returncode}")
    return time.perf_counter() - began, peak / MIB


def demo_data(results_path: Path, wall: float | None, peak: float | None) -> dict:
    """A finished demo's results.json, with each student's held-out curve ([step, loss, FLOPs,
    seconds] per evaluation) from its log beside it."""
    results = json.loads(results_path.read_text())
    tasks = results["tasks"]
    for task, found in tasks.items():
        found["curves"] = {
            run: eval_curve(read_log(str(results_path.parent / task / run))) for run in RUNS
        }
    return {
        "config": results["config"],
        "order": [t for t in results["config"]["tasks"] if t in tasks],
        "tasks": tasks,
        "seconds": results["seconds"],
        "wall_seconds": wall,
        "peak_rss_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="build/demo")
    parser.add_argument("--task", action="append", choices=TASKS, help="Default: every task.")
    parser.add_argument("--from", dest="source", help="A finished demo's results.json to record.")
    parser.add_argument("--command", help="With --from: the command that made it.")
    parser.add_argument("--wall-seconds", type=float, help="With --from: its wall time.")
    parser.add_argument("--peak-rss-mib", type=float, help="With --from: its peak memory.")
    parser.add_argument("--commit", help="With --from: the commit it ran (default: this tree's).")
    parser.add_argument("--note", help="With --from: where it ran, say.")
    args = parser.parse_args()
    if args.source:
        path, wall, peak = Path(args.source), args.wall_seconds, args.peak_rss_mib
        command = args.command or f"jestflow demo --output {path.parent} --overwrite"
    else:
        wall, peak = run_demo(args.output, args.task or [])
        path, command = Path(args.output) / "results.json", command_line()
    data = demo_data(path, wall, peak)
    if wall is not None:
        print(f"demo: {wall:.0f} s wall time, peak RSS {peak or 0:,.0f} MiB (process tree)")
    tasks = data["order"]
    name = "demo" if set(tasks) == set(TASKS) else "demo_" + "_".join(tasks).replace("-", "_")
    record(
        name,
        title="The demo",
        command=command,
        data=data,
        note=args.note,
        commit_name=args.commit if args.source else None,
    )


if __name__ == "__main__":
    main()
