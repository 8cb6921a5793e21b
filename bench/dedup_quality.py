"""Dedup: what it costs in the curation job, and what it finds on planted near-duplicates.

Cost: `jestflow curate` on N synthetic examples (bench/load.py's data and tiny teacher,
`bench/common_data.py`, and its run with process-tree RSS polling, `bench/common.py`) with
`--dedup none`, `exact` and `near`, one after another in fresh processes: wall seconds,
examples/s, peak RSS of the process tree, and the copies removed. The target is that near adds at
most 15 % to the time of the job without dedup. The tiny teacher makes the job almost all
plumbing, the worst case for dedup's share; `--teacher build/demo/lm/teacher` times it with the
demo's teacher instead.

Quality: distinct standard-library docstring paragraphs of at least 200 characters, each with a
planted near copy (upper case, doubled whitespace, punctuation changed, and two words replaced),
deduplicated with the job's own functions (`transforms/dedup/copies.py`: the same shingles, MinHash,
bands, candidate edges, signature check and clusters as the Beam step), and without the signature
check for comparison. Recall: planted copies put in their original's cluster (target ≥ 95 %),
of all of them and of those whose true Jaccard similarity with their original reaches the
threshold (the others are not copies at that threshold).
False merges: of the distinct paragraphs — those with no other paragraph at a true Jaccard
similarity of the threshold or more, all pairs compared — the share put in one cluster with
another paragraph (target ≤ 1 %).

Run: python bench/dedup_quality.py [--size 200000] [--workers 2] [--out build/bench-dedup]
    [--teacher DIR] [--methods none,exact,near] [--skip-cost|--skip-quality]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import jaccard, near_duplicates, run_curate
from common_data import train_tiny_teacher, write_data
from common_results import command_line, parse_cell, record

from jestflow.demo.corpora import harvest
from jestflow.transforms.dedup.copies import (
    DedupConfig,
    Member,
    band_keys,
    bucket_edges,
    clusters,
    content_hash,
    near_members,
)
from jestflow.transforms.dedup.minhash import shingles
from jestflow.transforms.dedup.minhash import signatures as sigs
from jestflow.transforms.records import make_example
from jestflow.transforms.reporting.tables import text_table

BENCH = Path(__file__).resolve().parent


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), 2):
        words[i] = rng.choice(["altered", "changed", "other", "new"])
    return "  ".join(words).upper().replace(".", " !").replace(",", ";")


def quality(args) -> list[list[str]]:
    rng = random.Random(0)
    originals = [p for p in harvest().paragraphs if len(p) >= 200][: args.paragraphs]
    n = len(originals)
    texts = originals + [near_copy(t, rng) for t in originals]
    config = DedupConfig(threshold=args.threshold)
    examples = [make_example(layout="text", text=t, position=i) for i, t in enumerate(texts)]
    began = time.perf_counter()
    buckets: dict[int, list[Member]] = defaultdict(list)
    members = [
        Member(file=0, position=i, key=e.key, content=content_hash(e))
        for i, e in enumerate(examples)
    ]
    for member, keys in zip(members, band_keys(examples, config), strict=True):
        for key in keys:
            buckets[key].append(member)
    wanted = {key for bucket in buckets.values() for key in near_members(bucket)}
    ends = [e for e in examples if e.key in wanted]
    signatures = {
        e.key: sig.tobytes()
        for e, sig in zip(ends, sigs(ends, config.num_perm, config.seed), strict=True)
    }
    seconds = time.perf_counter() - began
    sets = [set(shingles(e).tolist()) for e in examples]
    similar = near_duplicates(sets[:n], args.threshold)
    above = [i for i in range(n) if jaccard(sets[i], sets[n + i]) >= args.threshold]
    distinct = [i for i in range(n) if i not in similar]
    bands, rows = config.bands
    table = []
    for name, agree in (("bands only", 0.0), ("bands + signatures", args.threshold)):
        copies = clusters(
            edge for bucket in buckets.values() for edge in bucket_edges(bucket, signatures, agree)
        )
        kept = {key: member.position for key, member in copies.kept_of.items()}
        cluster = [kept.get(m.key, i) for i, m in enumerate(members)]
        found = [cluster[n + i] == cluster[i] for i in range(n)]
        shared = Counter(cluster[:n])
        merged = sum(shared[cluster[i]] > 1 for i in distinct)
        table.append(
            [
                name,
                f"{n:,}",
                f"{len(distinct):,}",
                f"{bands} × {rows}",
                f"{sum(found) / n:.1%}",
                f"{sum(found[i] for i in above) / len(above):.1%}",
                f"{merged / len(distinct):.2%}",
                f"{seconds:.1f}",
            ]
        )
    return table


def cost(args) -> list[list[str]]:
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    args.max_len, args.teacher_steps, args.keep, args.super_batch = 64, 50, 0.2, 1024
    teacher = args.teacher or train_tiny_teacher(root, args)
    data = root / "data"
    shutil.rmtree(data, ignore_errors=True)
    inputs = write_data(data, args.size, args.files, args.seed)
    rows, base = [], None
    for method in args.methods.split(","):
        args.dedup = method
        output = root / "out" / method
        shutil.rmtree(output, ignore_errors=True)
        result = run_curate(inputs, teacher, output, root / "logs" / f"{method}.log", args)
        stats = json.loads((output / "stats.json").read_text())
        base = base or result["seconds"]
        rows.append(
            [
                method,
                f"{result['seconds']:.1f}",
                f"{100 * (result['seconds'] / base - 1):+.0f} %",
                f"{args.size / result['seconds']:,.0f}",
                f"{result['peak_mib']:,.0f}",
                f"{stats['counts']['duplicate']:,}",
                f"{stats['scoring']['teacher']['scored']:,}",
            ]
        )
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
    parser.add_argument("--skip-quality", action="store_true", help="Only the cost table.")
    parser.add_argument("--methods", default="none,exact,near", help="--dedup values to time.")
    parser.add_argument("--teacher", help="A teacher to curate with (default: a tiny one).")
    args = parser.parse_args()
    data = {}
    if not args.skip_quality:
        data["quality"] = quality(args)
        print("Planted near copies (case, whitespace, punctuation, two words changed)")
        print(
            text_table(
                data["quality"],
                header=(
                    "copies are",
                    "paragraphs",
                    "distinct",
                    "bands × rows",
                    "copies found",
                    "of J ≥ threshold",
                    "false merges",
                    "s",
                ),
            )
        )
    if args.skip_cost:
        record_dedup(args, data)
        return
    print(
        f"\n`jestflow curate` on {args.size:,} examples, {args.workers} workers, teacher "
        f"{args.teacher or 'tiny'}"
    )
    data["cost"] = cost(args)
    print(
        text_table(
            data["cost"],
            header=(
                "--dedup",
                "seconds",
                "vs none",
                "examples/s",
                "peak RSS MiB",
                "duplicates",
                "teacher scored",
            ),
        )
    )
    record_dedup(args, data)


QUALITY = ("copies_are", "paragraphs", "distinct", "bands", "found", "found_within")
QUALITY += ("false_merges", "seconds")
COST = ("dedup", "seconds", "vs_none", "examples_per_s", "peak_mib", "duplicates")
COST += ("teacher_scored",)


def record_dedup(args, data: dict) -> None:
    """The printed tables in bench/results.json (each cell as the number it prints)."""

    def rows(keys: tuple, table: list) -> list[dict]:
        return [{k: parse_cell(c) for k, c in zip(keys, r, strict=True)} for r in table]

    found = {
        "quality": rows(QUALITY, data.get("quality", [])),
        "cost": rows(COST, data.get("cost", [])),
        "size": args.size,
        "teacher": args.teacher or "tiny",
    }
    name = "dedup_quality_teacher" if args.teacher else "dedup_quality"
    record(name, title="Dedup", command=command_line(), data=found)


if __name__ == "__main__":
    main()
