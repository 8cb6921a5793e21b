"""What the image benches share (bench/image_dedup.py, bench/semantic_images.py): encoding an
image, and a planted copy of one, as the issue asks for them: resized, brighter or darker,
re-encoded."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageEnhance


def encode(img: Image.Image, kind: str, quality: int = 95) -> bytes:
    out = io.BytesIO()
    img.save(out, format=kind, **({"quality": quality} if kind == "JPEG" else {}))
    return out.getvalue()


def planted(data: bytes, rng: random.Random) -> bytes:
    """A copy: resized by 0.75–1.25× (and left at that size), brightness ×0.9–1.1, a JPEG of
    quality 60–90."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
    f = rng.uniform(0.75, 1.25)
    img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    return encode(img, "JPEG", rng.choice((60, 70, 80, 90)))
