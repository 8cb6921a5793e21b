"""Test data made in the tests (never downloaded)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

WORDS = [
    "return",
    "the",
    "sum",
    "of",
    "two",
    "numbers",
    "sort",
    "a",
    "list",
    "in",
    "place",
    "open",
    "a",
    "file",
    "for",
    "reading",
    "parse",
    "json",
    "text",
    "split",
    "a",
    "string",
    "on",
    "whitespace",
    "join",
    "paths",
    "together",
    "compute",
    "the",
    "mean",
    "of",
    "values",
    "read",
    "bytes",
    "from",
    "a",
    "socket",
    "format",
    "a",
    "date",
    "as",
    "text",
    "encode",
    "data",
    "as",
    "base64",
    "compress",
    "a",
    "stream",
    "with",
    "gzip",
]


def write_jsonl(path: Path, records) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def sentences(n: int, seed: int) -> list[str]:
    """Short English-like sentences with a regular structure a tiny model can learn."""
    rng = random.Random(seed)
    return [
        "Return the " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "."
        for _ in range(n)
    ]


def png(color=(255, 0, 0), size: int = 8) -> bytes:
    """A small solid-colour PNG."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), tuple(color)).save(out, format="PNG")
    return out.getvalue()
