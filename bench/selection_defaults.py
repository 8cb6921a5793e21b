"""Selection defaults, side by side: what `jestflow curate` keeps with each temperature rule.

Every candidate curates the same pools with the same teacher through the real Beam job (the
teacher's scores come from a score cache after the first run) and the kept records are broken down
by their `kind` tag, which selection never reads:

  demo       the demo LM pool: 20 % clean docstrings, 80 % noise (keep 0.2)
  docs/code  real text only: a quarter standard-library docstrings (the teacher's language), three
             quarters Python code from the same library (keep 0.25)

Candidates: the paper's absolute τ = 1, absolute τ = 0.1 (the hand-tuned value before the relative default), τ
relative to the spread of each super-batch's scores (ρ × their median absolute deviation), and
top-k.

Stability: a 400-record slice of the demo pool is curated twice, once as is and once with 6
records edited, and the kept sets are compared (Jaccard); a random draw of the same size gives
about keep / (2 − keep).

Run: python bench/selection_defaults.py [--demo build/demo] [--dedup none|exact|near]
Needs the demo's data and LM teacher under --demo (`make demo`, or made here when missing).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

from common import near_duplicates
from common_results import command_line, record

from jestflow.demo.corpora import DemoDataConfig, harvest, make_corpora
from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.dedup.copies import DedupConfig
from jestflow.transforms.dedup.minhash import shingles
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.records import FieldMap, make_example
from jestflow.transforms.reporting.logs import configure
from jestflow.transforms.reporting.tables import text_table
from jestflow.transforms.selection.offline import SelectionConfig

TAGGED = FieldMap(text="text", keep=("kind",))
CANDIDATES = {
    "τ = 1 (absolute, the paper)": {"temperature": 1.0},
    "τ = 0.1 (absolute)": {"temperature": 0.1},
    "relative ρ = 0.05": {"relative_temperature": 0.05},
    "relative ρ = 0.1": {"relative_temperature": 0.1},
    "relative ρ = 0.2": {"relative_temperature": 0.2},
    "relative ρ = 0.5": {"relative_temperature": 0.5},
    "top-k": {"method": "topk"},
}


def demo_inputs(root: Path) -> tuple[Path, Path]:
    """The demo's LM pool and teacher, made when missing (data, then 300 teacher steps)."""
    lm, teacher = root / "data" / "lm", root / "lm" / "teacher"
    if not (lm / "pool.jsonl").exists():
        make_corpora(DemoDataConfig(output=str(root / "data")))
    if not (teacher / "_SUCCESS").exists() and not (teacher / "config.json").exists():
        train_teacher(
            TeacherConfig(
                inputs=(str(lm / "reference.jsonl"),),
                eval_inputs=(str(lm / "eval.jsonl"),),
                output=str(teacher),
                task="lm",
                fields=FieldMap(text="text"),
                steps=300,
                overwrite=True,
            )
        )
    return lm / "pool.jsonl", teacher


