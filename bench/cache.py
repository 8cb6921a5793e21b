"""Re-curation with the score cache: the demo's curation step run cold and warm, side by side.

On the demo corpus (the 10,000-example LM pool of `jestflow demo`, its 300-step teacher, keep
50 % top-k in 4 tiers, super-batch 1000), one after another in this process:

- `no cache`: the plain run;
- `cold cache`: the first run with `--cache` (scores everything and writes the cache);
- `warm cache`: the same pool and teacher again (scores nothing);
- `pool + new data`: the pool plus a second demo pool of `--extra` examples (another seed; it
  shares many standard-library paragraphs with the first, which the cache already holds);
- `new teacher`: the same weights saved with other metadata, so a new fingerprint: all scored.

The table gives the teacher's scored and cached counts, the wall time of each run (pipeline
construction to `_SUCCESS`), and the time relative to `no cache`; it also checks that the warm
run made the same selection as the cold one, and whether it wrote the same bytes.

Run: python bench/cache.py [--out build/bench-cache] [--workers 1] [--extra 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import time
from pathlib import Path

from common_results import command_line, record

from jestflow.demo.corpora import DemoDataConfig, make_corpora
from jestflow.pipeline.config import CurateConfig
from jestflow.pipeline.job import run_curation
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import load_model, save_checkpoint
from jestflow.transforms.records import FieldMap
from jestflow.transforms.reporting.tables import text_table
from jestflow.transforms.selection.offline import SelectionConfig

TEXT = FieldMap(text="text", keep=("kind",))


def manifest_rows(run: Path) -> dict[str, dict]:
    """Each example's selection outcome and stored teacher loss, by key."""
    rows = read_manifest(str(run / "manifest")).to_pylist()
    fields = ("status", "score", "tier", "shard", "rank")
    return {
        r["key"]: {"selection": tuple(r[f] for f in fields), "teacher_loss": r["teacher_loss"]}
        for r in rows
    }


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def prepare(out: Path, extra: int) -> dict[str, str]:
    """The demo corpus and teacher (made once, kept under `out`), an extra pool, a new teacher."""
    data, teacher = out / "data", out / "teacher"
    if not (data / "lm" / "pool.jsonl").exists():
        make_corpora(DemoDataConfig(output=str(data)))
    if not (out / "extra" / "lm" / "pool.jsonl").exists():
        make_corpora(DemoDataConfig(output=str(out / "extra"), pool_size=extra, seed=1))
    if not (teacher / "model.safetensors").exists():
        train_teacher(
            TeacherConfig(
                inputs=(str(data / "lm" / "reference.jsonl"),),
                output=str(teacher),
                task="lm",
                fields=FieldMap(text="text"),
                steps=300,
                overwrite=True,
            )
        )
    if not (out / "teacher-2" / "model.safetensors").exists():
        save_checkpoint(load_model(str(teacher)), str(out / "teacher-2"), meta={"copy": 2})
    return {
        "pool": str(data / "lm" / "pool.jsonl"),
        "extra": str(out / "extra" / "lm" / "pool.jsonl"),
        "teacher": str(teacher),
        "teacher-2": str(out / "teacher-2"),
    }


def curate(name: str, files: dict, args, *, cached: bool, inputs=None, teacher=None):
    """One curation of the demo pool (or `inputs`) into OUT/runs/NAME: its stats and seconds."""
    out = Path(args.out)
    config = CurateConfig(
        inputs=inputs or (files["pool"],),
        output=str(out / "runs" / name),
        teacher=teacher or files["teacher"],
        task="lm",
        fields=TEXT,
        selection=SelectionConfig(keep=0.5, method="topk"),
        super_batch=1000,
        tiers=4,
        workers=args.workers,
        cache=str(out / "cache") if cached else None,
        overwrite=True,
    )
    start = time.perf_counter()
    stats = run_curation(config)
    return stats, time.perf_counter() - start


def table_row(name: str, stats: dict, seconds: float, base: float) -> list[str]:
    teacher = stats["scoring"]["teacher"]
    cells = [name, f"{stats['counts']['inputs']:,}", f"{teacher['scored']:,}"]
    return [*cells, f"{teacher['cached']:,}", f"{seconds:.1f}", f"{seconds / base:.2f}"]


def compare_warm(out: Path) -> dict:
    """Whether the warm run made the cold run's selection and wrote its bytes (printed, and
    returned with the stored teacher losses that moved)."""
    cold, warm = (manifest_rows(out / "runs" / name) for name in ("cold-cache", "warm-cache"))
    same = {k: r["selection"] for k, r in cold.items()} == {
        k: r["selection"] for k, r in warm.items()
    }
    moved = [
        abs(cold[k]["teacher_loss"] - warm[k]["teacher_loss"])
        for k in cold
        if cold[k]["teacher_loss"] != warm[k]["teacher_loss"]
    ]
    identical = all(
        digest(out / "runs" / "cold-cache" / folder) == digest(out / "runs" / "warm-cache" / folder)
        for folder in ("shards", "manifest")
    )
    print(
        f"\nwarm vs cold: the same selection (status, score, tier, shard, rank of every "
        f"example): {same}; the same shard and manifest bytes: {identical}"
    )
    if moved:
        print(
            f"stored teacher losses differ for {len(moved)} examples, by at most "
            f"{max(moved):.1e}: duplicates the cold run scored in different super-batches "
            "(last-bit differences); the cache holds one loss per content id"
        )
    return {
        "same_selection": same,
        "same_bytes": identical,
        "losses_moved": len(moved),
        "largest_move": max(moved, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench-cache")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--extra", type=int, default=2000)
    args = parser.parse_args()
    out = Path(args.out)
    files = prepare(out, args.extra)
    shutil.rmtree(out / "cache", ignore_errors=True)
    variants = {
        "no cache": {"cached": False},
        "cold cache": {"cached": True},
        "warm cache": {"cached": True},
        "pool + new data": {"cached": True, "inputs": (files["pool"], files["extra"])},
        "new teacher": {"cached": True, "teacher": files["teacher-2"]},
    }
    runs = []
    for name, options in variants.items():
        stats, seconds = curate(name.replace(" ", "-"), files, args, **options)
        runs.append((name, stats, seconds))
        print(f"{name}: {seconds:.1f} s", flush=True)
    base = runs[0][2]
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.workers} Beam worker(s); demo LM pool + teacher\n"
    )
    rows = [table_row(name, stats, seconds, base) for name, stats, seconds in runs]
    header = ("run", "inputs", "teacher scored", "from cache", "seconds", "× no cache")
    print(text_table(rows, header=header))
    warm = compare_warm(out)
    rows = [
        {
            "run": name,
            "inputs": stats["counts"]["inputs"],
            "teacher_scored": stats["scoring"]["teacher"]["scored"],
            "cached": stats["scoring"]["teacher"]["cached"],
            "seconds": seconds,
            "ratio": seconds / base,
        }
        for name, stats, seconds in runs
    ]
    data = {"workers": args.workers, "rows": rows, "warm_vs_cold": warm}
    record("cache", title="Re-curation with the score cache", command=command_line(), data=data)


if __name__ == "__main__":
    main()
