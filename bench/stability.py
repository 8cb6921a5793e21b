"""Re-curation stability on a pool of many super-batches: how much of the kept set a small edit of
the pool moves, on this tree and on the tree at `--before` side by side (default: the last commit
whose super-batches were runs of B examples in hash order, and whose keys held positions).

The pool is 12,024 real records (the standard library's docstrings and code snippets, half each),
the teacher a byte LM fit with `jestflow teacher train` on other docstrings. Each edit touches
0.1 % of the pool (12 records): `edited` changes 12 texts in place, `removed` deletes 12 lines
from the middle of the file, `inserted` adds 12 new lines in the middle. Every variant is curated
with `jestflow curate --keep 0.25` under three option sets (the defaults: sampling with relative
τ; an absolute τ = 1; top-k) and compared with the unedited pool's kept set by content id:
Jaccard = |kept ∩ kept'| / |kept ∪ kept'|. The edited records themselves count against it (12
edits can move at most 24 ids of ~3,000 kept: Jaccard ≥ 0.985 if nothing else moved).

Run: python bench/stability.py [--super-batch 1024] [--before 9c9ca68] [--after REV]
     [--out build/bench-stability]
     (about 15 minutes a side on 2 cores for --super-batch 1024; in fresh processes; a score
     cache per side, so each record is scored once; the earlier tree is a git worktree under
     --out: `git worktree remove` it when done)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from common_results import command_line, record
from common_trees import before_tree, jestflow

from jestflow.demo.corpora import harvest
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.reporting.tables import text_table

POOL = 12_024
EDITS = 12
OPTIONS = {
    "defaults": [],
    "τ = 1 (absolute)": ["--temperature", "1"],
    "top-k": ["--method", "topk"],
}


def write_data(data: Path) -> dict[str, Path]:
    """The reference, the pool and its three edited variants, as JSONL files."""
    found = harvest()
    docs = [d for d, _ in found.pairs]
    code = [c for _, c in found.pairs]
    half = POOL // 2
    records = [{"text": t, "kind": "docstring"} for t in docs[:half]]
    records += [{"text": t, "kind": "code"} for t in code[:half]]
    random.Random(0).shuffle(records)
    reference = [{"text": p} for p in found.paragraphs[:3000]]
    rng = random.Random(1)
    middle = range(POOL // 4, 3 * POOL // 4)
    edited = list(records)
    for i in rng.sample(middle, EDITS):
        edited[i] = {**edited[i], "text": edited[i]["text"] + " (edited)"}
    gone = set(rng.sample(middle, EDITS))
    removed = [r for i, r in enumerate(records) if i not in gone]
    extra = [{"text": t, "kind": "docstring"} for t in docs[half : half + EDITS]]
    inserted = records[: POOL // 2] + extra + records[POOL // 2 :]
    variants = {"reference": reference, "pool": records, "edited": edited}
    variants |= {"removed": removed, "inserted": inserted}
    data.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in variants.items():
        paths[name] = data / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def kept_ids(out: Path) -> tuple[set[str], int]:
    """The kept examples' content ids, and the run's number of super-batches."""
    rows = read_manifest(str(out / "manifest")).to_pylist()
    batches = {r["super_batch"] for r in rows if r["super_batch"] is not None}
    return {r["id"] for r in rows if r["status"] == "selected"}, len(batches)


def side(name: str, paths: dict, teacher: Path, out: Path, pythonpath, args) -> list[dict]:
    """Every variant under every option set, curated on one tree; Jaccard against the pool."""
    tag, rows = name.split()[0], []
    for option, flags in OPTIONS.items():
        kept = {}
        for variant in ("pool", "edited", "removed", "inserted"):
            folder = out / f"{tag}-{variant}"
            # one path for every variant: a record's key holds its source
            inputs = out / "data" / "curated" / "pool.jsonl"
            inputs.parent.mkdir(exist_ok=True)
            shutil.copyfile(paths[variant], inputs)
            command = ["curate", str(inputs), "-o", str(folder)]
            command += ["--teacher", str(teacher), "--task", "lm", "--keep", "0.25"]
            command += ["--overwrite", "-q"]
            command += ["--cache", str(out / f"{tag}-cache")]
            command += ["--super-batch", str(args.super_batch), *flags]
            jestflow(command, pythonpath)
            kept[variant] = kept_ids(folder)
        base, batches = kept["pool"]
        row = {"tree": name, "options": option, "super_batches": batches, "kept": len(base)}
        for variant in ("edited", "removed", "inserted"):
            other = kept[variant][0]
            row[variant] = len(base & other) / len(base | other)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--super-batch", type=int, default=1024)
    parser.add_argument("--before", default="9c9ca68")
    parser.add_argument(
        "--after", default=None, help="A commit for the other side (default: this tree)."
    )
    parser.add_argument("--out", default="build/bench-stability")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    paths = write_data(out / "data")
    teacher = out / "teacher"
    if not (teacher / "config.json").exists():
        fit = ["teacher", "train", str(paths["reference"]), "-o", str(teacher), "--task", "lm"]
        jestflow([*fit, "--steps", "300", "--overwrite"], None)
    rows = side(f"before ({args.before})", paths, teacher, out, before_tree(args.before, out), args)
    after = None if args.after is None else before_tree(args.after, out)
    rows += side(f"now ({args.after or 'this tree'})", paths, teacher, out, after, args)
    head = ("tree", "options", "super-batches", "kept", "edited", "removed", "inserted")
    cells = [
        [r["tree"], r["options"], str(r["super_batches"]), str(r["kept"])]
        + [f"{r[v]:.3f}" for v in ("edited", "removed", "inserted")]
        for r in rows
    ]
    print(f"\nJaccard of the kept sets, {POOL:,} records, {EDITS} edited (0.1 %), keep 0.25")
    print(text_table(cells, header=head))
    record(
        "stability" if args.super_batch == 1024 else f"stability_{args.super_batch}",
        title=f"Re-curation stability (super-batch {args.super_batch})",
        command=command_line(),
        data={"pool": POOL, "edits": EDITS, "before": args.before, "rows": rows},
    )


if __name__ == "__main__":
    main()
