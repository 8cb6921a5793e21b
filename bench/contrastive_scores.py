"""Contrastive scores side by side: what `jestflow curate --keep 0.5` keeps of the demo's pair
pools with each offline score, by the records' `kind` tags (which selection never reads).

  easy reference   −ℓ(θ*): each pair's share of the teacher's sigmoid loss (the default)
  easy ref. (softmax)  the same with --loss softmax: joint selection on the softmax loss
  CLIP-score       the teacher's cosine similarity of each pair (DataComp's filter)
  negCLIPLoss      minus each pair's softmax loss against its super-batch

Pools (bench/common_demo.py): text pairs (docstring summary, code; half mispaired; teacher: the
calibrated MiniLM where installed) and image-text scenes (40 % mispaired, 10 % a wrong
attribute, 10 % generic captions; teacher: the built-in towers). Prints the clean share of the
kept set, each noise kind's share, and the seconds of each curation (scores come from a score
cache after the first).

Run: python bench/contrastive_scores.py [--out build/bench-contrastive-scores]
     (about 10 minutes on 2 cores; data and teachers are made under --out when missing)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from common_demo import FIELDS, data_file, prepare
from common_results import command_line, record

from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.reporting.logs import configure
from jestflow.transforms.reporting.tables import text_table
from jestflow.transforms.selection.offline import SelectionConfig

SCORES = {
    "easy reference": {"mode": "easy_reference"},
    "easy reference (softmax)": {"mode": "easy_reference", "loss": "softmax"},
    "CLIP-score": {"mode": "clip_score"},
    "negCLIPLoss": {"mode": "neg_clip_loss"},
}
TASKS = ("contrastive", "image-text")


def curate(task: str, name: str, options: dict, out: Path) -> tuple[Counter, float]:
    """The kinds of what one curation kept, and its seconds."""
    target = out / f"{task}-{name.replace(' ', '-').replace('(', '').replace(')', '')}"
    began = time.perf_counter()
    run_curation(
        CurateConfig(
            inputs=(data_file(out, task, 2),),
            output=str(target),
            teacher=str(out / f"teacher-{task}"),
            task="contrastive",
            fields=FIELDS[task],
            selection=SelectionConfig(keep=0.5, **options),
            super_batch=1000,
            cache=str(out / "cache"),
            workers=2,
            overwrite=True,
        )
    )
    seconds = time.perf_counter() - began
    rows = read_manifest(str(target / "manifest")).to_pylist()
    kinds = Counter(json.loads(r["meta"])["kind"] for r in rows if r["status"] == "selected")
    return kinds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench-contrastive-scores")
    parser.add_argument("--pair-teacher", default="auto")
    args = parser.parse_args()
    configure("WARNING")
    out = Path(args.out).resolve()
    args.tasks, args.teacher_steps, args.pair_teacher_steps, args.documents = TASKS, 300, 600, 0
    prepare(out, args)
    rows, found = [], []
    for task in TASKS:
        for name, options in SCORES.items():
            kinds, seconds = curate(task, name, options, out)
            total = sum(kinds.values())
            shares = {kind: n / total for kind, n in sorted(kinds.items())}
            noise = ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if k != "clean")
            rows.append(
                [task, name, str(total), f"{shares.get('clean', 0):.1%}", noise, f"{seconds:.0f}"]
            )
            found.append(
                {"task": task, "score": name, "kept": total, "shares": shares, "seconds": seconds}
            )
            print(rows[-1], flush=True)
    print("\ncurate --keep 0.5 (pools: about half clean), by kind of what was kept")
    print(text_table(rows, header=("pool", "score", "kept", "clean", "noise kept", "s")))
    record(
        "contrastive_scores",
        title="Contrastive scores",
        command=command_line(),
        data={"rows": found},
    )


if __name__ == "__main__":
    main()
