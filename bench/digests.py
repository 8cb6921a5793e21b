"""Digests of what curation writes, to show that a change leaves the outputs byte-identical.

Builds the pipeline tests' corpora (noisy LM text with bad lines and a cut .gz, text pairs,
image–caption pairs; `tests/corpora.py`) and the demo's (`jestflow demo data`), trains their
teachers, curates each pool, and prints one SHA-256 per output folder (`shards/`, `manifest/`,
`rejected/`) and per teacher (its fingerprint). The demo's run also trains the two students the
demo compares, and digests their weights (training must not change either). `--save FILE` keeps
the digests, `--against FILE` compares with kept ones and exits 1 if anything differs. The outputs
record their inputs' paths (`source`), so compare runs made with the same `--out`.

Run: python bench/digests.py [--out build/bench-digests] [--save FILE | --against FILE]
(about 6 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpora import config_for, images_config, make_images, make_noisy, make_pairs, pairs_config

from jestflow.pipeline.job import run_curation
from jestflow.transforms.formats.model_files import fingerprint
from jestflow.transforms.reporting.tables import text_table

OUTPUTS = ("shards", "manifest", "rejected")


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes (missing folder: `absent`)."""
    if not folder.exists():
        return "absent"
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def curation_digests(name: str, output: Path) -> dict[str, str]:
    return {f"{name}/{o}": folder_digest(output / o) for o in OUTPUTS}


def test_corpora(out: Path) -> dict[str, str]:
    digests = {}
    for name, make, config in (
        ("noisy", make_noisy, config_for),
        ("pairs", make_pairs, pairs_config),
        ("images", make_images, images_config),
    ):
        root = out / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        make(root)
        digests[f"{name}/teacher"] = fingerprint(str(root / "teacher"))
        run_curation(config(root, root / "curated"))
        digests |= curation_digests(name, root / "curated")
    return digests


def demo(out: Path, student_steps: int) -> dict[str, str]:
    """The demo with its defaults (fewer student steps: their weights are compared, not curves)."""
    root = out / "demo"
    command = [
        sys.executable,
        "-m",
        "jestflow.cli",
        "demo",
        "--output",
        str(root),
        "--overwrite",
        "--device",
        "cpu",
        "--student-steps",
        str(student_steps),
        "--task",
        "lm",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    digests = {"demo/teacher": fingerprint(str(root / "lm" / "teacher"))}
    digests |= curation_digests("demo", root / "lm" / "curated")
    for student in ("student-uniform", "student-jest"):
        weights = (root / "lm" / student / "model.safetensors").read_bytes()
        digests[f"demo/{student}"] = hashlib.sha256(weights).hexdigest()[:16]
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench-digests"))
    parser.add_argument("--student-steps", type=int, default=40)
    parser.add_argument("--save", type=Path, help="write the digests to this JSON file")
    parser.add_argument("--against", type=Path, help="compare with digests saved by --save")
    args = parser.parse_args()
    digests = test_corpora(args.out) | demo(args.out, args.student_steps)
    kept = json.loads(args.against.read_text()) if args.against else {}
    rows = [
        [name, value, "" if not kept else ("same" if kept.get(name) == value else "DIFFERENT")]
        for name, value in digests.items()
    ]
    print(text_table(rows, align="lll"))
    if args.save:
        args.save.write_text(json.dumps(digests, indent=2) + "\n")
    if kept and kept != digests:
        sys.exit(1)


if __name__ == "__main__":
    main()
