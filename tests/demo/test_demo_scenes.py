"""The synthetic-scenes demo corpus: real WebDataset tars with the configured counts and shares,
byte-identical for a seed, images that show what their json says, captions that name it (or, for
the noisy kinds, name something else on purpose), and the pool through `jestflow curate`."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds
from click.testing import CliRunner
from helpers import kept_by_budget
from PIL import Image

from jestflow.cli import main
from jestflow.demo.scenes import COLOURS, SceneConfig, make_scenes, region_box
from jestflow.transforms.formats.model_files import save_checkpoint
from jestflow.transforms.models import new_model
from jestflow.transforms.readers import read_examples
from jestflow.transforms.records import Example, FieldMap

SIZES = {"reference_size": 60, "eval_size": 20, "pool_size": 100, "shard_size": 40}
FIELDS = FieldMap(image="png", caption="txt", keep=("kind",))
FILES = [
    "eval-000000.tar",
    "pool-000000.tar",
    "pool-000001.tar",
    "pool-000002.tar",
    "reference-000000.tar",
    "reference-000001.tar",
]
# The caption's words, written out here rather than taken from the module.
OBJECTS = re.compile(
    r"(?P<count>one|a single|two|three) (?P<size>small|large) "
    r"(?P<colour>red|orange|yellow|green|blue|purple|pink|black) "
    r"(?P<shape>circle|square|triangle|star|cross)(?:es|s)? "
    r"(?P<region>on the left|on the right|at the top|at the bottom|in the centre|in the middle)"
)
NUMBERS = {"one": 1, "a single": 1, "two": 2, "three": 3}
PLACES = {
    "on the left": "left",
    "on the right": "right",
    "at the top": "top",
    "at the bottom": "bottom",
    "in the centre": "centre",
    "in the middle": "centre",
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return root / "image-text", make_scenes(SceneConfig(output=str(root), **SIZES))


def samples(folder: Path, prefix: str) -> list[dict]:
    """Every sample of the `prefix-*.tar` files, as {extension: bytes} plus `json` decoded."""
    found: dict[str, dict] = {}
    for path in sorted(folder.glob(f"{prefix}-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".", 1)
                found.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return [{**s, "json": json.loads(s["json"])} for _, s in sorted(found.items())]


def named(caption: str) -> dict:
    """The scene a caption names: its count, size, colour, shape and region."""
    match = OBJECTS.search(caption)
    assert match, caption
    words = match.groupdict()
    return {**words, "count": NUMBERS[words["count"]], "region": PLACES[words["region"]]}


def drawn(meta: dict) -> dict:
    return {name: meta[name] for name in ("count", "size", "colour", "shape", "region")}


def components(image: Image.Image, rgb: tuple[int, int, int]) -> list[list[tuple[int, int]]]:
    """The 8-connected blobs of pixels of exactly `rgb`."""
    pixels = image.load()
    left = {(x, y) for x in range(image.width) for y in range(image.height) if pixels[x, y] == rgb}
    blobs = []
    while left:
        stack = [left.pop()]
        blob = list(stack)
        while stack:
            x, y = stack.pop()
            for near in [(x + dx, y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]:
                if near in left:
                    left.remove(near)
                    stack.append(near)
                    blob.append(near)
        blobs.append(blob)
    return blobs


def test_the_tars_are_webdataset_samples_in_the_configured_numbers(scenes):
    folder, counts = scenes
    assert sorted(p.name for p in folder.iterdir()) == FILES  # no temporary file left
    assert counts == {
        "image-text/reference-000000.tar": 40,
        "image-text/reference-000001.tar": 20,
        "image-text/eval-000000.tar": 20,
        "image-text/pool-000000.tar": 40,
        "image-text/pool-000001.tar": 40,
        "image-text/pool-000002.tar": 20,
        "pool:clean": 40,
        "pool:mispaired": 40,
        "pool:wrong_attribute": 10,
        "pool:generic": 10,
    }
    expected = {
        "reference": {"clean": 60},
        "eval": {"clean": 20},
        "pool": {"clean": 40, "mispaired": 40, "wrong_attribute": 10, "generic": 10},
    }
    for prefix, kinds in expected.items():
        got = list(read_examples([str(folder / f"{prefix}-*.tar")], FIELDS))
        assert all(isinstance(ex, Example) for ex in got)
        assert Counter(ex.meta["kind"] for ex in got) == kinds
        assert all(ex.layout == "image_text" and ex.image[:4] == b"\x89PNG" for ex in got)
        raw = samples(folder, prefix)
        assert [ex.text for ex in got] == [s["txt"].decode() for s in raw]
        assert [s["json"]["key"] for s in raw] == [f"{i:09d}" for i in range(len(raw))]
        with tarfile.open(folder / f"{prefix}-000000.tar") as tar:
            names = [m.name for m in tar.getmembers()][:3]
            assert names == ["000000000.json", "000000000.png", "000000000.txt"]
            assert {(m.mtime, m.uname, m.mode) for m in tar.getmembers()} == {
                (0, "jestflow", 0o444)
            }
    pool = list(wds.WebDataset(str(folder / "pool-000000.tar"), shardshuffle=False))
    assert len(pool) == 40 and {k for k in pool[0] if k[0] != "_"} == {"json", "png", "txt"}


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_ones(scenes, tmp_path):
    folder, _ = scenes
    make_scenes(SceneConfig(output=str(tmp_path / "again"), **SIZES))
    make_scenes(SceneConfig(output=str(tmp_path / "other"), **SIZES, seed=1))
    for name in FILES:
        mine = (folder / name).read_bytes()
        assert (tmp_path / "again" / "image-text" / name).read_bytes() == mine
        assert (tmp_path / "other" / "image-text" / name).read_bytes() != mine
    make_scenes(SceneConfig(output=str(tmp_path / "other"), **{**SIZES, "pool_size": 30}))
    assert sorted(p.name for p in (tmp_path / "other" / "image-text").iterdir()) == [
        name for name in FILES if name not in ("pool-000001.tar", "pool-000002.tar")
    ]  # an earlier, bigger run's shards are gone
    images = {
        prefix: {s["png"] for s in samples(folder, prefix)}
        for prefix in ("reference", "eval", "pool")
    }
    assert [len(x) for x in images.values()] == [60, 20, 100]  # distinct scenes, every split
    assert not (
        images["reference"] & images["eval"]
        or images["pool"] & images["reference"]
        or images["pool"] & images["eval"]
    )


def test_each_image_shows_the_scene_its_json_describes(scenes):
    """The json's colour makes exactly `count` blobs of the json's size inside the region's box;
    no other named colour is drawn; the background fills most of the 64×64 RGB image."""
    folder, _ = scenes
    extents = {"small": [], "large": []}
    for prefix in ("reference", "eval", "pool"):
        for sample in samples(folder, prefix):
            meta = sample["json"]
            with Image.open(io.BytesIO(sample["png"])) as image:
                image.load()
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))
            blobs = components(image, COLOURS[meta["colour"]])
            assert len(blobs) == meta["count"], meta
            x0, y0, x1, y1 = region_box(meta["region"], 64)
            for blob in blobs:
                xs, ys = [p[0] for p in blob], [p[1] for p in blob]
                assert x0 <= min(xs) and max(xs) < x1 and y0 <= min(ys) and max(ys) < y1, meta
                extents[meta["size"]].append(max(max(xs) - min(xs), max(ys) - min(ys)) + 1)
            colours = {rgb: n for n, rgb in image.getcolors()}
            assert not {COLOURS[c] for c in COLOURS if c != meta["colour"]} & set(colours)
            assert max(colours.values()) > 64 * 64 // 2
    assert max(extents["small"]) < min(extents["large"])  # pixels across: ≤ 12 against ≥ 13


def test_captions_name_the_drawn_scene_or_on_purpose_another(scenes):
    folder, _ = scenes
    for prefix in ("reference", "eval"):
        for sample in samples(folder, prefix):
            assert named(sample["txt"].decode()) == drawn(sample["json"])
    pool = samples(folder, "pool")
    by_key = {s["json"]["key"]: s for s in pool}
    for sample in pool:
        meta, caption = sample["json"], sample["txt"].decode()
        if meta["kind"] == "clean":
            assert named(caption) == drawn(meta)
        elif meta["kind"] == "wrong_attribute":  # exactly one attribute differs
            wrong = {k for k, v in named(caption).items() if v != meta[k]}
            assert wrong == {meta["wrong"]}, (caption, meta)
        elif meta["kind"] == "mispaired":  # another pool scene's caption, not this one's
            other = by_key[meta["caption_of"]]
            assert other is not sample and named(caption) == drawn(other["json"])
            assert named(caption) != drawn(meta)
            if other["json"]["kind"] == "clean":
                assert other["txt"].decode() == caption
        else:
            assert meta["kind"] == "generic" and not OBJECTS.search(caption)
            assert caption in {
                "an image",
                "a picture",
                "photo",
                "image",
                "a photo",
                "picture",
                "untitled image",
            }
    targets = [s["json"]["caption_of"] for s in pool if s["json"]["kind"] == "mispaired"]
    assert len(set(targets)) == 40  # the mispaired captions are shuffled among themselves
    wrong = Counter(s["json"]["wrong"] for s in pool if s["json"]["kind"] == "wrong_attribute")
    assert len(wrong) >= 3


def test_the_pool_passes_through_curate(scenes, tmp_path):
    folder, _ = scenes
    torch.manual_seed(0)
    teacher = new_model(
        "contrastive", right_kind="image", d_model=32, n_layer=1, n_head=2, max_len=64
    )
    save_checkpoint(teacher, str(tmp_path / "teacher"))
    out = tmp_path / "curated"
    args = [
        "curate",
        str(folder / "pool-*.tar"),
        "-o",
        str(out),
        "--teacher",
        str(tmp_path / "teacher"),
        "--task",
        "contrastive",
        "--image-field",
        "png",
        "--caption-field",
        "txt",
        "--keep-field",
        "kind",
        "--keep",
        "0.5",
        "--super-batch",
        "50",
        "--workers",
        "1",
        "--device",
        "cpu",
        "-q",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    counts = json.loads((out / "stats.json").read_text())["counts"]
    kept = kept_by_budget(out, 0.5)  # 2 super-batches of about 50, half of each
    assert 50 <= kept <= 51
    assert counts == {
        "inputs": 100,
        "selected": kept,
        "not_selected": 100 - kept,
        "duplicate": 0,
        "rejected": 0,
    }
    assert (out / "_SUCCESS").exists()
    samples = [
        s
        for shard in sorted((out / "shards").iterdir())
        for s in wds.WebDataset(str(shard), shardshuffle=False)
    ]
    assert len(samples) == kept and all({"png", "txt", "json"} <= set(s) for s in samples)
    kinds = Counter(json.loads(s["json"])["meta"]["kind"] for s in samples)
    assert sum(kinds.values()) == kept and set(kinds) <= {
        "clean",
        "mispaired",
        "wrong_attribute",
        "generic",
    }
