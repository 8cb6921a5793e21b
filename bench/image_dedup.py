"""Image near-duplicates: what `--dedup near` finds of planted copies in an image–text pool, and
what it costs, side by side with `--dedup exact`.

The pool (nothing is downloaded): distinct natural-looking images — square crops of
scikit-learn's two sample photos (china, flower) at many positions and scales, each turned by
one of the eight flips and quarter turns, no two of one photo and turn overlapping by more than
20 % (intersection over union), saved as JPEG (quality 95) at 128–256 pixels — and the demo's
image–text scenes (`demo/scenes.py`, 64-pixel PNGs of one to three shapes on a plain
background), each with a caption. A planted copy of each: resized by 0.75–1.25×, brighter or
darker by up to 10 %, re-encoded as a JPEG of quality 60–90, same caption.

The pool goes through the job's own functions (`transforms/dedup/copies.py`: `band_keys` — the
signatures and LSH bands the read step spills —, then per bucket the near candidates'
signatures checked by `bucket_edges` and the clusters, as the dedup step does) with `near`, and
through the content hash with `exact`. Recall: planted copies put in their original's cluster
(target ≥ 95 %). False merges: originals put in one cluster with another original, of all
originals (target ≤ 1 %). Crops of near-uniform regions (grey spread under `UNIFORM` of 255:
the flower photo's dark blur, the sky) are their own row: one looks like another to the eye,
and near dedup merges them on purpose. Seconds per 1,000 examples: signatures and bands (what
the read step adds), and the candidates' check (what the dedup step adds); the machine may be
running other jobs, which changes the seconds but not the counts.

With `--demo-pool`, also the demo's own image–text pool (`demo/scenes.py`'s 10,000 scenes, no
planted copies: every scene was drawn afresh): the share each method removes, all of it
merges of scenes drawn apart, by what tells the merged scenes apart (their `json` member).

Run: python bench/image_dedup.py [--crops 1500] [--scenes 1500] [--threshold 0.875]
    [--demo-pool]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from common_images import encode, planted
from common_results import command_line, record
from PIL import Image, ImageOps

from jestflow.demo.scenes import SceneConfig, describe, draw, make_scenes, random_scene
from jestflow.transforms.dedup.copies import (
    DedupConfig,
    Member,
    band_keys,
    bucket_edges,
    clusters,
    content_hash,
    fingerprints,
    near_members,
)
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example, FieldMap, make_example
from jestflow.transforms.reporting.tables import text_table

UNIFORM = 8.0  # grey standard deviation (of 255) under which a crop is near-uniform
SIZES = (96, 128, 160, 192, 256, 320, 400)  # crop sides in the photos' pixels
OVERLAP = 0.2  # the most two crops of one photo and turn may overlap (intersection over union)


def _iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def crops(n: int, rng: random.Random) -> list[tuple[str, bytes, str]]:
    """(part, JPEG bytes, caption) of up to n distinct crops of the sample photos."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    boxes: dict[tuple[int, int], list] = defaultdict(list)
    out = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        k, turn, side = rng.randrange(len(photos)), rng.randrange(8), rng.choice(SIZES)
        photo = photos[k]
        x, y = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
        box = (x, y, x + side, y + side)
        if any(_iou(box, b) > OVERLAP for b in boxes[k, turn]):
            continue
        boxes[k, turn].append(box)
        img = photo.crop(box)
        img = (ImageOps.mirror(img) if turn & 1 else img).rotate(90 * (turn >> 1))
        size = rng.choice((128, 192, 256))
        img = img.resize((size, size), Image.BICUBIC)
        grey = np.asarray(img.convert("L").resize((32, 32), Image.BOX), np.float64).std()
        part = "photo crops" if grey >= UNIFORM else "near-uniform crops"
        out.append((part, encode(img, "JPEG"), f"a photo, crop {len(out)}"))
    return out


def scenes(n: int, rng: random.Random) -> list[tuple[str, bytes, str]]:
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        out.append(("demo scenes", draw(scene, rng, 64), describe(scene, "{objects} {where}", rng)))
    return out


def pool(args) -> tuple[list, list[str]]:
    """The examples (originals, then one planted copy of each) and each original's part."""
    rng = random.Random(args.seed)
    originals = crops(args.crops, rng) + scenes(args.scenes, rng)
    copies = [(part, planted(data, rng), caption) for part, data, caption in originals]
    examples = [
        make_example(layout="image_text", text=caption, image=data, position=i)
        for i, (_, data, caption) in enumerate(originals + copies)
    ]
    return examples, [part for part, _, _ in originals]


