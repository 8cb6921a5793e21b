"""Semantic dedup (SemDeDup) on images: what `jestflow curate --semantic-dedup` removes of an
image–text pool with planted copies, beside `--dedup near` (the default for image–text) and no
dedup, under the demo's built-in image–text teacher.

Pool: clean scenes of the demo's image–text pool (`demo/scenes.py`, 64-pixel PNGs of one to
three shapes on a plain background, each with its caption), the first `--originals` of them, and
a *planted copy* of `--copies` of them: the image resized by 0.75–1.25× (left at that size: the
teacher resizes every image to its 64 pixels, as near dedup's signatures do), brightness
×0.9–1.1, re-encoded as a JPEG of quality 60–90 (in the sample's `png` member: the readers take
any image PIL decodes), the same caption; shuffled, written as WebDataset tars as the demo
writes its own.

*Distinct* means saying something different: two scenes whose captions name the same five
attributes (shape, colour, count, size, region; the template's wording and the background aside)
are the same thing in other pixels, and merging them is what semantic dedup is for. The demo
has only 1,200 such meanings, so many originals share one.

Each arm is a real `curate` run (the scores come from a score cache after the first run):
- recall: planted copies merged with their own original (either one removed as the
  `duplicate_of` of the other, whichever comes first in the pool), over the copies;
- false merges: removed examples whose kept example (`duplicate_of`) says something different,
  over the originals;
- pair hit: planted copies whose original or copy was removed at all (any reason, kept in
  favour of any example);
- same-meaning merges: removed examples kept in favour of another item that says the same
  (not false merges), over the originals;
- s/1k: the run's seconds per 1,000 examples, scores cached (the teacher's own cost is the
  first, uncached run's); Beam's start-up is most of a run this small.
Then, on the teacher's embeddings of the pool (read back from the uncached run's shards): the
cosine of each copy with its original and of each original with its nearest original of another
meaning (what a threshold has to fall between), and the semantic functions' seconds per 1,000.

Run: python bench/semantic_images.py [--originals 2000] [--copies 500]
     [--thresholds 0.99,0.98,0.95,0.90] (about 3 minutes on 2 cores, and as many again on the
     first run for the demo's scenes and the teacher, made under --out; seconds under whatever
     load the machine has)
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import shutil
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import webdataset as wds
from common_demo import make_teacher
from common_images import planted
from common_results import command_line, record
from common_semantic import arm_rows, step_seconds

from jestflow.demo.scenes import ATTRIBUTES, SceneConfig, make_scenes
from jestflow.transforms.dedup import semantic
from jestflow.transforms.records import FieldMap
from jestflow.transforms.reporting.logs import configure
from jestflow.transforms.reporting.tables import text_table

FIELDS = FieldMap(image="png", caption="txt", keep=("kind", "item", "says"))


def arms(thresholds: list[float]) -> dict[str, tuple[str, float | None]]:
    """name → (dedup method before scoring, semantic threshold)."""
    found = {"none": ("none", None), "near (default)": ("near", None)}
    found |= {f"semantic {t:.2f}": ("none", t) for t in thresholds}
    both = 0.95 if 0.95 in thresholds else thresholds[0]
    return found | {f"near + semantic {both:.2f}": ("near", both)}


def clean_scenes(folder: Path, n: int) -> list[dict]:
    """The first n clean scenes of the demo pool's tars: png, caption and what it says."""
    found = []
    for path in sorted(folder.glob("pool-*.tar")):
        members: dict[str, dict] = defaultdict(dict)
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members[key][ext] = tar.extractfile(m).read()
        for key in sorted(members):
            info = json.loads(members[key]["json"])
            if info["kind"] == "clean":
                says = " ".join(str(info[a]) for a in ATTRIBUTES)
                found.append({"png": members[key]["png"], "txt": members[key]["txt"], "says": says})
            if len(found) == n:
                return found
    raise SystemExit(f"the demo pool has fewer than {n} clean scenes")


