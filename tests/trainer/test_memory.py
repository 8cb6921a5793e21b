"""A long online run must not grow in memory: `jestflow train --mode learnability` on shards of
texts of every length, in its own process, its peak RSS (as its log records it) late in the run
against early on. Before batches were padded to a few lengths this run grew about 17 MiB a step.
On shards with one teacher loss per text the student scores whole texts (`--score-seq-len 0`),
the shapes that vary most; on shards of documents curated whole (up to 4,000 bytes, windows of
256) it scores and trains on a window of each."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from jestflow.transforms.formats.shard_samples import encode
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.records import make_example

STEPS, EARLY = 240, 60


@pytest.mark.slow
@pytest.mark.parametrize("windows", [False, True], ids=["one-loss", "windows"])
def test_learnability_training_does_not_grow_in_memory(tmp_path, windows):
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz     .,"
    longest = 4000 if windows else 400
    with ShardWriter(str(tmp_path / "shards"), prefix="shard", max_count=500) as writer:
        for i in range(2000):
            text = "".join(rng.choice(letters) for _ in range(rng.randint(1, longest)))
            example = make_example(layout="text", text=text, source="pool", position=i)
            loss = rng.uniform(1.0, 4.0)
            info = {"teacher_loss": loss, "score": -loss}
            if windows:
                count = -(-len(text) // 256)
                info |= {
                    "teacher_windows": [rng.uniform(1.0, 4.0) for _ in range(count)],
                    "teacher_window": 256,
                    "teacher_tokens": "bytes",
                }
            writer.write(encode(example, info))
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "jestflow.cli",
        "train",
        "--shards",
        str(tmp_path / "shards" / "*.tar"),
        "--task",
        "lm",
        "-o",
        str(out),
        "--mode",
        "learnability",
        "--steps",
        str(STEPS),
        "--eval-every",
        "1000",
        *([] if windows else ["--score-seq-len", "0"]),
        "--device",
        "cpu",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    peak = {r["step"]: r["peak_rss_mib"] for r in logged if "peak_rss_mib" in r}
    assert sorted(peak) == list(range(1, STEPS + 1))
    # Generous: a run that grows a few MiB a step fails (it grew ~17 MiB a step before).
    assert peak[STEPS] <= 1.25 * peak[EARLY] + 50, (peak[EARLY], peak[STEPS])