def near_clusters(examples, config: DedupConfig) -> tuple[list[int], float, float]:
    """Each example's cluster (the position of the copy kept), and the seconds of signatures
    with bands, and of the candidates' check."""
    began = time.perf_counter()
    keys = band_keys(examples, config)
    banded = time.perf_counter()
    members = [Member(0, i, e.key, content_hash(e)) for i, e in enumerate(examples)]
    buckets: dict[int, list[Member]] = defaultdict(list)
    for member, bands in zip(members, keys, strict=True):
        for key in bands or [member.content]:
            buckets[key].append(member)
    wanted = {key for bucket in buckets.values() for key in near_members(bucket)}
    ends = [e for e in examples if e.key in wanted]
    sigs = {e.key: s.tobytes() for e, s in zip(ends, fingerprints(ends, config), strict=True)}
    edges = [
        edge
        for bucket in buckets.values()
        for edge in bucket_edges(bucket, sigs, config.min_similarity, config.similarities)
    ]
    copies = clusters(edges)
    checked = time.perf_counter()
    kept = {key: m.position for key, m in copies.kept_of.items()}
    return [kept.get(m.key, i) for i, m in enumerate(members)], banded - began, checked - banded


def exact_clusters(examples) -> tuple[list[int], float]:
    began = time.perf_counter()
    first: dict[int, int] = {}
    cluster = [first.setdefault(content_hash(e), i) for i, e in enumerate(examples)]
    return cluster, time.perf_counter() - began


def scores(cluster: list[int], parts: list[str], part: str | None) -> tuple[int, float, float]:
    """(originals, recall of their planted copies, false merges) of one part (None: all but
    the near-uniform crops)."""
    n = len(parts)
    chosen = [i for i in range(n) if (parts[i] == part if part else "uniform" not in parts[i])]
    sizes = defaultdict(int)
    for i in range(n):
        sizes[cluster[i]] += 1
    found = sum(cluster[n + i] == cluster[i] for i in chosen)
    merged = sum(sizes[cluster[i]] > 1 for i in chosen)
    return len(chosen), found / max(1, len(chosen)), merged / max(1, len(chosen))


def table(args) -> tuple[list[dict], str]:
    examples, parts = pool(args)
    config = DedupConfig(threshold=args.threshold).resolved("image_text")
    near, signed, checked = near_clusters(examples, config)
    exact, hashed = exact_clusters(examples)
    per_k = 1000 / len(examples)
    bands, rows = config.bands
    out = []
    for part in (None, "photo crops", "demo scenes", "near-uniform crops"):
        for method, cluster, cost in (
            ("exact", exact, f"{hashed * per_k:.3f}"),
            ("near", near, f"{signed * per_k:.2f} + {checked * per_k:.2f}"),
        ):
            n, recall, merges = scores(cluster, parts, part)
            out.append(
                {
                    "images": part or "photo crops + demo scenes",
                    "originals": n,
                    "dedup": method,
                    "copies found": f"{recall:.1%}",
                    "false merges": f"{merges:.2%}",
                    "s per 1k": cost,
                }
            )
    setting = f"threshold {config.min_similarity}, {bands} bands × {rows} bits"
    return out, setting


def demo_pool(config: DedupConfig) -> list[dict]:
    """What each method removes of the demo's pool, and by which attributes the scenes a near
    copy was merged into differ from it."""
    with tempfile.TemporaryDirectory() as folder:
        make_scenes(SceneConfig(output=folder))
        files = sorted(str(p) for p in Path(folder, "image-text").glob("pool-*.tar"))
        fields = FieldMap(image="png", caption="txt", keep=("json",))
        examples = [e for e in read_examples(files, fields) if isinstance(e, Example)]
    near, _, _ = near_clusters(examples, config)
    exact, _ = exact_clusters(examples)
    attributes = ("shape", "colour", "count", "size", "region", "background")
    differ = Counter()
    for i, kept in enumerate(near):
        if kept != i:
            a, b = (json.loads(examples[j].meta["json"]) for j in (i, kept))
            differ[" + ".join(k for k in attributes if a[k] != b[k]) or "nothing"] += 1
    n = len(examples)
    rows = [
        {
            "dedup": method,
            "scenes": n,
            "removed": f"{sum(c != i for i, c in enumerate(found)) / n:.2%}",
        }
        for method, found in (("exact", exact), ("near", near))
    ]
    return rows + [
        {"dedup": "near", "scenes": count, "removed": f"differ in {what}"}
        for what, count in differ.most_common()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=1500)
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-pool", action="store_true", help="Also the demo's own pool.")
    args = parser.parse_args()
    rows, setting = table(args)
    load = os.getloadavg()[0]
    print(f"Planted copies: resized 0.75–1.25×, brightness ±10 %, JPEG 60–90 ({setting})")
    print(text_table([list(r.values()) for r in rows], header=tuple(rows[0])))
    note = (
        f"s per 1k: seconds per 1,000 examples, near: signatures and bands + the candidates' "
        f"check, on one core; load average {load:.1f} on {os.cpu_count()} cores while it ran "
        "(other jobs change the seconds, not the counts)."
    )
    print(note)
    data = {"rows": rows, "setting": setting}
    if args.demo_pool:
        config = DedupConfig(threshold=args.threshold).resolved("image_text")
        data["demo_pool"] = demo_pool(config)
        print("\nThe demo's image–text pool (every scene drawn afresh: all removals are merges)")
        print(
            text_table(
                [list(r.values()) for r in data["demo_pool"]], header=("dedup", "scenes", "removed")
            )
        )
    record(
        "image_dedup", title="Image near-duplicates", command=command_line(), data=data, note=note
    )


if __name__ == "__main__":
    main()
