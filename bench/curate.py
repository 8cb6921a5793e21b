"""`jestflow curate` (Beam, local runner) vs a plain single-process PyTorch loop, same data and teacher.

Synthetic LM data (JSONL, field `text`, 100–300 characters: half docstring paragraphs of Python's
standard library, half noise — word salad, random characters, hex blobs, boilerplate — plus one
broken line in a thousand) is written at each size, and one small byte-level teacher is fit once
for all variants (both `bench/common_data.py`'s). Then, per size, every variant curates the same files with the same super-batch
size, keep fraction and seed:

- `plain loop`: one process, no Beam. `read_file` streams the records, which are cut into
  super-batches of B in arrival order (never more than one super-batch held), scored with
  `LmScoring().score` exactly as the RunInference teacher handler scores them (whole documents,
  window by window, the job's default), selected with
  `select_super_batch`, and written with the job's own sinks (one ranked shard and manifest part
  per super-batch, dead letters per input file).
- `beam, N workers`: `run_curation` on the local FnApiRunner with N worker processes, with
  `--dedup none` by default: the plain loop does not deduplicate (`--dedup near` measures the
  job's default, which also finds the near copies).

Each variant runs in a fresh subprocess. Its time is measured inside it (model load and Beam
start-up included, interpreter start-up and imports not); its peak RSS is that of the whole
process tree (Beam's SDK workers are child processes): the sum of the resident sets of the
process and all its descendants, polled from /proc every 0.2 s (at least the main process's own
VmHWM). Shared pages count once per process, so the tree sum overstates Beam's real footprint
somewhat. Targets: 2 workers at least as fast as the plain loop at every size, and the peak RSS
at the largest size within 1.5× of the smallest (streaming, not loading everything).

Run: python bench/curate.py [--sizes 20000,200000] [--super-batch 1024] [--keep 0.2]
    [--workers-list 1,2] [--keep-data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import common_results
import torch
from common import MIB, cpu_model, peak_rss_kib, wait_tree_peak
from common_data import train_small_teacher, write_data

from jestflow.transforms.reporting.tables import text_table

PLAIN = "plain loop"


# --- the variants (child process) --------------------------------------------------------------


def run_beam(args: argparse.Namespace) -> None:
    from jestflow.pipeline.config import CurateConfig
    from jestflow.pipeline.job import run_curation
    from jestflow.transforms.dedup.copies import DedupConfig
    from jestflow.transforms.records import FieldMap
    from jestflow.transforms.selection.offline import SelectionConfig

    config = CurateConfig(
        inputs=tuple(args.inputs),
        output=args.output,
        teacher=args.teacher,
        task="lm",
        fields=FieldMap(text="text"),
        selection=SelectionConfig(keep=args.keep, seed=args.seed),
        super_batch=args.super_batch,
        device="cpu",
        workers=args.workers,
        dedup=DedupConfig(method=args.dedup),
    )
    run_curation(config)


def run_plain(args: argparse.Namespace) -> None:
    """read → super-batches of B in arrival order → teacher losses → selection → shards/manifest,
    with the job's own scoring, selection and writing functions but no Beam."""
    from jestflow.pipeline.sinks import write_not_selected, write_rejected
    from jestflow.pipeline.write_step import ShardLimits, write_shard_group
    from jestflow.transforms.formats.model_files import fingerprint, load_model
    from jestflow.transforms.models.documents import LmScoring
    from jestflow.transforms.readers import input_urls, read_file
    from jestflow.transforms.records import FieldMap, Rejected
    from jestflow.transforms.selection.offline import (
        ScoredBatch,
        SelectionConfig,
        select_super_batch,
    )

    fields, selection = FieldMap(text="text"), SelectionConfig(keep=args.keep, seed=args.seed)
    model = load_model(args.teacher, task="lm", device=torch.device("cpu"))
    info = {"teacher": fingerprint(args.teacher)}
    limits = ShardLimits(max_count=10_000, max_bytes=1 << 30)

    def curate_super_batch(super_batch: int, examples: list) -> None:
        losses, _ = LmScoring().score(model, [ex.text for ex in examples])
        scored = ScoredBatch(super_batch=super_batch, examples=examples, loss=losses.numpy())
        decisions = select_super_batch(scored, selection)
        kept = [d for d in decisions if d.selected]
        write_shard_group(
            (super_batch, kept),
            [],
            output=args.output,
            tiers=1,
            quantum=selection.quantum,
            limits=limits,
            info=info,
        )
        write_not_selected(decisions, args.output)

    pending: list = []
    super_batch = 0
    for index, url in enumerate(input_urls(args.inputs)):
        rejected: list[Rejected] = []
        for record in read_file(url, fields):
            if isinstance(record, Rejected):
                rejected.append(record)
                continue
            pending.append(record)
            if len(pending) == args.super_batch:
                curate_super_batch(super_batch, pending)
                pending, super_batch = [], super_batch + 1
        if rejected:
            write_rejected((index, rejected), args.output)
    if pending:
        curate_super_batch(super_batch, pending)


