"""`jestflow curate` (Beam, local runner) vs a plain single-process PyTorch loop, same data and teacher.

Synthetic LM data (JSONL, field `text`, 100–300 characters: half docstring paragraphs of Python's
standard library, half noise — word salad, random characters, hex blobs, boilerplate — plus one
broken line in a thousand) is written at each size, and one small byte-level teacher is fit once
for all variants. Then, per size, every variant curates the same files with the same super-batch
size, keep fraction and seed:

- `plain loop`: one process, no Beam. `read_file` streams the records, which are cut into
  super-batches of B in arrival order (never more than one super-batch held), scored with
  `lm_losses` exactly as the RunInference teacher handler scores them (the first
  `scoring.DEFAULT_SCORE_SEQ_LEN` tokens of each text, the job's default), selected with
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
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
POLL_S = 0.2
BROKEN_EVERY = 1000  # one broken JSON line per thousand: the rejected path runs too
BOILERPLATE = (
    "Copyright (c) All rights reserved. Terms of service | Privacy policy | Contact us. ",
    "Home > Products > Category > Page {n} of 100 | Next | Previous | Back to top ",
    "Click here to subscribe to our newsletter! Offer {n} ends soon. ",
)
PLAIN = "plain loop"


# --- data and teacher (parent process) ---------------------------------------------------------


def cut(text: str, n: int) -> str:
    """At most n characters of text, ending at a word boundary when one is near."""
    if len(text) <= n:
        return text
    head = text[:n]
    space = head.rfind(" ")
    return head[:space] if space >= n // 2 else head


def clean_text(rng: random.Random, paragraphs: list[str]) -> str:
    text = rng.choice(paragraphs)
    while len(text) < 100:
        text += " " + rng.choice(paragraphs)
    return cut(text, rng.randint(100, 300))


def noise_text(rng: random.Random, vocabulary: list[str]) -> str:
    n = rng.randint(100, 300)
    kind = rng.randrange(4)
    if kind == 0:  # word salad
        return cut(" ".join(rng.choices(vocabulary, k=n // 3)), n)
    if kind == 1:  # random characters, some outside ASCII
        return "".join(chr(rng.randrange(33, 0x250)) for _ in range(n))
    if kind == 2:  # hex blob
        return rng.randbytes(n // 2).hex()
    template = rng.choice(BOILERPLATE)
    return cut("".join(template.format(n=rng.randint(1, 99)) for _ in range(8)), n)


def write_data(folder: Path, size: int, files: int, seed: int) -> tuple[str, ...]:
    """`size` JSONL lines split over `files` files, written line by line; returns the glob."""
    from jestflow.demo.corpora import harvest

    paragraphs = harvest().paragraphs
    vocabulary = sorted({w for p in paragraphs[:2000] for w in re.findall(r"[A-Za-z]+", p)})
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    line = 0
    for i in range(files):
        count = size // files + (i < size % files)
        with open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(count):
                line += 1
                if line % BROKEN_EVERY == 0:
                    f.write('{"text": "broken\n')
                    continue
                text = (
                    clean_text(rng, paragraphs)
                    if rng.random() < 0.5
                    else noise_text(rng, vocabulary)
                )
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return (str(folder / "part-*.jsonl"),)


def train_small_teacher(root: Path, steps: int, seed: int) -> str:
    from jestflow.demo.corpora import harvest
    from jestflow.trainer.fit import TeacherConfig, train_teacher
    from jestflow.transforms.records import FieldMap

    rng = random.Random(seed + 1)
    paragraphs = harvest().paragraphs
    reference = root / "reference.jsonl"
    with open(reference, "w", encoding="utf-8") as f:
        for _ in range(1000):
            f.write(json.dumps({"text": clean_text(rng, paragraphs)}) + "\n")
    output = str(root / "teacher")
    train_teacher(
        TeacherConfig(
            inputs=(str(reference),),
            output=output,
            task="lm",
            fields=FieldMap(text="text"),
            steps=steps,
            batch_size=16,
            lr=3e-3,
            warmup_steps=5,
            seed=seed,
            device="cpu",
            overwrite=True,  # the built-in LM's default size, as `jestflow teacher train` makes it
        )
    )
    return output


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
    from jestflow.transforms.models.scoring import DEFAULT_SCORE_SEQ_LEN, lm_losses
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
        losses = lm_losses(model, [ex.text for ex in examples], max_len=DEFAULT_SCORE_SEQ_LEN)
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


def own_peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def child(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.variant == "plain":
        run_plain(args)
    else:
        run_beam(args)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "threads": torch.get_num_threads(), "vmhwm_kib": own_peak_kib()}
    print("RESULT " + json.dumps(result), flush=True)


# --- measuring a variant (parent process) ------------------------------------------------------


def descendants(root: int) -> list[int]:
    """root and all its descendants, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_rss(root: int) -> tuple[int, int]:
    """(resident bytes summed over the process tree, number of processes)."""
    total = n = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            n += 1
        except (OSError, IndexError, ValueError):
            continue
    return total, n


def measure(variant: str, workers: int, inputs, teacher: str, output: Path, args) -> dict:
    """Run one variant in a fresh process; its seconds, peak tree RSS and process count."""
    command = [sys.executable, os.path.abspath(__file__), "--_variant", variant]
    command += ["--_teacher", teacher, "--_output", str(output), "--_inputs", *inputs]
    command += ["--super-batch", str(args.super_batch), "--keep", str(args.keep)]
    command += ["--seed", str(args.seed), "--_workers", str(workers), "--dedup", args.dedup]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak = procs = 0
        while proc.poll() is None:
            rss, n = tree_rss(proc.pid)
            peak, procs = max(peak, rss), max(procs, n)
            time.sleep(POLL_S)
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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


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


def bench(args: argparse.Namespace, root: Path) -> None:
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers_list.split(",")]
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
    teacher = train_small_teacher(root, args.teacher_steps, args.seed)
    header = ["size", "variant", "seconds", "examples/s", "vs plain loop", "peak RSS MiB"]
    header += ["processes", "selected"]
    widths = [max(len(h), w) for h, w in zip(header, [7, 17, 7, 10, 13, 12, 9, 8], strict=True)]
    print(" | ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)), flush=True)
    results: dict[tuple[int, str], dict] = {}
    variants = [(PLAIN, "plain", 1)] + [
        (f"beam, {w} worker{'s' * (w != 1)}", "beam", w) for w in worker_counts
    ]
    for size in sizes:
        inputs = write_data(root / "data" / str(size), size, args.files, args.seed)
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
            cells += [counts["selected"]]
            print(" | ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)), flush=True)
            if args.keep_data is None:
                shutil.rmtree(output)
        if args.keep_data is None:
            shutil.rmtree(root / "data" / str(size))

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
    print(
        f"torch threads in the plain loop: {results[sizes[0], PLAIN]['threads']}; "
        f"total wall time {time.perf_counter() - started:.0f} s"
    )


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