def docs_code_pool(path: Path, eval_file: Path) -> Path:
    """Held-out docstrings (the demo's eval set) and three times as many code snippets."""
    docs = [json.loads(line)["text"] for line in eval_file.read_text().splitlines()]
    code = [c for _, c in harvest().pairs][: 3 * len(docs)]
    records = [{"text": t, "kind": "docstring"} for t in docs]
    records += [{"text": t, "kind": "code"} for t in code]
    random.Random(0).shuffle(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def curate(pool: Path, teacher: Path, out: Path, keep: float, options: dict, args) -> list[dict]:
    """The manifest rows of one curation (selected, not selected, duplicates)."""
    run_curation(
        CurateConfig(
            inputs=(str(pool),),
            output=str(out),
            teacher=str(teacher),
            task="lm",
            fields=TAGGED,
            selection=SelectionConfig(keep=keep, **options),
            super_batch=1000,
            workers=args.workers,
            cache=str(out.parent / "cache"),
            overwrite=True,
            dedup=DedupConfig(method=args.dedup),
        )
    )
    return read_manifest(str(out / "manifest")).to_pylist()


def shares(rows: list[dict], wanted: str, pool: Path) -> tuple[float, float, float, int]:
    """The kept share of the wanted kind and of the pool's planted duplicates, the kept examples
    with a near copy (true Jaccard ≥ 0.8 of the job's shingles) among the kept, and their number."""
    kept = [r for r in rows if r["status"] == "selected"]
    kinds = Counter(json.loads(r["meta"])["kind"] for r in kept)
    lines = pool.read_text().splitlines()
    texts = [json.loads(lines[r["position"]])["text"] for r in kept]
    sets = [set(shingles(make_example(layout="text", text=t)).tolist()) for t in texts]
    copies = len(near_duplicates(sets, 0.8))
    return (
        kinds[wanted] / len(kept),
        kinds["duplicate"] / len(kept),
        copies / len(kept),
        len(kept),
    )


def stability(pool: Path, teacher: Path, out: Path, args) -> list[list[str]]:
    lines = pool.read_text().splitlines()[:400]
    edited = list(lines)
    for i in random.Random(1).sample(range(400), 6):
        record = json.loads(edited[i])
        edited[i] = json.dumps({**record, "text": record["text"] + " (edited)"})
    rows = []
    for name, options in (("defaults", {}), ("τ = 1", {"temperature": 1.0})):
        kept = []
        for text in (lines, edited):  # one path: an example's key includes its source
            path = out / "stability.jsonl"
            path.write_text("\n".join(text) + "\n")
            manifest = curate(path, teacher, out / "stability", 0.25, options, args)
            kept.append({r["key"] for r in manifest if r["status"] == "selected"})
        jaccard = len(kept[0] & kept[1]) / len(kept[0] | kept[1])
        rows.append([name, str(len(kept[0])), f"{jaccard:.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="build/demo")
    parser.add_argument("--out", default="build/bench-selection-defaults")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dedup", default=None, help="curate's --dedup (default: its own).")
    args = parser.parse_args()
    configure("WARNING")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool, teacher = demo_inputs(Path(args.demo))
    docs_code = docs_code_pool(out / "docs-code.jsonl", pool.parent / "eval.jsonl")
    rows, found = [], []
    for name, options in CANDIDATES.items():
        began = time.perf_counter()
        demo = shares(curate(pool, teacher, out / "demo", 0.2, options, args), "clean", pool)
        mixed = shares(
            curate(docs_code, teacher, out / "docs-code", 0.25, options, args),
            "docstring",
            docs_code,
        )
        rows.append(
            [
                name,
                f"{demo[0]:.1%}",
                f"{demo[1]:.1%}",
                f"{demo[2]:.1%}",
                str(demo[3]),
                f"{mixed[0]:.1%}",
                f"{time.perf_counter() - began:.0f}",
            ]
        )
        found.append(
            {
                "candidate": name,
                "demo_clean": demo[0],
                "demo_duplicate": demo[1],
                "demo_near_copy": demo[2],
                "demo_kept": demo[3],
                "docs_code_docstring": mixed[0],
                "seconds": time.perf_counter() - began,
            }
        )
    print("curate --keep 0.2 (demo pool, 20 % clean) and --keep 0.25 (docs/code, 25 % docstrings)")
    header = ("candidate", "demo: clean", "demo: planted dup", "demo: near copy kept")
    header += ("demo: kept", "docs/code: docstring", "s")
    print(text_table(rows, header=header))
    print("\nStability: 400 demo records, then the same with 6 edited (keep 0.25)")
    stable = stability(pool, teacher, out, args)
    print(text_table(stable, header=("options", "kept", "Jaccard of the kept sets")))
    stability_rows = [{"options": o, "kept": int(k), "jaccard": float(j)} for o, k, j in stable]
    record(
        "selection_defaults" if args.dedup is None else f"selection_defaults_dedup_{args.dedup}",
        title="Selection defaults",
        command=command_line(),
        data={"dedup": args.dedup, "rows": found, "stability": stability_rows},
    )


if __name__ == "__main__":
    main()
