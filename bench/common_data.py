"""Synthetic LM data and small byte-level teachers, shared by the scripts that load the curation
job (bench/curate.py, bench/load.py, bench/dedup_quality.py).

The data: JSONL with a field `text` of 100–300 characters, half docstring paragraphs of Python's
standard library, half noise (word salad, random characters, hex blobs, boilerplate), plus one
broken JSON line in a thousand so the rejected path runs. The teachers: the built-in byte LM fit
briefly on 1,000 clean paragraphs."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

BROKEN_EVERY = 1000  # one broken JSON line per thousand: the rejected path runs too
BOILERPLATE = (
    "Copyright (c) All rights reserved. Terms of service | Privacy policy | Contact us. ",
    "Home > Products > Category > Page {n} of 100 | Next | Previous | Back to top ",
    "Click here to subscribe to our newsletter! Offer {n} ends soon. ",
)


# --- data ----------------------------------------------------------------------------------------


def cut(text: str, n: int) -> str:
    """At most n characters of text, ending at a word boundary when one is near."""
    if len(text) <= n:
        return text
    head = text[:n]
    space = head.rfind(" ")
    return head[:space] if space >= n // 2 else head


def clean_text(rng: random.Random, paragraphs: list[str]) -> str:
    text = rng.choice(paragraphs)
    while len(text) < 100:
        text += " " + rng.choice(paragraphs)
    return cut(text, rng.randint(100, 300))


def noise_text(rng: random.Random, vocabulary: list[str]) -> str:
    n = rng.randint(100, 300)
    kind = rng.randrange(4)
    if kind == 0:  # word salad
        return cut(" ".join(rng.choices(vocabulary, k=n // 3)), n)
    if kind == 1:  # random characters, some outside ASCII
        return "".join(chr(rng.randrange(33, 0x250)) for _ in range(n))
    if kind == 2:  # hex blob
        return rng.randbytes(n // 2).hex()
    template = rng.choice(BOILERPLATE)
    return cut("".join(template.format(n=rng.randint(1, 99)) for _ in range(8)), n)


def write_data(folder: Path, size: int, files: int, seed: int) -> tuple[str, ...]:
    """`size` JSONL lines split over `files` files, written line by line; returns the glob."""
    from jestflow.demo.corpora import harvest

    paragraphs = harvest().paragraphs
    vocabulary = sorted({w for p in paragraphs[:2000] for w in re.findall(r"[A-Za-z]+", p)})
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    line = 0
    for i in range(files):
        count = size // files + (i < size % files)
        with open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(count):
                line += 1
                if line % BROKEN_EVERY == 0:
                    f.write('{"text": "broken\n')
                    continue
                text = (
                    clean_text(rng, paragraphs)
                    if rng.random() < 0.5
                    else noise_text(rng, vocabulary)
                )
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return (str(folder / "part-*.jsonl"),)


# --- teachers ------------------------------------------------------------------------------------


def write_reference(root: Path, seed: int) -> Path:
    """1,000 clean docstring texts (seed + 1) for a teacher to fit, as `root/reference.jsonl`."""
    from jestflow.demo.corpora import harvest

    rng = random.Random(seed + 1)
    paragraphs = harvest().paragraphs
    reference = root / "reference.jsonl"
    with open(reference, "w", encoding="utf-8") as f:
        for _ in range(1000):
            f.write(json.dumps({"text": clean_text(rng, paragraphs)}) + "\n")
    return reference


def fit_byte_lm(reference: Path, output: Path, steps: int, seed: int, **options) -> None:
    """The built-in byte LM fit on `reference` (batch 16, lr 3e-3, 5 warm-up steps, CPU);
    `options` are more TeacherConfig fields (its size, overwrite)."""
    from jestflow.trainer.fit import TeacherConfig, train_teacher
    from jestflow.transforms.records import FieldMap

    train_teacher(
        TeacherConfig(
            inputs=(str(reference),),
            output=str(output),
            task="lm",
            fields=FieldMap(text="text"),
            steps=steps,
            batch_size=16,
            lr=3e-3,
            warmup_steps=5,
            seed=seed,
            device="cpu",
            **options,
        )
    )


def train_small_teacher(root: Path, steps: int, seed: int) -> str:
    """The built-in LM at its default size, as `jestflow teacher train` makes it."""
    output = root / "teacher"
    fit_byte_lm(write_reference(root, seed), output, steps, seed, overwrite=True)
    return str(output)


def train_tiny_teacher(root: Path, args) -> str:
    """The smallest sensible built-in byte LM (d_model 32, 1 layer, 2 heads, `args.max_len`
    bytes), fit for `args.teacher_steps` on clean docstring text."""
    reference = write_reference(root, args.seed)
    output = root / "teacher"
    shutil.rmtree(output, ignore_errors=True)
    sizes = dict(d_model=32, n_layer=1, n_head=2, max_len=args.max_len)
    fit_byte_lm(reference, output, args.teacher_steps, args.seed, **sizes)
    return str(output)
