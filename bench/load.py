"""Load: `jestflow curate` on 100,000, 1,000,000 and 3,000,000 synthetic examples, local runner,
side by side.

The data, the broken lines and the process-tree RSS polling are `bench/curate.py`'s (imported, not
copied): synthetic LM JSONL (field `text`, 100–300 characters, half stdlib docstrings and half
noise, one broken JSON line per thousand so the rejected path runs) split over several files so
the reading parallelises. One small byte-level teacher (d_model 32, 1 layer, the first 64 bytes of
each text scored) is fit once for all sizes, so the job's own machinery — reading, grouping into
super-batches, selection, writing — is what is loaded, not the model.

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
import importlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
curate_bench = importlib.import_module("curate")  # bench/curate.py: data, RSS polling, CPU name

MIB = 2**20
POLL_S = 0.2
LOG_RSS_EVERY_S = 30.0
STATUSES = ("selected", "not_selected", "duplicate", "rejected")
CHUNK_LINE = re.compile(r"jestflow: scored file-[\d-]+buckets[\d-]+: (\d+) examples in ([\d.]+) s")


# --- the teacher ---------------------------------------------------------------------------------


def train_tiny_teacher(root: Path, args: argparse.Namespace) -> str:
    """The smallest sensible built-in byte LM, fit briefly on clean docstring text."""
    from jestflow.demo.corpora import harvest
    from jestflow.trainer.fit import TeacherConfig, train_teacher
    from jestflow.transforms.records import FieldMap

    rng = random.Random(args.seed + 1)
    paragraphs = harvest().paragraphs
    reference = root / "reference.jsonl"
    with open(reference, "w", encoding="utf-8") as f:
        for _ in range(1000):
            f.write(json.dumps({"text": curate_bench.clean_text(rng, paragraphs)}) + "\n")
    output = root / "teacher"
    shutil.rmtree(output, ignore_errors=True)
    train_teacher(
        TeacherConfig(
            inputs=(str(reference),),
            output=str(output),
            task="lm",
            fields=FieldMap(text="text"),
            steps=args.teacher_steps,
            batch_size=16,
            lr=3e-3,
            warmup_steps=5,
            seed=args.seed,
            device="cpu",
            d_model=32,
            n_layer=1,
            n_head=2,
            max_len=args.max_len,
        )
    )
    return str(output)


# --- one run -------------------------------------------------------------------------------------


def jestflow_cli() -> str:
    beside = Path(sys.executable).with_name("jestflow")
    found = str(beside) if beside.exists() else shutil.which("jestflow")
    if found is None:
        sys.exit("no `jestflow` command beside this Python or on PATH: pip install -e . first")
    return found


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * curate_bench.PAGE
    except (OSError, IndexError, ValueError):
        return 0


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under `folder` (0 when it is not there)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_curate(inputs, teacher: str, output: Path, log_path: Path, args) -> dict:
    """`jestflow curate` in a fresh process: seconds, RSS samples, CPU time, its output lines."""
    command = [jestflow_cli(), "curate", *inputs, "-o", str(output), "--teacher", teacher]
    command += ["--task", "lm", "--keep", str(args.keep), "--super-batch", str(args.super_batch)]
    command += ["--workers", str(args.workers), "--seed", str(args.seed), "--device", "cpu"]
    command += ["--dedup", args.dedup] if args.dedup else []
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, int, int, int]] = []  # (seconds, tree RSS, processes, runner RSS)
    lock = threading.Lock()
    cpu_before = children_cpu_s()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:

        def note(t: float, text: str) -> None:
            with lock:
                log.write(f"[{t:8.1f} s] {text}\n")
                log.flush()

        note(0.0, "$ " + " ".join(command))
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                t = time.perf_counter() - start
                lines.append((t, line.rstrip("\n")))
                note(t, line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        next_note, next_spill, spill = LOG_RSS_EVERY_S, 0.0, 0
        while proc.poll() is None:
            t = time.perf_counter() - start
            rss, n = curate_bench.tree_rss(proc.pid)
            samples.append((t, rss, n, rss_of(proc.pid)))
            if t >= next_spill:  # the job's spill files on disk
                spill, next_spill = max(spill, folder_bytes(output / "_temporary")), t + 5.0
            if t >= next_note:
                note(t, f"[bench] tree RSS {rss / MIB:,.0f} MiB over {n} processes")
                next_note += LOG_RSS_EVERY_S
            time.sleep(POLL_S)
        seconds = time.perf_counter() - start
        reader.join(timeout=10)
        note(seconds, f"[bench] exit {proc.returncode} after {seconds:.1f} s")
    if proc.returncode != 0:
        tail = "\n".join(text for _, text in lines[-60:])
        sys.exit(
            f"jestflow curate failed, exit {proc.returncode} after {seconds:.0f} s "
            f"(log: {log_path}):\n{tail}"
        )
    return {
        "seconds": seconds,
        "cpu_s": children_cpu_s() - cpu_before,
        "peak_mib": max((s[1] for s in samples), default=0) / MIB,
        "runner_mib": max((s[3] for s in samples), default=0) / MIB,
        "procs": max((s[2] for s in samples), default=0),
        "spill_mib": spill / MIB,
        "samples": samples,
        "lines": lines,
    }


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


def row(cells, widths) -> str:
    return " | ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))


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


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    print(
        f"{curate_bench.cpu_model()}, {cores} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; apache-beam {version('apache-beam')}; "
        f"Python {sys.version.split()[0]}"
    )
    print(
        f"`jestflow curate --workers {args.workers}` (local FnApiRunner), B={args.super_batch}, "
        f"keep {args.keep:.0%}, seed {args.seed}, {args.files} JSONL files per size, one broken "
        f"line per {curate_bench.BROKEN_EVERY}; teacher: the built-in byte LM, d_model 32, "
        f"1 layer, 2 heads, max_len {args.max_len}, {args.teacher_steps} steps; dedup "
        f"{args.dedup or 'near (the default)'}"
    )
    teacher = train_tiny_teacher(root, args)

    header = ["examples", "seconds", "examples/s", "peak RSS MiB", "runner MiB", "processes"]
    header += ["CPU s", "cores busy", "inputs", "selected", "not selected", "duplicate", "rejected"]
    header += ["shards"]
    header += ["shard MiB", "spill MiB", "invariant"]
    widths = [max(len(h), 9) for h in header]
    results: dict[int, dict] = {}
    problems: dict[int, list[str]] = {}
    print(row(header, widths), flush=True)
    for size in sizes:
        data, output = root / "data" / str(size), root / "out" / str(size)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(output, ignore_errors=True)
        inputs = curate_bench.write_data(data, size, args.files, args.seed)
        lines = input_lines(data)
        load = os.getloadavg()[0]
        result = run_curate(inputs, teacher, output, root / "logs" / f"{size}.log", args)
        result["load"] = load
        with open(output / "stats.json", encoding="utf-8") as f:
            stats = json.load(f)
        result["job_s"] = stats["timing"]["seconds"]
        shards = shard_files(output)
        problems[size] = check_accounting(output, lines, stats, shards)
        results[size] = result
        counts = stats["counts"]
        cells = [f"{size:,}", f"{result['seconds']:.1f}", f"{size / result['seconds']:,.0f}"]
        cells += [f"{result['peak_mib']:,.0f}", f"{result['runner_mib']:,.0f}", result["procs"]]
        cells += [f"{result['cpu_s']:,.0f}", f"{result['cpu_s'] / result['seconds']:.2f}"]
        cells += [f"{counts[k]:,}" for k in ("inputs", *STATUSES)]
        cells += [shards[0], f"{shards[1] / MIB:,.1f}", f"{result['spill_mib']:,.0f}"]
        cells += ["held" if not problems[size] else "BROKEN"]
        print(row(cells, widths), flush=True)
        if not args.keep_data:
            shutil.rmtree(data)
            shutil.rmtree(output)

    for size, found in problems.items():
        for problem in found:
            print(f"accounting at {size:,}: {problem}")
    print()
    print(
        "phases (from the job's progress lines): seconds; peak RSS MiB inside each, the tree's "
        "/ the runner process's"
    )
    names = [name for name, *_ in phases(results[sizes[0]])]
    if names:
        table = [["examples", *names]]
        for size in sizes:
            table.append([f"{size:,}"])
            for _, lo, hi, peaks in phases(results[size]):
                rss = "–" if peaks is None else f"{peaks[0]:,.0f} / {peaks[1]:,.0f}"
                table[-1].append(f"{hi - lo:,.1f} s; {rss}")
        widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
        for cells in table:
            print(row(cells, widths))
    else:
        print("no progress lines came through: phases unknown")
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
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