def make_pool(out: Path, originals: int, copies: int, seed: int) -> tuple[str, int, int]:
    """The pool's tars (originals and planted copies, shuffled) under OUT/pool; returns (their
    glob, originals, copies)."""
    data = out / "data"
    if not (data / "image-text" / "pool-000000.tar").exists():
        make_scenes(SceneConfig(output=str(data)))
    scenes = clean_scenes(data / "image-text", originals)
    rng = random.Random(seed)
    samples = [
        {"png": s["png"], "txt": s["txt"], "kind": "original", "item": i, "says": s["says"]}
        for i, s in enumerate(scenes)
    ]
    samples += [
        s | {"png": planted(s["png"], rng), "kind": "copy"} for s in rng.sample(samples, copies)
    ]
    rng.shuffle(samples)
    folder = out / "pool"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for shard, start in enumerate(range(0, len(samples), 1000)):
        with wds.TarWriter(str(folder / f"pool-{shard:06d}.tar"), encoder=False, mtime=0) as tar:
            for i, s in enumerate(samples[start : start + 1000], start):
                meta = {k: s[k] for k in ("kind", "item", "says")}
                tar.write(
                    {"__key__": f"{i:09d}", "png": s["png"], "txt": s["txt"]}
                    | {"json": json.dumps(meta).encode()}
                )
    return str(folder / "pool-*.tar"), originals, copies


def teacher(out: Path, given: str | None) -> str:
    """The built-in image–text teacher on the demo's reference scenes (made when missing)."""
    if given:
        return given
    folder = out / "teacher-image-text"
    if not (folder / "config.json").exists():
        args = SimpleNamespace(pair_teacher="built-in", pair_teacher_steps=600, teacher_steps=300)
        make_teacher("image-text", folder, out, args)
    return str(folder)


def judge(rows: list[dict], originals: int, copies: int) -> dict:
    """Recall on the planted copies, false and same-meaning merges over the originals."""
    meta = {r["key"]: json.loads(r["meta"]) for r in rows}
    removed = [r for r in rows if r["status"] == "duplicate"]
    found = same = 0
    differ: Counter[str] = Counter()  # false merges by the attributes the captions differ in
    for r in removed:
        a, b = meta[r["key"]], meta[r["duplicate_of"]]
        if a["item"] == b["item"]:
            found += 1
        elif a["says"] != b["says"]:
            pairs = zip(ATTRIBUTES, a["says"].split(), b["says"].split(), strict=True)
            differ[" + ".join(k for k, x, y in pairs if x != y)] += 1
        else:
            same += 1
    wrong = sum(differ.values())
    lost = {meta[r["key"]]["item"] for r in removed}  # items that lost an example, any reason
    copied = {m["item"] for m in meta.values() if m["kind"] == "copy"}
    return {
        "removed": len(removed),
        "reasons": ", ".join(sorted({r["reason"] for r in removed})),
        "recall": found / copies,
        "any_removed": len(lost & copied) / copies,
        "differ": ", ".join(f"{k} {n}" for k, n in differ.most_common(3)),
        "false_merges": wrong / originals,
        "same_meaning": same / originals,
    }


def shard_embeddings(target: Path) -> tuple[np.ndarray, list[dict]]:
    """Every written example's [2, d] teacher embeddings and kept fields, from its shards."""
    embeddings, metas = [], []
    for path in sorted((target / "shards").glob("*.tar")):
        members: dict[str, dict] = defaultdict(dict)
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members[key][ext] = tar.extractfile(m).read()
        for sample in members.values():
            embeddings.append(np.load(io.BytesIO(sample["npy"]), allow_pickle=False))
            metas.append(json.loads(sample["json"])["meta"])
    return np.stack(embeddings), metas


def cosines(x: np.ndarray, metas: list[dict]) -> list[dict]:
    """Quantiles of copy ↔ own original, and original ↔ nearest original of another meaning."""
    original = {m["item"]: i for i, m in enumerate(metas) if m["kind"] == "original"}
    copy = [(i, original[m["item"]]) for i, m in enumerate(metas) if m["kind"] == "copy"]
    own = np.array([float(x[i] @ x[j]) for i, j in copy])
    rows = np.array(sorted(original.values()))
    sim = x[rows] @ x[rows].T
    says = np.array([metas[i]["says"] for i in rows])
    sim[says[:, None] == says[None, :]] = -1  # same meaning (and itself): not a distinct item
    nearest = sim.max(axis=1)
    found = []
    for name, values in (
        ("copy ↔ its original", own),
        ("original ↔ nearest of another meaning", nearest),
    ):
        q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99])
        found.append(
            {"pair": name, "n": len(values)} | dict(zip(QUANTILES, q.tolist(), strict=True))
        )
    return found


