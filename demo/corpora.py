"""Demo corpora made on the fly from text every machine has: Python's own standard library.

`jestflow demo data OUT_DIR` writes JSONL files read by the same readers users use:

- `lm/pool.jsonl`: a raw pool that is mostly noise of kinds web dumps have (random bytes, word
  salad, repeated boilerplate, base64/hex blobs, documents duplicated hundreds of times, truncated
  fragments) and a minority of clean docstring paragraphs; `lm/reference.jsonl` (clean, for the
  teacher) and `lm/eval.jsonl` (clean, held out). Field `text`.
- `contrastive/pool.jsonl`: (docstring summary, code of the same function or class) pairs, half of them
  mispaired like bad alt-text; `contrastive/reference.jsonl` and `contrastive/eval.jsonl` (clean).
  Fields `query` and `doc`.

Every record has a `kind` tag (`clean` or the kind of noise) for breaking results down; selection
never reads it. The source files are parsed with `ast`, never imported, and walked in sorted
order, so the same Python version always gives the same corpus for the same seed.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import json
import posixpath
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..transforms.errors import JestflowError
from ..transforms.paths import writable_directory

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}
NOISE_KINDS = ("random_bytes", "word_salad", "boilerplate", "blob", "duplicate", "truncated")
BOILERPLATE = (
    "Accept all cookies to continue. We use cookies to improve your experience. ",
    "Click here to subscribe to our newsletter! Limited offer, act now. ",
    "Copyright (c) All rights reserved. Terms of service | Privacy policy | Contact us. ",
    "Home > Products > Category > Page {n} of 100 | Next | Previous | Back to top ",
)


@dataclass(kw_only=True)
class DemoDataConfig:
    output: str
    pool_size: int = 16_000  # each pool large enough that a 300-step run trains on what it keeps
    clean_fraction: float = 0.2  # about twice at most (README: the demo)
    reference_size: int = 2_000
    eval_size: int = 500
    pair_pool_size: int = 4_000
    pair_reference_size: int = 1_500
    pair_eval_size: int = 400
    seed: int = 0


@dataclass(frozen=True)
class Harvest:
    paragraphs: list[str]  # docstring paragraphs, deduplicated, sorted by hash
    pairs: list[tuple[str, str]]  # (docstring summary, code without its docstring)


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        p
        for p in root.rglob("*.py")
        if not any(
            part in SKIP_DIRS or part.startswith("test") for part in p.relative_to(root).parts
        )
    )


@functools.cache
def harvest(min_chars: int = 60, max_code_chars: int = 600) -> Harvest:
    """Docstring paragraphs and (summary, code) pairs of the standard library."""
    paragraphs: set[str] = set()
    pairs: dict[str, str] = {}
    for path in stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in re.split(r"\n\s*\n", doc):
                para = " ".join(para.split())
                if len(para) >= min_chars:
                    paragraphs.add(para)
            summary = doc.strip().splitlines()[0].strip()
            if not isinstance(node, ast.Module) and len(summary) >= 20:  # functions, classes
                node.body = node.body[1:] or [ast.Pass()]  # drop the docstring from the code
                code = ast.unparse(node)[:max_code_chars]
                pairs.setdefault(summary, code)
    return Harvest(
        paragraphs=sorted(paragraphs, key=_hash),
        pairs=sorted(pairs.items(), key=lambda p: _hash(p[0])),
    )


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _noise(
    kind: str, rng: random.Random, clean: list[str], vocabulary: list[str], dupes: list[str]
) -> str:
    if kind == "random_bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(40, 300))).decode("latin-1")
    if kind == "word_salad":
        return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(10, 60)))
    if kind == "boilerplate":
        template = rng.choice(BOILERPLATE)
        return "".join(template.format(n=rng.randint(1, 99)) for _ in range(rng.randint(3, 8)))
    if kind == "blob":
        data = rng.randbytes(rng.randint(30, 200))
        return base64.b64encode(data).decode() if rng.random() < 0.5 else data.hex()
    if kind == "duplicate":
        return rng.choice(dupes)
    text = rng.choice(clean)  # truncated: a fragment cut mid-word
    start = rng.randint(0, max(0, len(text) // 2))
    return text[start : start + rng.randint(8, 30)]


def _pair_files(pairs: list, config: DemoDataConfig, rng: random.Random) -> dict[str, list]:
    """The contrastive corpora: clean reference and held-out pairs, and a pool of which half is
    mispaired (their documents shuffled among themselves)."""
    sizes = (config.pair_reference_size, config.pair_eval_size, config.pair_pool_size)
    if len(pairs) < sum(sizes):
        raise JestflowError(
            f"the standard library gives {len(pairs)} (summary, code) pairs, {sum(sizes)} needed"
        )
    pair_ref = pairs[: sizes[0]]
    pair_eval = pairs[sizes[0] : sizes[0] + sizes[1]]
    pair_pool = pairs[sizes[0] + sizes[1] : sum(sizes)]
    mispaired = set(rng.sample(range(len(pair_pool)), len(pair_pool) // 2))
    shuffled_docs = [pair_pool[i][1] for i in sorted(mispaired)]
    rng.shuffle(shuffled_docs)
    docs = iter(shuffled_docs)
    pool = [
        {"query": q, "doc": next(docs), "kind": "mispaired"}
        if i in mispaired
        else {"query": q, "doc": d, "kind": "clean"}
        for i, (q, d) in enumerate(pair_pool)
    ]

    def clean_pairs(items):
        return [{"query": q, "doc": d, "kind": "clean"} for q, d in items]

    return {
        "contrastive/pool.jsonl": pool,
        "contrastive/reference.jsonl": clean_pairs(pair_ref),
        "contrastive/eval.jsonl": clean_pairs(pair_eval),
    }


def make_corpora(config: DemoDataConfig) -> dict[str, int]:
    """Write the demo corpora under `config.output`; returns the number of records per file."""
    rng = random.Random(config.seed)
    data = harvest()
    n_clean = round(config.pool_size * config.clean_fraction)
    needed = config.reference_size + config.eval_size + n_clean + 5
    if len(data.paragraphs) < needed:
        raise JestflowError(
            f"the standard library gives {len(data.paragraphs)} paragraphs, {needed} needed"
        )
    paragraphs = list(data.paragraphs)
    reference = paragraphs[: config.reference_size]
    held_out = paragraphs[config.reference_size : config.reference_size + config.eval_size]
    clean = paragraphs[config.reference_size + config.eval_size :][: n_clean + 5]
    dupes, clean = clean[:5], clean[5:]
    vocabulary = sorted({w for p in reference for w in p.split()})

    pool = [{"text": t, "kind": "clean"} for t in clean]
    for i in range(config.pool_size - n_clean):
        kind = NOISE_KINDS[i % len(NOISE_KINDS)]
        pool.append({"text": _noise(kind, rng, clean, vocabulary, dupes), "kind": kind})
    rng.shuffle(pool)

    files = {
        "lm/pool.jsonl": pool,
        "lm/reference.jsonl": [{"text": t, "kind": "clean"} for t in reference],
        "lm/eval.jsonl": [{"text": t, "kind": "clean"} for t in held_out],
        **_pair_files(list(data.pairs), config, rng),
    }
    fs, root = writable_directory(config.output)
    for name, records in files.items():
        path = posixpath.join(root, name)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return {name: len(records) for name, records in files.items()}
