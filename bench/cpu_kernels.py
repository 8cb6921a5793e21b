"""What survives a change of CPU kernels: the demo's curation run under every kernel setting of
bench/margins.py (`SETTINGS` in bench/common.py), each compared with the run on the kernels this
machine picks itself.

A teacher's outputs differ in the last bits between kernel paths (ATen, oneDNN and MKL choose
by instruction set, as another machine would). Curation rounds losses and embeddings to a grid
(1e-4) before selection, so selection changes only where a value sits within that difference of
a rounding edge. Per setting and task (the demo's LM pool, keep 20 %, and its contrastive pairs,
keep 50 %), the table gives: the largest difference of the raw teacher outputs (from the score
cache), the share of examples whose rounded values differ, the examples whose selection differs
(status), the Jaccard overlap of the selected sets, and whether the shards are the same bytes.

The teachers are trained once, on the machine's own kernels, and shared by every run.

Run: python bench/cpu_kernels.py [--out build/bench-kernels] [--settings native,aten-default,...]
(about 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import available, kernel_env
from common_results import command_line, record

from jestflow.demo.corpora import DemoDataConfig, make_corpora
from jestflow.trainer.fit import TeacherConfig, train_teacher
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import fingerprint
from jestflow.transforms.records import FieldMap
from jestflow.transforms.reporting.tables import text_table

PAIRS = ["--query-field", "query", "--doc-field", "doc"]
TASKS = {
    "lm": {"fields": ["--text-field", "text"], "keep": "0.2", "steps": 300},
    "contrastive": {"fields": PAIRS, "keep": "0.5", "steps": 600},
}


def prepare(out: Path) -> None:
    """The demo corpora and a teacher per task (made once, kept under `out`)."""
    if not (out / "data" / "lm" / "pool.jsonl").exists():
        make_corpora(DemoDataConfig(output=str(out / "data")))
    for task, spec in TASKS.items():
        teacher = out / f"teacher-{task}"
        if (teacher / "model.safetensors").exists():
            continue
        fields = FieldMap(text="text") if task == "lm" else FieldMap(query="query", doc="doc")
        train_teacher(
            TeacherConfig(
                inputs=(str(out / "data" / task / "reference.jsonl"),),
                output=str(teacher),
                task=task,
                fields=fields,
                steps=spec["steps"],
                device="cpu",
                overwrite=True,
            )
        )


def curate(out: Path, task: str, setting: str) -> Path:
    """`jestflow curate` on the demo pool of `task` under one kernel setting."""
    run = out / f"{task}-{setting}"
    if (run / "_SUCCESS").exists():
        return run
    env = kernel_env(setting)
    spec = TASKS[task]
    command = [
        sys.executable,
        "-m",
        "jestflow.cli",
        "curate",
        str(out / "data" / task / "pool.jsonl"),
        "-o",
        str(run),
        "--overwrite",
        "--teacher",
        str(out / f"teacher-{task}"),
        "--task",
        task,
        *spec["fields"],
        "--keep",
        spec["keep"],
        "--super-batch",
        "1000",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--cache",
        str(run / "cache"),
        "--quiet",
    ]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return run


def raw_outputs(run: Path, teacher: Path) -> dict[str, np.ndarray]:
    """The teacher's unrounded outputs by example id, from the run's score cache."""
    rows = pq.read_table(run / "cache" / fingerprint(str(teacher))).to_pylist()
    return {
        r["id"]: np.asarray([r["loss"]] if r["left"] is None else r["left"] + r["right"])
        for r in rows
    }


def shards_digest(run: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((run / "shards").iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def compare(run: Path, native: Path, teacher: Path) -> dict:
    rows = {r["key"]: r for r in read_manifest(str(run / "manifest")).to_pylist()}
    base = {r["key"]: r for r in read_manifest(str(native / "manifest")).to_pylist()}
    raw, raw_base = raw_outputs(run, teacher), raw_outputs(native, teacher)
    rounded = sum(rows[k]["teacher_loss"] != base[k]["teacher_loss"] for k in base)
    status = sum(rows[k]["status"] != base[k]["status"] for k in base)
    kept = {k for k, r in rows.items() if r["status"] == "selected"}
    kept_base = {k for k, r in base.items() if r["status"] == "selected"}
    return {
        "raw": max(np.abs(raw[i] - raw_base[i]).max() for i in raw_base),
        "rounded": rounded / len(base),
        "status": status,
        "jaccard": len(kept & kept_base) / len(kept | kept_base),
        "bytes": shards_digest(run) == shards_digest(native),
        "examples": len(base),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench-kernels")
    parser.add_argument("--settings", default=",".join(available()))
    args = parser.parse_args()
    out = Path(args.out)
    settings = args.settings.split(",")
    if "native" not in settings:
        settings.insert(0, "native")
    prepare(out)
    header = (
        "task",
        "setting",
        "max |Δ raw|",
        "rounded values differ",
        "selection differs",
        "Jaccard kept",
        "same shard bytes",
    )
    rows, found = [], []
    for task in TASKS:
        native = curate(out, task, "native")
        for setting in settings[1:]:
            run = curate(out, task, setting)
            c = compare(run, native, out / f"teacher-{task}")
            found.append({"task": task, "setting": setting, **c, "raw": float(c["raw"])})
            rows.append(
                (
                    task,
                    setting,
                    f"{c['raw']:.1e}",
                    f"{c['rounded']:.2%}",
                    f"{c['status']} of {c['examples']}",
                    f"{c['jaccard']:.4f}",
                    "yes" if c["bytes"] else "no",
                )
            )
            print(f"  {task} {setting}: done", flush=True)
    print()
    print(text_table(rows, header=header, align="l" * len(header)))
    title = "Across CPU kernels"
    record("cpu_kernels", title=title, command=command_line(), data={"rows": found})


if __name__ == "__main__":
    main()
