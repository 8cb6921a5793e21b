"""Load: `jestflow curate` on 100,000, 1,000,000 and 3,000,000 synthetic examples, local runner,
side by side.

The data and the broken lines are bench/curate.py's (`bench/common_data.py`), the process-tree
RSS polling `bench/common.py`'s: synthetic LM JSONL (field `text`, 100–300 characters, half
stdlib docstrings and half noise, one broken JSON line per thousand so the rejected path runs)
split over several files so the reading parallelises. One small byte-level teacher (d_model 32,
1 layer, the first 64 bytes of each text scored) is fit once for all sizes, so the job's own
machinery — reading, grouping into super-batches, selection, writing — is what is loaded, not
the model.

Each size runs `jestflow curate … --workers N` (the local FnApiRunner with N worker processes) in
a fresh process with the same teacher, options and seed. Measured for each:

- wall seconds of the command (interpreter start-up and imports included) and examples/s;
- peak RSS of the whole process tree (the CLI process, which is Beam's runner, and its SDK worker
  processes), polled from /proc every 0.2 s, and the runner process's own peak; shared pages count
  once per process, so the tree sum overstates the real footprint somewhat;
- CPU seconds of the tree (user + system), i.e. how many of the cores the job kept busy;
- the largest size of the job's spill files (`OUTPUT/_temporary/`), polled every 5 s;
- counts from `stats.json`, shard files and bytes on disk;
- the accounting invariant, checked with pyarrow from the manifest: one row per input line, each
  selected, not selected, a duplicate or rejected, no (source, position) twice, and the same
  counts as `stats.json` (inputs = selected + not selected + duplicate + rejected) and as the
  shard files;
- phases, from the job's progress lines (time-stamped as they arrive): start-up, reading and
  spilling (to the last file read), dedup (to the first chunk scored), scoring (to the last
  chunk), selection and writing the shards (to the last shard), and the closing files; each with
  its peak tree RSS.

Nothing is asserted; the figures are printed. Each run's time-stamped output, with the tree's RSS
every 30 s, goes to OUT/logs/SIZE.log (`tail -f` it during a long run).

Run: python bench/load.py [--sizes 100000,1000000,3000000] [--out build/bench-load] [--workers 2]
    [--files 20] [--super-batch 1024] [--keep 0.2] [--max-len 64] [--dedup none|exact|near]
    [--keep-data]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
from common import MIB, cpu_model, run_curate
from common_data import BROKEN_EVERY, train_tiny_teacher, write_data
from common_results import command_line, record

from jestflow.transforms.reporting.tables import text_table

BENCH = Path(__file__).resolve().parent
STATUSES = ("selected", "not_selected", "duplicate", "rejected")
CHUNK_LINE = re.compile(r"jestflow: scored file-[\d-]+buckets[\d-]+: (\d+) examples in ([\d.]+) s")
HEADER = ("examples", "seconds", "examples/s", "peak RSS MiB", "runner MiB", "processes")
HEADER += ("CPU s", "cores busy", "inputs", "selected", "not selected", "duplicate", "rejected")
HEADER += ("shards", "shard MiB", "spill MiB", "invariant")


# --- the run's phases --------------------------------------------------------------------------


def phases(result: dict) -> list[tuple[str, float, float, tuple[float, float] | None]]:
    """(phase, start s, end s, (peak tree RSS, peak runner RSS) MiB or None when no sample fell
    inside) from the time-stamped progress lines. The workers share one stderr, so two progress
    lines can arrive run together: they are searched for, not matched at the start."""
    lines = result["lines"]
    reads = [t for t, text in lines if "jestflow: read " in text]
    scored = [t for t, text in lines if CHUNK_LINE.search(text)]
    shards = [t for t, text in lines if "jestflow: wrote shards/" in text]
    if not (reads and scored and shards):
        return []
    bounds = [
        ("start-up + read + spill", 0.0, max(reads)),
        ("dedup", max(reads), min(scored)),
        ("score", min(scored), max(scored)),
        ("select + write shards", max(scored), max(shards)),
        ("closing files + exit", max(shards), result["seconds"]),
    ]
    out = []
    for name, lo, hi in bounds:
        inside = [s for s in result["samples"] if lo <= s[0] <= hi]
        peaks = (
            (max(s[1] for s in inside) / MIB, max(s[3] for s in inside) / MIB) if inside else None
        )
        out.append((name, lo, hi, peaks))
    return out


def scoring_seconds(result: dict) -> tuple[int, float]:
    """(chunks, their scoring seconds summed over the workers) from the progress lines."""
    found = [m for _, text in result["lines"] for m in CHUNK_LINE.finditer(text)]
    return len(found), sum(float(m.group(2)) for m in found)


# --- the checks ----------------------------------------------------------------------------------


def input_lines(folder: Path) -> int:
    total = 0
    for path in sorted(folder.glob("part-*.jsonl")):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                total += chunk.count(b"\n")
    return total


def shard_files(output: Path) -> tuple[int, int]:
    files = [p for p in (output / "shards").rglob("*.tar") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def check_accounting(output: Path, lines: int, stats: dict, shards: tuple[int, int]) -> list[str]:
    """What breaks the accounting, read from the manifest with pyarrow; empty when it held."""
    table = ds.dataset(str(output / "manifest"), format="parquet").to_table(
        columns=["status", "source", "position"]
    )
    found = {row["values"]: row["counts"] for row in pc.value_counts(table["status"]).to_pylist()}
    manifest = {status: found.get(status, 0) for status in STATUSES}
    problems = []
    if table.num_rows != lines:
        problems.append(f"the manifest has {table.num_rows:,} rows for {lines:,} input lines")
    if sum(manifest.values()) != table.num_rows:
        other = {s: n for s, n in found.items() if s not in STATUSES}
        problems.append(f"manifest rows with another status: {other}")
    distinct = table.group_by(["source", "position"]).aggregate([]).num_rows
    if distinct != table.num_rows:
        problems.append(f"{table.num_rows - distinct:,} manifest rows repeat a (source, position)")
    counts = stats["counts"]
    if counts["inputs"] != sum(counts[s] for s in STATUSES):
        problems.append(
            f"stats.json: inputs {counts['inputs']:,} ≠ selected + not selected + "
            f"duplicate + rejected {sum(counts[s] for s in STATUSES):,}"
        )
    for status in STATUSES:
        if counts[status] != manifest[status]:
            problems.append(
                f"{status}: stats.json {counts[status]:,}, manifest {manifest[status]:,}"
            )
    listed = (stats["shards"]["files"], stats["shards"]["bytes"])
    if listed != shards:
        problems.append(
            f"stats.json lists {listed[0]} shards of {listed[1]:,} bytes; on disk "
            f"{shards[0]} of {shards[1]:,}"
        )
    if stats["shards"]["samples"] != manifest["selected"]:
        problems.append(
            f"shards hold {stats['shards']['samples']:,} samples, the manifest "
            f"selects {manifest['selected']:,}"
        )
    return problems


# --- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,3000000", help="input records per run")
    parser.add_argument(
        "--out",
        default=str(BENCH.parent / "build" / "bench-load"),
        help="data, teacher, outputs and logs [build/bench-load]",
    )
    parser.add_argument("--workers", type=int, default=2, help="local runner worker processes")
    parser.add_argument("--files", type=int, default=20, help="JSONL files per size")
    parser.add_argument("--super-batch", type=int, default=1024, help="super-batch size B")
    parser.add_argument("--keep", type=float, default=0.2, help="fraction of B to keep")
    parser.add_argument("--max-len", type=int, default=64, help="teacher: bytes scored per text")
    parser.add_argument("--teacher-steps", type=int, default=50, help="teacher training steps")
    parser.add_argument("--seed", type=int, default=0, help="data, teacher and selection seed")
    parser.add_argument(
        "--dedup",
        choices=("none", "exact", "near"),
        help="the job's --dedup (default: the job's, near for text)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep each size's data and output under --out"
    )
    return parser.parse_args()


def print_setup(args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    print(
        f"{cpu_model()}, {cores} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; apache-beam {version('apache-beam')}; "
        f"Python {sys.version.split()[0]}"
    )
    print(
        f"`jestflow curate --workers {args.workers}` (local FnApiRunner), B={args.super_batch}, "
        f"keep {args.keep:.0%}, seed {args.seed}, {args.files} JSONL files per size, one broken "
        f"line per {BROKEN_EVERY}; teacher: the built-in byte LM, d_model 32, "
        f"1 layer, 2 heads, max_len {args.max_len}, {args.teacher_steps} steps; dedup "
        f"{args.dedup or 'near (the default)'}"
    )


def run_size(size: int, teacher: str, root: Path, args) -> tuple[dict, list, list[str]]:
    """Data of `size` records curated once: the run's figures, its table row, and what broke
    the accounting (empty when it held)."""
    data, output = root / "data" / str(size), root / "out" / str(size)
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    inputs = write_data(data, size, args.files, args.seed)
    lines = input_lines(data)
    load = os.getloadavg()[0]
    result = run_curate(inputs, teacher, output, root / "logs" / f"{size}.log", args)
    result["load"] = load
    with open(output / "stats.json", encoding="utf-8") as f:
        stats = json.load(f)
    result["job_s"] = stats["timing"]["seconds"]
    shards = shard_files(output)
    problems = check_accounting(output, lines, stats, shards)
    counts = stats["counts"]
    cells = [f"{size:,}", f"{result['seconds']:.1f}", f"{size / result['seconds']:,.0f}"]
    cells += [f"{result['peak_mib']:,.0f}", f"{result['runner_mib']:,.0f}", result["procs"]]
    cells += [f"{result['cpu_s']:,.0f}", f"{result['cpu_s'] / result['seconds']:.2f}"]
    cells += [f"{counts[k]:,}" for k in ("inputs", *STATUSES)]
    cells += [shards[0], f"{shards[1] / MIB:,.1f}", f"{result['spill_mib']:,.0f}"]
    cells += ["held" if not problems else "BROKEN"]
    print(f"{size:,}: {result['seconds']:.1f} s, accounting {cells[-1]}", flush=True)
    result["row"] = {
        "dedup": args.dedup or "near",
        "examples": size,
        "seconds": result["seconds"],
        "examples_per_s": size / result["seconds"],
        "peak_mib": result["peak_mib"],
        "runner_mib": result["runner_mib"],
        "processes": result["procs"],
        "cpu_s": result["cpu_s"],
        **{k: counts[k] for k in ("inputs", *STATUSES)},
        "shards": shards[0],
        "shard_mib": shards[1] / MIB,
        "spill_mib": result["spill_mib"],
        "accounting": "held" if not problems else "broken",
    }
    if not args.keep_data:
        shutil.rmtree(data)
        shutil.rmtree(output)
    return result, cells, problems


def print_phases(results: dict[int, dict], sizes: list[int]) -> None:
    print(
        "phases (from the job's progress lines): seconds; peak RSS MiB inside each, the tree's "
        "/ the runner process's"
    )
    names = [name for name, *_ in phases(results[sizes[0]])]
    if not names:
        print("no progress lines came through: phases unknown")
        return
    rows = []
    for size in sizes:
        rows.append([f"{size:,}"])
        for _, lo, hi, peaks in phases(results[size]):
            rss = "–" if peaks is None else f"{peaks[0]:,.0f} / {peaks[1]:,.0f}"
            rows[-1].append(f"{hi - lo:,.1f} s; {rss}")
    print(text_table(rows, header=["examples", *names]))


def print_scaling(results: dict[int, dict], sizes: list[int], root: Path) -> None:
    """Each size's own time, scoring and load; the largest size against the smallest."""
    for size in sizes:
        n, seconds = scoring_seconds(results[size])
        print(
            f"{size:,}: the job's own time (stats.json) {results[size]['job_s']:,.1f} s; "
            f"{n} chunks scored in {seconds:,.1f} s summed over the workers "
            f"({seconds / max(n, 1):.2f} s each); load average before the run "
            f"{results[size]['load']:.2f}; log {root / 'logs' / f'{size}.log'}"
        )
    small, large = min(sizes), max(sizes)
    if small != large:
        a, b = results[small], results[large]
        rate = (large / b["seconds"]) / (small / a["seconds"])
        print(
            f"{large:,} vs {small:,}: {b['seconds'] / a['seconds']:.2f}× the time for "
            f"{large / small:.0f}× the examples (throughput {rate:.2f}×), peak tree RSS "
            f"{b['peak_mib'] / a['peak_mib']:.2f}×, runner RSS "
            f"{b['runner_mib'] / a['runner_mib']:.2f}×; per extra example, tree "
            f"{(b['peak_mib'] - a['peak_mib']) * 1024 / (large - small):.1f} KiB, runner "
            f"{(b['runner_mib'] - a['runner_mib']) * 1024 / (large - small):.1f} KiB"
        )


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    print_setup(args)
    teacher = train_tiny_teacher(root, args)
    results: dict[int, dict] = {}
    problems: dict[int, list[str]] = {}
    rows = []
    for size in sizes:
        results[size], row, problems[size] = run_size(size, teacher, root, args)
        rows.append(row)
    print(text_table(rows, header=HEADER), flush=True)
    for size, found in problems.items():
        for problem in found:
            print(f"accounting at {size:,}: {problem}")
    print()
    print_phases(results, sizes)
    print_scaling(results, sizes, root)
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    record_load(args, results, sizes)


def record_load(args, results: dict[int, dict], sizes: list[int]) -> None:
    """The table and the phases, in bench/results.json (`load`, or `load_dedup_none` …)."""
    phase_rows = [
        {"examples": size, "phase": name, "seconds": hi - lo, "peak_mib": peaks and peaks[0]}
        for size in sizes
        for name, lo, hi, peaks in phases(results[size])
    ]
    data = {
        "workers": args.workers,
        "rows": [results[size]["row"] for size in sizes],
        "phases": phase_rows,
    }
    name = "load" if args.dedup in (None, "near") else f"load_dedup_{args.dedup}"
    record(name, title="Load", command=command_line(), data=data)


if __name__ == "__main__":
    main()