QUANTILES = ("p1", "p5", "p50", "p95", "p99")


def function_rows(x: np.ndarray, threshold: float, repeat: int) -> list[dict]:
    """The semantic step's functions on the pool's unit vectors (tiled `repeat` times, so that
    there is something to time; k and the sample as the step picks them): s per 1,000."""
    x = np.tile(x, (repeat, 1))
    n = len(x)
    times, k, _, _ = step_seconds(x, threshold)
    return [
        {"phase": phase, "examples": n, "k": k, "s_per_1k": 1000 * s / n}
        for phase, s in times.items()
    ]


def pool_rows(pool: str, out: Path, model: str, sizes: tuple[int, int], thresholds) -> tuple:
    judged = functools.partial(judge, originals=sizes[0], copies=sizes[1])
    return arm_rows(pool, out, model, FIELDS, arms(thresholds), judged, first_keep=1.0)


def pool_table(rows: list[dict]) -> str:
    base = rows[0]["s_per_1k"]  # the arm without any dedup
    header = ("dedup", "removed", "recall", "pair hit", "false merges", "same meaning", "s / 1k")
    table = []
    for r in rows:
        if "recall" not in r:
            table.append([r["dedup"], "", "", "", "", "", f"{r['s_per_1k']:.2f}", ""])
            continue
        seconds = f"{r['s_per_1k']:.2f} ({r['s_per_1k'] - base:+.2f})"
        shares = [f"{r[k]:.1%}" for k in ("recall", "any_removed", "false_merges", "same_meaning")]
        table.append([r["dedup"], str(r["removed"]), *shares, seconds, r["differ"]])
    return text_table(table, header=(*header, "false merges differ in (top 3)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench-semantic-images")
    parser.add_argument("--originals", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--thresholds", default="0.99,0.98,0.95,0.90")
    parser.add_argument("--teacher", default=None, help="An image–text teacher (else made).")
    parser.add_argument("--repeat", type=int, default=40, help="Tiling for the functions' times.")
    args = parser.parse_args()
    configure("WARNING")
    out = Path(args.out).resolve()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    pool, originals, copies = make_pool(out, args.originals, args.copies, seed=0)
    model = teacher(out, args.teacher)
    rows, uncached = pool_rows(pool, out, model, (originals, copies), thresholds)
    load = os.getloadavg()[0]
    print(
        f"\n{originals:,} demo scenes and {copies:,} planted copies (built-in image–text teacher)"
    )
    print(pool_table(rows))
    embeddings, metas = shard_embeddings(uncached)
    x = semantic.vectors(embeddings)
    spread = cosines(x, metas)
    print("\ncosine (mean of caption and image sides) on the teacher's embeddings")
    print(
        text_table(
            [[r["pair"], str(r["n"]), *(f"{r[q]:.3f}" for q in QUANTILES)] for r in spread],
            header=("pair", "n", *QUANTILES),
        )
    )
    functions = function_rows(x, 0.95, args.repeat)
    print(f"\nsemantic dedup's functions on the pool's vectors tiled {args.repeat}×")
    print(
        text_table(
            [[r["phase"], f"{r['s_per_1k']:.3f}"] for r in functions], header=("phase", "s / 1k")
        )
    )
    note = (
        "false merges: the kept example's caption says something else (shape, colour, count, "
        "size or region); merges of scenes that say the same are counted apart. Seconds "
        f"measured on a shared machine under load (load average {load:.1f} on "
        f"{os.cpu_count()} cores)."
    )
    print(note)
    record(
        "semantic_dedup_images",
        title="Semantic dedup on images",
        command=command_line(),
        data={
            "rows": rows,
            "cosines": spread,
            "functions": functions,
            "originals": originals,
            "copies": copies,
        },
        note=note,
    )


if __name__ == "__main__":
    main()
