"""Dedup: what it costs in the curation job, and what it finds on planted near-duplicates.

Cost: `jestflow curate` on N synthetic examples (bench/load.py's data, tiny teacher and
process-tree RSS polling) with `--dedup none`, `exact` and `near`, one after another in fresh
processes: wall seconds, examples/s, peak RSS of the process tree, and the copies removed. The
target is that near adds at most 15 % to the time of the job without dedup.

Quality: distinct standard-library docstring paragraphs of at least 200 characters, each with a
planted near copy (upper case, doubled whitespace, punctuation changed, and two words replaced),
deduplicated with the job's own functions (`transforms/dedup.py`: the same shingles, MinHash,
bands and clusters as the Beam step). Recall: planted copies put in their original's cluster
(target ≥ 95 %). False merges: distinct paragraphs put in one cluster with another one (target
≤ 1 %).

Run: python bench/dedup.py [--size 200000] [--workers 2] [--out build/bench-dedup]
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
load = importlib.import_module("load")  # data, teacher, one curate run with RSS polling
curate_bench = importlib.import_module("curate")

from jestflow.pipeline.demo_data import harvest  # noqa: E402
from jestflow.transforms.dedup import (  # noqa: E402
    DedupConfig,
    Member,
    band_keys,
    clusters,
    star_edges,
)
from jestflow.transforms.records import make_example  # noqa: E402
from jestflow.transforms.tables import text_table  # noqa: E402


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), 2):
        words[i] = rng.choice(["altered", "changed", "other", "new"])
    return "  ".join(words).upper().replace(".", " !").replace(",", ";")


def quality(args) -> list[list[str]]:
    rng = random.Random(0)
    originals = [p for p in harvest().paragraphs if len(p) >= 200][: args.paragraphs]
    texts = originals + [near_copy(t, rng) for t in originals]
    config = DedupConfig(threshold=args.threshold)
    began = time.perf_counter()
    buckets: dict[int, list[Member]] = defaultdict(list)
    for position, text in enumerate(texts):
        example = make_example(layout="text", text=text, position=position)
        member = Member(file=0, position=position, key=example.key, content=position)
        for key in band_keys(example, config):
            buckets[key].append(member)
    edges = [edge for members in buckets.values() for edge in star_edges(members)]
    copies = clusters(edges)
    seconds = time.perf_counter() - began
    n = len(originals)
    kept = {key: member.position for key, member in copies.kept_of.items()}
    keys = [make_example(layout="text", text=t, position=i).key for i, t in enumerate(texts)]
    cluster = [kept.get(keys[i], i) for i in range(len(texts))]
    found = sum(cluster[n + i] == cluster[i] for i in range(n))
    merged = sum(cluster[i] != i for i in range(n))  # an original merged into another's cluster
    bands, rows = config.bands
    return [[f"{n:,}", f"{bands} × {rows}", f"{found / n:.1%}", f"{merged / n:.2%}",
             f"{seconds:.1f}"]]  # fmt: skip


def cost(args) -> list[list[str]]:
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    args.max_len, args.teacher_steps, args.keep, args.super_batch = 64, 50, 0.2, 1024
    teacher = load.train_tiny_teacher(root, args)
    data = root / "data"
    shutil.rmtree(data, ignore_errors=True)
    inputs = curate_bench.write_data(data, args.size, args.files, args.seed)
    rows, base = [], None
    for method in ("none", "exact", "near"):
        args.dedup = method
        output = root / "out" / method
        shutil.rmtree(output, ignore_errors=True)
        result = load.run_curate(inputs, teacher, output, root / "logs" / f"{method}.log", args)
        stats = json.loads((output / "stats.json").read_text())
        base = base or result["seconds"]
        rows.append([method, f"{result['seconds']:.1f}", f"{100 * (result['seconds'] / base - 1):+.0f} %",
                     f"{args.size / result['seconds']:,.0f}", f"{result['peak_mib']:,.0f}",
                     f"{stats['counts']['duplicate']:,}",
                     f"{stats['scoring']['teacher']['scored']:,}"])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(BENCH.parent / "build" / "bench-dedup"))
    parser.add_argument("--skip-cost", action="store_true", help="Only the quality table.")
    args = parser.parse_args()
    print("Planted near copies (case, whitespace, punctuation, two words changed)")
    print(text_table(quality(args), header=("paragraphs", "bands × rows", "copies found",
                                            "false merges", "s")))  # fmt: skip
    if args.skip_cost:
        return
    print(f"\n`jestflow curate` on {args.size:,} examples, {args.workers} workers")
    print(text_table(cost(args), header=("--dedup", "seconds", "vs none", "examples/s",
                                         "peak RSS MiB", "duplicates", "teacher scored")))  # fmt: skip


if __name__ == "__main__":
    main()
