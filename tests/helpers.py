"""Test data made in the tests (never downloaded)."""

from __future__ import annotations

import io
import json
import math
import operator
import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

# bench/margins.py reruns the tests marked `learned` (those asserting what a trained model
# reaches) with other training seeds and CPU kernels, and once with models that cannot learn.
SEED = int(os.environ.get("JESTFLOW_TEST_SEED", "0"))  # the training seed of those tests
BROKEN = os.environ.get("JESTFLOW_TEST_BROKEN") == "1"  # learning rates ~0: bounds must fail
BOUNDS = {">": operator.gt, "<": operator.lt}

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


def kept_by_budget(out, keep: float) -> int:
    """The selected examples a curation output must hold: each super-batch of n (its manifest
    rows) keeps ⌈keep · n⌉, at least 1; asserts that every super-batch does."""
    from jestflow.transforms.formats.manifest import read_manifest

    rows = read_manifest(str(Path(out) / "manifest")).to_pylist()
    sizes, kept = Counter(), Counter()
    for row in rows:
        if row["super_batch"] is not None:
            sizes[row["super_batch"]] += 1
            kept[row["super_batch"]] += row["status"] == "selected"
    want = {s: min(n, max(1, math.ceil(keep * n - 1e-9))) for s, n in sizes.items()}
    assert dict(kept) == want, "a super-batch keeps ⌈keep · its size⌉"
    return sum(want.values())


def kept_are_top(members: list[dict]) -> bool:
    """One super-batch's manifest rows: no example left out scores above one kept (ties at the
    cut may go either way, so this does not depend on how the job breaks them)."""
    kept = [r["score"] for r in members if r["status"] == "selected"]
    left = [r["score"] for r in members if r["status"] != "selected"]
    return bool(kept) and (not left or min(kept) >= max(left))


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


def documents(n: int, seed: int) -> list[dict]:
    """n documents of ~600 bytes of sentences, alternately clean (`kind` clean) and with a noise
    body behind 80 clean bytes (`kind` bad body): the start alone cannot tell them apart."""
    rng = random.Random(seed)
    records = []
    for k in range(n):
        kind = "clean" if k % 2 == 0 else "bad body"
        text = " ".join(sentences(12, rng.randrange(10**6)))
        body = text[80:] if kind == "clean" else "".join(rng.choice("qzxj#@!0 ") for _ in text[80:])
        records.append({"text": text[:80] + body, "kind": kind})
    return records


COLORS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "white": (250,) * 3}


def shade(rgb, delta: int) -> tuple[int, ...]:
    return tuple(min(255, max(0, c + delta)) for c in rgb)


def png(color=(255, 0, 0), size: int = 8) -> bytes:
    """A small solid-colour PNG."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), tuple(color)).save(out, format="PNG")
    return out.getvalue()


def picture(seed: int, size: int = 128) -> bytes:
    """A natural-looking PNG of `size` pixels, distinct for each seed: smooth random waves of
    colour with a few rectangles and ellipses over them."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        wave = np.zeros((size, size))
        for angle in rng.uniform(0, np.pi, 4):
            fx, fy = rng.uniform(0.5, 3, 2)
            phase = 2 * np.pi * (fx * x * np.cos(angle) + fy * y * np.sin(angle))
            wave += rng.uniform(20, 50) * np.sin(phase + rng.uniform(0, 6))
        channels.append(np.clip(128 + wave, 0, 255))
    img = Image.fromarray(np.stack(channels, -1).astype(np.uint8))
    pen = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 8, size // 3, 2)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (pen.rectangle if rng.random() < 0.5 else pen.ellipse)((x0, y0, x0 + w, y0 + h), fill=fill)
    return encode(img)


def encode(img, kind: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    img.save(out, format=kind, **options)
    return out.getvalue()


def image_copy(data: bytes, *, scale=1.0, brightness=1.0, quality: int | None = None) -> bytes:
    """A copy of an encoded image: resized by `scale`, its brightness multiplied, re-encoded as a
    JPEG of `quality` (PNG when None)."""
    from PIL import Image, ImageEnhance

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(brightness)
    return encode(img, "JPEG", quality=quality) if quality else encode(img)


def untrained_eval(task, eval_inputs, fields, size, *, batch_size=16, right_kind="text"):
    """(held-out loss, recall@1 or None) of a fresh built-in model of `size`, seed 0: the
    baseline a learned bound is a gain over."""
    import torch

    from jestflow.trainer.core import evaluate, load_examples
    from jestflow.transforms.models import new_model

    torch.manual_seed(0)
    model = new_model(task, right_kind=right_kind, **size)
    return evaluate(model, load_examples([eval_inputs], fields)[0], batch_size)


def lr(value: float) -> float:
    """A test's learning rate: `value`, or next to nothing when the models are broken on purpose."""
    return 1e-12 if BROKEN else value


class Learned:
    """Asserts what a trained model reaches, and records it for bench/margins.py (the
    `learned` fixture). A bound is a margin: state it as the gain over an untrained model where
    one can be measured, so it does not hinge on the last bits of a kernel."""

    def __init__(self, test: str) -> None:
        self.test = test

    def expect(self, name: str, value: float, op: str, bound: float) -> None:
        log = os.environ.get("JESTFLOW_LEARNED_LOG")
        if log:
            record = {
                "test": self.test,
                "name": name,
                "value": float(value),
                "op": op,
                "bound": bound,
                "seed": SEED,
                "broken": BROKEN,
            }
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if not BROKEN:  # a broken run records every bound, to show that each one fails
            assert BOUNDS[op](value, bound), f"{name}: {value:.4g} is not {op} {bound}"


KILL_HOOK = Path(__file__).parent / "kill"  # sitecustomize.py: SIGKILL at a chosen call


def run_until_killed(args: list[str], point: str, *, timeout: float = 300) -> int:
    """Run a command in a session of its own with the kill hook armed at `point`
    (MODULE:NAME:N: the N-th return of NAME in a process kills its group); its exit status,
    -9 when the hook fired. A run that outlives `timeout` is killed and fails the test."""
    path = os.pathsep.join(filter(None, (str(KILL_HOOK), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "JESTFLOW_KILL_AFTER": point, "PYTHONPATH": path}
    job = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        raise AssertionError(f"{point}: still running after {timeout} s") from None
    if job.returncode != -signal.SIGKILL:
        raise AssertionError(f"{point}: exited {job.returncode} instead of being killed\n{err}")
    return job.returncode