def child(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.variant == "plain":
        run_plain(args)
    else:
        run_beam(args)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "threads": torch.get_num_threads(), "vmhwm_kib": peak_rss_kib()}
    print("RESULT " + json.dumps(result), flush=True)


# --- measuring a variant (parent process) ------------------------------------------------------


def measure(variant: str, workers: int, inputs, teacher: str, output: Path, args) -> dict:
    """Run one variant in a fresh process; its seconds, peak tree RSS and process count."""
    command = [sys.executable, os.path.abspath(__file__), "--_variant", variant]
    command += ["--_teacher", teacher, "--_output", str(output), "--_inputs", *inputs]
    command += ["--super-batch", str(args.super_batch), "--keep", str(args.keep)]
    command += ["--seed", str(args.seed), "--_workers", str(workers), "--dedup", args.dedup]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak, procs = wait_tree_peak(proc)
        log.seek(0)
        text = log.read()
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{variant} ({workers} workers) failed, exit {proc.returncode}:\n{text[-4000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["peak_mib"] = max(peak, result["vmhwm_kib"] * 1024) / MIB
    result["procs"] = procs
    return result


def check_counts(output: Path, size: int) -> dict[str, int]:
    from jestflow.transforms.formats.manifest import read_manifest, status_counts

    counts = status_counts(read_manifest(str(output / "manifest")))
    if counts["inputs"] != size:
        sys.exit(f"{output}: the manifest accounts for {counts['inputs']} of {size} inputs")
    return counts


# --- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000", help="input records per run")
    parser.add_argument("--super-batch", type=int, default=1024, help="super-batch size B")
    parser.add_argument("--keep", type=float, default=0.2, help="fraction of B to keep")
    parser.add_argument("--workers-list", default="1,2", help="Beam worker counts to run")
    parser.add_argument(
        "--dedup",
        default="none",
        choices=("none", "exact", "near"),
        help="the job's dedup (the plain loop has none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data, teacher and selection seed")
    parser.add_argument("--files", type=int, default=8, help="JSONL files per size")
    parser.add_argument("--teacher-steps", type=int, default=20, help="teacher training steps")
    parser.add_argument(
        "--keep-data", metavar="DIR", help="write data, teacher and outputs here and keep them"
    )
    hidden = argparse.SUPPRESS  # the child process's options
    parser.add_argument("--_variant", dest="variant", choices=("plain", "beam"), help=hidden)
    parser.add_argument("--_inputs", dest="inputs", nargs="+", help=hidden)
    parser.add_argument("--_teacher", dest="teacher", help=hidden)
    parser.add_argument("--_output", dest="output", help=hidden)
    parser.add_argument("--_workers", dest="workers", type=int, default=1, help=hidden)
    return parser.parse_args()


HEADER = ("size", "variant", "seconds", "examples/s", "vs plain loop", "peak RSS MiB")
HEADER += ("processes", "selected")


def print_setup(args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    print(
        f"{cpu_model()}, {cores} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; apache-beam {version('apache-beam')}"
    )
    print(
        f"B={args.super_batch}, keep {args.keep:.0%}, seed {args.seed}, {args.files} JSONL files "
        f"per size, teacher: the built-in byte LM (d_model 128, 2 layers, max_len 256), "
        f"{args.teacher_steps} steps, scoring the first 64 tokens; the job's dedup: "
        f"{args.dedup}"
    )


def run_size(size: int, variants: list, teacher: str, root: Path, args, results: dict) -> list:
    """Every variant on `size` records (written first): its table rows; results by (size,
    variant name)."""
    inputs = write_data(root / "data" / str(size), size, args.files, args.seed)
    rows = []
    for name, kind, workers in variants:
        output = root / "out" / str(size) / f"{kind}-{workers}"
        shutil.rmtree(output, ignore_errors=True)
        result = measure(kind, workers, inputs, teacher, output, args)
        result["rate"] = size / result["seconds"]
        counts = check_counts(output, size)
        results[size, name] = result
        vs = result["rate"] / results[size, PLAIN]["rate"]
        cells = [size, name, f"{result['seconds']:.1f}", f"{result['rate']:.0f}"]
        cells += [f"{vs:.2f}×", f"{result['peak_mib']:.0f}", result["procs"]]
        rows.append([*cells, counts["selected"]])
        result["row"] = {
            "examples": size,
            "variant": name,
            "seconds": result["seconds"],
            "examples_per_s": result["rate"],
            "vs_plain": vs,
            "peak_mib": result["peak_mib"],
            "processes": result["procs"],
            "selected": counts["selected"],
        }
        print(f"{size} {name}: {result['seconds']:.1f} s", flush=True)
        if args.keep_data is None:
            shutil.rmtree(output)
    if args.keep_data is None:
        shutil.rmtree(root / "data" / str(size))
    return rows


def print_targets(results: dict, sizes: list[int], worker_counts: list[int], variants) -> None:
    two = "beam, 2 workers"
    if 2 in worker_counts:
        speed = {s: results[s, two]["rate"] / results[s, PLAIN]["rate"] for s in sizes}
        met = "met" if all(r >= 1 for r in speed.values()) else "NOT met"
        detail = ", ".join(f"{s}: {r:.2f}×" for s, r in speed.items())
        print(f"target speed (2 workers ≥ plain loop) {met}: {detail}")
    else:
        print("target speed (2 workers ≥ plain loop): not measured (no 2 in --workers-list)")
    small, large = min(sizes), max(sizes)
    if small != large:
        peaks = {
            v: (results[small, v]["peak_mib"], results[large, v]["peak_mib"]) for v, *_ in variants
        }
        ratios = {v: high / low for v, (low, high) in peaks.items()}
        met = "met" if all(r <= 1.5 for r in ratios.values()) else "NOT met"
        detail = ", ".join(f"{v}: {r:.2f}×" for v, r in ratios.items())
        print(f"target memory (peak RSS at {large} ≤ 1.5 × at {small}) {met}: {detail}")
    else:
        print("target memory: not measured (needs two sizes)")


def bench(args: argparse.Namespace, root: Path) -> None:
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers_list.split(",")]
    print_setup(args)
    teacher = train_small_teacher(root, args.teacher_steps, args.seed)
    results: dict[tuple[int, str], dict] = {}
    variants = [(PLAIN, "plain", 1)] + [
        (f"beam, {w} worker{'s' * (w != 1)}", "beam", w) for w in worker_counts
    ]
    rows = [row for size in sizes for row in run_size(size, variants, teacher, root, args, results)]
    print(text_table(rows, header=HEADER), flush=True)
    print_targets(results, sizes, worker_counts, variants)
    print(
        f"torch threads in the plain loop: {results[sizes[0], PLAIN]['threads']}; "
        f"total wall time {time.perf_counter() - started:.0f} s"
    )
    name = "curate" if args.dedup == "none" else f"curate_dedup_{args.dedup}"
    data = {"dedup": args.dedup, "rows": [r["row"] for r in results.values()]}
    title = "The curation job against a plain loop"
    common_results.record(name, title=title, command=common_results.command_line(), data=data)


def main() -> None:
    args = parse_args()
    if args.variant is not None:
        child(args)
        return
    if args.keep_data:
        root = Path(args.keep_data).resolve()
        root.mkdir(parents=True, exist_ok=True)
        bench(args, root)
        return
    with tempfile.TemporaryDirectory(prefix="jestflow-bench-") as tmp:
        bench(args, Path(tmp))


if __name__ == "__main__":
    main()
