"""An image–text demo corpus of synthetic scenes, written as WebDataset tars the way img2dataset
writes them: per sample a key `%09d` and the members `KEY.png` (the image), `KEY.txt` (the
caption) and `KEY.json` (metadata: `kind`, `key` and the scene's attributes).

A scene is a plain light background with one to three objects of one shape, one colour and one
size, placed together in one region; its caption names all five ("two large red circles on the
left", "a picture of one small blue star at the top"). Under `OUTPUT/image-text/`:

- `reference-%06d.tar`: clean pairs for the teacher; `eval-%06d.tar`: clean held-out pairs;
- `pool-%06d.tar`: the pool, of which exact shares are `mispaired` (the caption of another pool
  scene that differs from this one), `wrong_attribute` (this scene's caption with one attribute
  changed: colour, shape, count, size or region), `generic` ("an image", "photo") and the rest
  `clean`.

The json member of every sample holds the scene actually drawn (`shape`, `colour`, `count`,
`size`, `region`, `background`), plus `caption_of` (the key of the scene a mispaired caption
describes) or `wrong` (the attribute a wrong caption gets wrong); selection never reads them.
Reference, eval and pool scenes come from separate random streams of the seed; the tars have fixed
member metadata, so the same config always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import random
import re
from dataclasses import asdict, dataclass, replace

import webdataset as wds
from PIL import Image, ImageDraw

from ..transforms.errors import JestflowError
from ..transforms.paths import replacing, writable_directory

FOLDER = "image-text"
OWNER = "jestflow"  # the tar members' user and group
SHAPES = ("circle", "square", "triangle", "star", "cross")
PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
}
COLOURS = {
    "red": (215, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (235, 205, 0),
    "green": (30, 150, 50),
    "blue": (30, 70, 215),
    "purple": (130, 50, 170),
    "pink": (245, 110, 190),
    "black": (25, 25, 25),
}
BACKGROUNDS = {
    "white": (255, 255, 255),
    "grey": (228, 228, 228),
    "cream": (250, 242, 220),
    "pale blue": (222, 234, 250),
}
SIZES = ("small", "large")
COUNTS = {1: ("one", "a single"), 2: ("two",), 3: ("three",)}
# Where the objects lie, as (x0, y0, x1, y1) fractions of the side, and how a caption says it.
REGIONS = {
    "left": ((0.0, 0.0, 0.5, 1.0), ("on the left", "on the left side")),
    "right": ((0.5, 0.0, 1.0, 1.0), ("on the right", "on the right side")),
    "top": ((0.0, 0.0, 1.0, 0.5), ("at the top",)),
    "bottom": ((0.0, 0.5, 1.0, 1.0), ("at the bottom",)),
    "centre": ((0.15, 0.15, 0.85, 0.85), ("in the centre", "in the middle")),
}
TEMPLATES = (
    "{objects} {where}",
    "a picture of {objects} {where}",
    "a photo of {objects} {where}",
    "an image showing {objects} {where}",
    "there {verb} {objects} {where}",
    "{objects} {where} on a {background} background",
)
GENERIC = ("an image", "a picture", "photo", "image", "a photo", "picture", "untitled image")
# How far a shape of radius r reaches from its centre, in r (the corners of squares and crosses).
REACH = {"square": 0.75 * math.sqrt(2), "cross": math.sqrt(10) / 3}
ATTRIBUTES = ("colour", "shape", "count", "size", "region")
KINDS = ("clean", "mispaired", "wrong_attribute", "generic")


@dataclass(kw_only=True)
class SceneConfig:
    output: str  # the demo data folder: the tars go under `image-text/` in it
    reference_size: int = 1500
    eval_size: int = 400
    pool_size: int = 10_000
    mispaired: float = 0.4  # shares of the pool
    wrong_attribute: float = 0.1
    generic: float = 0.1
    image_size: int = 64
    shard_size: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    count: int
    size: str
    region: str
    background: str


def random_scene(rng: random.Random) -> Scene:
    return Scene(
        shape=rng.choice(SHAPES),
        colour=rng.choice(sorted(COLOURS)),
        count=rng.choice(sorted(COUNTS)),
        size=rng.choice(SIZES),
        region=rng.choice(sorted(REGIONS)),
        background=rng.choice(sorted(BACKGROUNDS)),
    )


def describe(scene: Scene, template: str, rng: random.Random) -> str:
    """The caption of `scene` in `template`, e.g. "two large red circles on the left"."""
    noun = scene.shape if scene.count == 1 else PLURALS[scene.shape]
    objects = f"{rng.choice(COUNTS[scene.count])} {scene.size} {scene.colour} {noun}"
    return template.format(
        objects=objects,
        where=rng.choice(REGIONS[scene.region][1]),
        verb="is" if scene.count == 1 else "are",
        background=scene.background,
    )


def with_wrong_attribute(scene: Scene, rng: random.Random) -> tuple[Scene, str]:
    """`scene` with one of its captioned attributes changed to another value, and which."""
    attribute = rng.choice(ATTRIBUTES)
    choices = {
        "colour": sorted(COLOURS),
        "shape": SHAPES,
        "count": sorted(COUNTS),
        "size": SIZES,
        "region": sorted(REGIONS),
    }[attribute]
    value = rng.choice([v for v in choices if v != getattr(scene, attribute)])
    return replace(scene, **{attribute: value}), attribute


def region_box(region: str, side: int) -> tuple[float, float, float, float]:
    """The region's box in pixels: every object of a scene lies inside it."""
    return tuple(f * side for f in REGIONS[region][0])  # type: ignore[return-value]


