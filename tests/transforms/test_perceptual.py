"""Near-duplicate images (transforms/dedup/perceptual.py): what makes two images copies, and the
LSH bands that bring copies together."""

from __future__ import annotations

import io
import itertools
import random
from dataclasses import replace

import numpy as np
import pytest
from helpers import COLORS, encode, image_copy, picture, png
from PIL import Image

from jestflow.demo.scenes import COLOURS, SHAPES, Scene, draw
from jestflow.transforms.dedup import perceptual
from jestflow.transforms.dedup.copies import THRESHOLDS, DedupConfig, band_keys, signature
from jestflow.transforms.records import make_example

IMAGES = DedupConfig().resolved("image_text")
THRESHOLD = THRESHOLDS["image_text"]
GREY = perceptual.GREY_BITS
COPIES = {
    "smaller": {"scale": 0.75},
    "larger": {"scale": 1.25},
    "darker": {"brightness": 0.9},
    "brighter": {"brightness": 1.1},
    "jpeg": {"quality": 70},
    "all at once": {"scale": 0.8, "brightness": 1.1, "quality": 60},
}


def pair(image: bytes, caption: str = "a caption"):
    return make_example(layout="image_text", text=caption, image=image)


def sig(image: bytes) -> bytes:
    return signature(pair(image), IMAGES).tobytes()


def similarity(a: bytes, b: bytes) -> float:
    return perceptual.similarity(sig(a), sig(b))


def flat(colour, size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("change", COPIES)
def test_resized_recoloured_and_reencoded_copies_are_similar(change):
    for seed in range(8):
        original = picture(seed)
        assert similarity(original, image_copy(original, **COPIES[change])) >= THRESHOLD


def test_different_pictures_are_not():
    sigs = [sig(picture(seed)) for seed in range(12)]
    for a, b in itertools.combinations(sigs, 2):
        assert perceptual.similarity(a, b) < THRESHOLD


def test_flat_images_of_different_colours_are_not_copies_and_a_brighter_one_is():
    for flats in ([flat(c) for c in COLOURS.values()], [png(c) for c in COLORS.values()]):
        for a, b in itertools.combinations(flats, 2):  # the demo's colours, the tests' squares
            assert similarity(a, b) < THRESHOLD
    assert similarity(flat(COLOURS["red"]), png(COLORS["red"])) >= THRESHOLD  # red is red
    red = flat(COLOURS["red"])
    assert similarity(red, image_copy(red, scale=1.25, brightness=1.1, quality=80)) >= THRESHOLD


def test_a_near_flat_image_is_told_by_its_colour_not_its_noise():
    """The hashes of a nearly flat image are noise: its copies are found by their colour."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.5, (64, 64, 1))
    blur = [np.clip(np.asarray(c, float) + noise, 0, 255).astype(np.uint8) for c in COLORS.values()]
    images = [encode(Image.fromarray(b)) for b in blur]
    for image in images:
        assert (
            similarity(image, image_copy(image, scale=0.8, brightness=1.1, quality=70)) >= THRESHOLD
        )
    for a, b in itertools.combinations(images, 2):
        assert similarity(a, b) < THRESHOLD


def test_the_same_scene_in_other_colours_is_not_a_copy():
    """Grey-level hashes alone see one drawing: the colour layout tells the scenes apart."""
    scene = Scene("star", "red", 2, "large", "left", "white")
    red = draw(scene, random.Random(5), 64)
    for colour in ("blue", "green", "orange", "pink"):
        other = draw(replace(scene, colour=colour), random.Random(5), 64)
        assert similarity(red, other) < THRESHOLD
    assert similarity(red, image_copy(red, scale=1.25, brightness=0.9, quality=70)) >= THRESHOLD


def test_a_small_object_in_another_colour_is_not_a_copy():
    """One small object on a plain background barely moves the grey hashes or an 8 × 8 cell's
    colour: the change of the colour layout's structure tells them apart (without that check,
    13 of these pairs are copies), and it lets nearly every copy of each scene through (a
    JPEG's colour bleeding around a small saturated object can go past it)."""
    passed, found = [], []
    for seed, shape in itertools.product(range(6), SHAPES):
        scene = Scene(shape, "blue", 1, "small", "centre", "white")
        blue = draw(scene, random.Random(seed), 64)
        for colour in sorted(set(COLOURS) - {"blue"}):
            other = draw(replace(scene, colour=colour), random.Random(seed), 64)
            assert similarity(blue, other) < THRESHOLD, (seed, shape, colour)
        for change in COPIES.values():
            copy = image_copy(blue, **change)
            mine, theirs = (np.frombuffer(sig(x), np.uint32)[GREY:-1] for x in (blue, copy))
            changed = perceptual._changed_structure(mine, theirs[None])[0]
            passed.append(changed <= perceptual.STRUCTURE_TOLERANCE)
            found.append(similarity(blue, copy) >= THRESHOLD)
    assert np.mean(passed) > 0.97 and np.mean(found) > 0.95  # of 180 copies


def test_the_caption_does_not_count():
    image = picture(3)
    a = signature(pair(image, "a red kite"), IMAGES)
    b = signature(pair(image_copy(image, quality=80), "something else entirely"), IMAGES)
    assert perceptual.similarities(a, b[None])[0] >= THRESHOLD


def test_copies_share_a_band_and_different_pictures_do_not():
    originals = [picture(seed) for seed in range(10)]
    copies = [image_copy(o, **COPIES["all at once"]) for o in originals]
    keys = band_keys([pair(x) for x in originals + copies], IMAGES)
    bands, _ = IMAGES.bands
    assert all(len(k) == bands for k in keys)
    for i in range(10):
        assert set(keys[i]) & set(keys[10 + i])
        others = set().union(*(keys[j] for j in range(10) if j != i))
        assert not set(keys[i]) & others


def test_the_banding_finds_pairs_at_the_threshold():
    bands, rows = perceptual.image_bands(THRESHOLD)
    assert bands <= perceptual.MAX_BANDS
    assert 1 - (1 - THRESHOLD**rows) ** bands >= perceptual.BAND_RECALL
    assert 1 - (1 - 0.5**rows) ** bands < 0.01  # unrelated images rarely meet
    bits = perceptual.band_bits(bands, rows, IMAGES.seed)
    assert bits.shape == (bands, rows) and bits.max() < perceptual.GREY_BITS
    assert all(len(set(band)) == rows for band in bits.tolist())
    assert np.array_equal(bits, perceptual.band_bits(bands, rows, IMAGES.seed))


def test_an_image_that_does_not_decode_has_no_signature():
    assert signature(pair(b"not an image"), IMAGES) is None
    assert band_keys([pair(b"not an image"), pair(picture(1))], IMAGES)[0] == []
