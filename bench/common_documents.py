"""Long documents of Python's own docstrings, for the benches that judge whole-document curation
(bench/document_quality.py, and the `lm-documents` task of bench/data_efficiency.py).

Each document is 1–8 KB of docstring paragraphs of the standard library, joined by blank lines,
in one of three kinds:
  clean      docstring paragraphs throughout
  bad body   a clean start of 150–400 characters, then noise to the end (one kind of noise per
             document: word salad of the docstrings' words, random characters, a hex blob or web
             boilerplate)
  bad        noise throughout
The reference set (the teacher's) draws on one half of the paragraphs, the pool and the held-out
set on the other, so no teacher has seen a pool document's text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from common_data import BOILERPLATE

from jestflow.demo.corpora import harvest

KINDS = ("clean", "bad body", "bad")
POOL_SHARES = (0.25, 0.25, 0.5)  # clean, bad body, bad


def _clean(rng: random.Random, paragraphs: list[str], size: int) -> str:
    parts, length = [], 0
    while length < size:
        parts.append(rng.choice(paragraphs))
        length += len(parts[-1]) + 2
    return "\n\n".join(parts)[:size]


def _noise(rng: random.Random, vocabulary: list[str], size: int) -> str:
    """`size` characters of one kind of noise: word salad of the docstrings' own words, random
    characters (some outside ASCII), a hex blob, or web boilerplate."""
    kind = rng.randrange(4)
    if kind == 0:
        return " ".join(rng.choices(vocabulary, k=size // 4))[:size]
    if kind == 1:
        return "".join(chr(rng.randrange(33, 0x250)) for _ in range(size))
    if kind == 2:
        return rng.randbytes(size // 2 + 1).hex()[:size]
    template = rng.choice(BOILERPLATE)
    return " ".join(template.format(n=rng.randint(1, 99)) for _ in range(size // 40 + 1))[:size]


def document(rng: random.Random, kind: str, paragraphs: list[str], vocabulary: list[str]) -> str:
    size = rng.randint(1024, 8192)
    if kind == "clean":
        return _clean(rng, paragraphs, size)
    if kind == "bad":
        return _noise(rng, vocabulary, size)
    start = _clean(rng, paragraphs, rng.randint(150, 400))
    return start + " " + _noise(rng, vocabulary, size - len(start) - 1)


def write_documents(folder: Path, *, reference: int, pool: int, held_out: int, seed: int) -> None:
    """reference.jsonl (clean), pool.jsonl (POOL_SHARES of KINDS, shuffled) and eval.jsonl
    (clean) under `folder`, each line {"text", "kind"}; kept if already there."""
    if (folder / "pool.jsonl").exists():
        return
    paragraphs = harvest().paragraphs
    vocabulary = sorted({w for p in paragraphs for w in p.split()})
    ours, theirs = paragraphs[::2], paragraphs[1::2]  # the teacher's half, the pool's half
    rng = random.Random(seed)
    kinds = [
        k for k, share in zip(KINDS, POOL_SHARES, strict=True) for _ in range(int(pool * share))
    ]
    rng.shuffle(kinds)
    sets = {
        "reference": [
            (document(rng, "clean", ours, vocabulary), "clean") for _ in range(reference)
        ],
        "pool": [(document(rng, k, theirs, vocabulary), k) for k in kinds],
        "eval": [(document(rng, "clean", theirs, vocabulary), "clean") for _ in range(held_out)],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in sets.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as out:
            for text, kind in records:
                out.write(json.dumps({"text": text, "kind": kind}) + "\n")