def _centroid_ok(region: str, cx: float, cy: float, side: int) -> bool:
    """Whether the objects' centre of mass says `region` and no other: left and right scenes sit
    at mid-height, top and bottom ones at mid-width, centre ones near the middle."""
    mid, near, far = side / 2, side / 8, 0.34 * side
    return {
        "left": cx <= far and abs(cy - mid) <= near,
        "right": cx >= side - far and abs(cy - mid) <= near,
        "top": cy <= far and abs(cx - mid) <= near,
        "bottom": cy >= side - far and abs(cx - mid) <= near,
        "centre": abs(cx - mid) <= side / 10 and abs(cy - mid) <= side / 10,
    }[region]


def place(scene: Scene, rng: random.Random, side: int) -> list[tuple[float, float, float]]:
    """(x, y, radius) of each object: inside the region with a pixel to spare (PIL fills the
    pixels an outline touches), 3 pixels apart at least, radii jittered by a pixel; the layout
    is drawn again until the centre of mass fits the region."""
    unit, reach = side / 64, REACH.get(scene.shape, 1.0)
    low, high = (4, 5) if scene.size == "small" else (8, 9)
    x0, y0, x1, y1 = region_box(scene.region, side)
    for _ in range(10_000):
        objects: list[tuple[float, float, float]] = []  # (x, y, reach in pixels)
        for _ in range(20 * scene.count):  # each object gets a few tries before a fresh start
            d = rng.uniform(low, high) * unit * reach
            x = rng.uniform(x0 + d + unit, x1 - d - unit)
            y = rng.uniform(y0 + d + unit, y1 - d - unit)
            if all(math.dist((x, y), (ox, oy)) >= d + od + 3 * unit for ox, oy, od in objects):
                objects.append((x, y, d))
                if len(objects) == scene.count:
                    break
        cx = sum(o[0] for o in objects) / len(objects)
        cy = sum(o[1] for o in objects) / len(objects)
        if len(objects) == scene.count and _centroid_ok(scene.region, cx, cy, side):
            return [(x, y, d / reach) for x, y, d in objects]
    raise JestflowError(f"cannot place {scene} in a {side}-pixel image")


