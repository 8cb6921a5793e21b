"""Whole-document curation as a new user sees it: long documents (1–8 KB of the standard library's
docstrings, bench/common_documents.py: a quarter clean, a quarter with a clean start and a noise
body, half noise), a teacher fit with `jestflow teacher train`'s defaults on clean documents, and
`jestflow curate --keep 0.25` with its defaults. The same commands run twice, side by side: on
this tree, and on the tree at `--before` (default: the last commit before documents were scored
whole, where the teacher fit and scored each document's start). Prints, per side: the share of
each kind in the kept set, the clean documents kept of all clean ones, and the seconds of the
teacher's training and of the curation.

Run: python bench/document_quality.py [--pool 600] [--before 086a56f] [--out build/bench-documents]
     (about 10 minutes on 2 cores; each side in fresh processes; the earlier tree is a git
     worktree under --out: `git worktree remove` it when done)
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from common_documents import KINDS, write_documents
from common_results import command_line, record
from common_trees import before_tree, jestflow

from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.reporting.tables import text_table


def side(name: str, data: Path, out: Path, pythonpath: Path | None) -> dict:
    """Teacher and curation with default options; what the kept set holds."""
    teacher, curated = out / f"{name}-teacher", out / f"{name}-curated"
    common = ["--task", "lm", "--overwrite"]
    fit = jestflow(
        ["teacher", "train", str(data / "reference.jsonl"), "-o", str(teacher), *common], pythonpath
    )
    curate = jestflow(
        [
            "curate",
            str(data / "pool.jsonl"),
            "-o",
            str(curated),
            "--teacher",
            str(teacher),
            "--keep",
            "0.25",
            "--keep-field",
            "kind",
            *common,
        ],
        pythonpath,
    )
    rows = read_manifest(str(curated / "manifest")).to_pylist()
    kinds = {(r["source"], r["position"]): json.loads(r["meta"] or "{}").get("kind") for r in rows}
    kept = Counter(kinds[(r["source"], r["position"])] for r in rows if r["status"] == "selected")
    pool = Counter(kinds.values())
    total = sum(kept.values())
    return {
        "shares": {k: kept[k] / total for k in KINDS},
        "clean_recall": kept["clean"] / pool["clean"],
        "kept": total,
        "teacher_s": fit,
        "curate_s": curate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--before", default="086a56f")
    parser.add_argument("--out", default="build/bench-documents")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    data = out / "data"
    write_documents(data, reference=1000, pool=args.pool, held_out=50, seed=0)
    found = {
        f"before ({args.before})": side("before", data, out, before_tree(args.before, out)),
        "now": side("now", data, out, None),
    }
    head = [
        "tree",
        "kept",
        *[f"{k} share" for k in KINDS],
        "clean kept / clean",
        "teacher s",
        "curate s",
    ]
    cells = [
        [
            name,
            str(r["kept"]),
            *[f"{r['shares'][k]:.2f}" for k in KINDS],
            f"{r['clean_recall']:.2f}",
            f"{r['teacher_s']:.0f}",
            f"{r['curate_s']:.0f}",
        ]
        for name, r in found.items()
    ]
    print(text_table(cells, header=head))
    rows = [
        {"tree": name, **{k: v for k, v in r.items() if k != "shares"}, **r["shares"]}
        for name, r in found.items()
    ]
    record(
        "document_quality",
        title="Whole documents",
        command=command_line(),
        data={"pool": args.pool, "before": args.before, "rows": rows},
    )


if __name__ == "__main__":
    main()