def _outline(shape: str, x: float, y: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The polygon of a shape of radius `r` about (x, y), turned by `angle` radians."""
    if shape == "square":  # its corners reach 1.06 r
        s = 0.75 * r
        points = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        points = [
            (r * math.cos(a), r * math.sin(a))
            for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
        ]
    elif shape == "star":
        points = [
            (
                (r if k % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (r if k % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5),
            )
            for k in range(10)
        ]
    else:  # cross: a plus sign with arms a third of the side wide
        a, b = r, r / 3
        points = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x + px * cos - py * sin, y + px * sin + py * cos) for px, py in points]


def draw(scene: Scene, rng: random.Random, side: int) -> bytes:
    """The scene as PNG bytes: plain background, objects in exact colours (no antialiasing)."""
    image = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    pen = ImageDraw.Draw(image)
    colour = COLOURS[scene.colour]
    for x, y, r in place(scene, rng, side):
        if scene.shape == "circle":
            pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            angle = math.radians(rng.uniform(-12, 12))
            pen.polygon(_outline(scene.shape, x, y, r, angle), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _share_counts(config: SceneConfig) -> dict[str, int]:
    """How many pool samples of each kind: the shares rounded, the rest clean."""
    shares = {
        "mispaired": config.mispaired,
        "wrong_attribute": config.wrong_attribute,
        "generic": config.generic,
    }
    if any(not 0 <= s <= 1 for s in shares.values()) or sum(shares.values()) > 1:
        raise JestflowError(f"the pool's shares must lie in [0, 1] and sum to at most 1: {shares}")
    counts = {kind: round(config.pool_size * share) for kind, share in shares.items()}
    if sum(counts.values()) > config.pool_size:
        counts["generic"] = config.pool_size - counts["mispaired"] - counts["wrong_attribute"]
    return {"clean": config.pool_size - sum(counts.values()), **counts}


def captioned(scene: Scene) -> tuple:
    """What every caption of the scene says (all but the background)."""
    return tuple(getattr(scene, attribute) for attribute in ATTRIBUTES)


def _mispairing(scenes: list[Scene], chosen: list[int], rng: random.Random) -> dict[int, int]:
    """For each chosen scene another one whose captions say otherwise: a permutation of the
    chosen ones (so the captions' mix stays that of clean ones), else any other of the pool."""
    target = list(chosen)
    rng.shuffle(target)
    for _ in range(100 * len(chosen)):
        bad = [
            p for p, i in enumerate(chosen) if captioned(scenes[target[p]]) == captioned(scenes[i])
        ]
        if not bad:
            return dict(zip(chosen, target, strict=True))
        p, q = bad[0], rng.randrange(len(chosen))
        target[p], target[q] = target[q], target[p]
    other = {}
    for i in chosen:  # too few to shuffle among themselves
        choices = [j for j, scene in enumerate(scenes) if captioned(scene) != captioned(scenes[i])]
        if not choices:
            raise JestflowError("mispairing needs scenes that captions tell apart")
        other[i] = rng.choice(choices)
    return other


def _clean_samples(n: int, rng: random.Random, side: int) -> list[dict]:
    samples = []
    for i in range(n):
        scene = random_scene(rng)
        caption = describe(scene, rng.choice(TEMPLATES), rng)
        samples.append(_sample(i, scene, draw(scene, rng, side), caption, {"kind": "clean"}))
    return samples


def _pool_samples(config: SceneConfig, rng: random.Random) -> list[dict]:
    """The pool: scenes drawn, then each one's caption made according to its kind."""
    counts = _share_counts(config)
    kinds = [kind for kind in KINDS for _ in range(counts[kind])]
    rng.shuffle(kinds)
    scenes = [random_scene(rng) for _ in range(config.pool_size)]
    images = [draw(scene, rng, config.image_size) for scene in scenes]
    captions = [describe(scene, rng.choice(TEMPLATES), rng) for scene in scenes]
    chosen = [i for i, kind in enumerate(kinds) if kind == "mispaired"]
    other = _mispairing(scenes, chosen, rng)
    samples = []
    for i, (scene, kind) in enumerate(zip(scenes, kinds, strict=True)):
        meta: dict = {"kind": kind}
        caption = captions[i]
        if kind == "mispaired":
            caption, meta["caption_of"] = captions[other[i]], f"{other[i]:09d}"
        elif kind == "wrong_attribute":
            wrong, meta["wrong"] = with_wrong_attribute(scene, rng)
            caption = describe(wrong, rng.choice(TEMPLATES), rng)
        elif kind == "generic":
            caption = rng.choice(GENERIC)
        samples.append(_sample(i, scene, images[i], caption, meta))
    return samples


def _sample(index: int, scene: Scene, png: bytes, caption: str, meta: dict) -> dict:
    key = f"{index:09d}"
    info = {**meta, "key": key, **asdict(scene)}
    return {
        "__key__": key,
        "png": png,
        "txt": caption.encode("utf-8"),
        "json": json.dumps(info, sort_keys=True).encode("utf-8"),
    }


def _write_tars(fs, root: str, prefix: str, samples: list[dict], shard_size: int) -> dict:
    """`prefix-%06d.tar` files of at most `shard_size` samples each, with fixed member metadata
    (mtime 0, owner `jestflow`, mode 0444), each written whole and then renamed into place."""
    written = {}
    for shard, start in enumerate(range(0, len(samples), shard_size)):
        name = f"{prefix}-{shard:06d}.tar"
        with (
            replacing(fs, posixpath.join(root, name)) as f,
            wds.TarWriter(f, user=OWNER, group=OWNER, mode=0o444, encoder=False, mtime=0) as tar,
        ):
            for sample in samples[start : start + shard_size]:
                tar.write(sample)
        written[f"{FOLDER}/{name}"] = len(samples[start : start + shard_size])
    return written


def make_scenes(config: SceneConfig) -> dict[str, int]:
    """Write the scene corpora under `config.output/image-text/` (removing shards of an earlier,
    bigger run there); returns the number of samples per file, and per kind of the pool as
    `pool:KIND`."""
    sizes = (config.reference_size, config.eval_size, config.pool_size)
    if min(sizes) < 0 or config.shard_size < 1 or config.image_size < 32:
        raise JestflowError("sizes must not be negative, shards hold ≥ 1 sample, images ≥ 32 px")
    stream = {
        name: random.Random(f"jestflow-scenes/{config.seed}/{name}")
        for name in ("reference", "eval", "pool")
    }
    splits = {
        "reference": _clean_samples(config.reference_size, stream["reference"], config.image_size),
        "eval": _clean_samples(config.eval_size, stream["eval"], config.image_size),
        "pool": _pool_samples(config, stream["pool"]),
    }
    fs, root = writable_directory(config.output)
    folder = posixpath.join(root, FOLDER)
    fs.makedirs(folder, exist_ok=True)
    counts: dict[str, int] = {}
    for prefix, samples in splits.items():
        counts |= _write_tars(fs, folder, prefix, samples, config.shard_size)
    for path in fs.glob(posixpath.join(folder, "*-*.tar")):  # a bigger earlier run's shards
        name = posixpath.basename(path)
        if (
            re.fullmatch(r"(reference|eval|pool)-\d{6}\.tar", name)
            and f"{FOLDER}/{name}" not in counts
        ):
            fs.rm(path)
    counts |= {f"pool:{kind}": n for kind, n in _share_counts(config).items()}
    return counts
