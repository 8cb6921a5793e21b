"""A long online run must not grow in memory: `jestflow train --mode learnability` on shards of
texts of every length, in its own process, its peak RSS (as its log records it) late in the run
against early on. Before batches were padded to a few lengths this run grew about 17 MiB a step.
On shards with one teacher loss per text the student scores whole texts (`--score-seq-len 0`),
the shapes that vary most; on shards of documents curated whole (up to 4,000 bytes, windows of
256) it scores and trains on a window of each."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jestflow.transforms.formats.shard_samples import encode
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.memory import proc_memory_mib
from jestflow.transforms.records import make_example

STEPS, EARLY = 240, 60
GROWTH_MIB = 150  # what either process may grow from step EARLY to the end


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
    code, stderr, reader = watch(command, out / "log.jsonl")
    assert code == 0, stderr[-3000:]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    peak = {r["step"]: r["peak_rss_mib"] for r in logged if "peak_rss_mib" in r}
    assert sorted(peak) == list(range(1, STEPS + 1))
    # A leak of 0.85 MiB a step fails (over the last 180 steps). These runs grow 44–67 MiB as
    # new shapes come (a run of 1,500 steps on document windows: 16 MiB from step 60 on, then
    # flat), and their reader process not at all; it grew ~17 MiB a step before batches were
    # padded to a few lengths.
    assert peak[STEPS] - peak[EARLY] <= GROWTH_MIB, (peak[EARLY], peak[STEPS])
    # nor may the reader process, which makes each step's inputs
    early = [mib for step, mib in reader if EARLY <= step < EARLY + 20]
    late = [mib for step, mib in reader if step >= STEPS - 20]
    assert early and late, reader
    assert max(late) - min(early) <= GROWTH_MIB, (min(early), max(late))


def watch(command: list[str], log: Path) -> tuple[int, str, list[tuple[int, float]]]:
    """Run the command; every 0.2 s, the peak resident memory (MiB) of its reader process (its
    one child) against the steps its log holds by then. (exit status, stderr, those pairs)"""
    with tempfile.TemporaryFile("w+") as err:
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        seen: list[tuple[int, float]] = []
        deadline = time.monotonic() + 1200
        while job.poll() is None and time.monotonic() < deadline:
            steps = log.read_text().count("\n") if log.exists() else 0
            peaks = (proc_memory_mib(child).get("VmHWM") for child in children(job.pid))
            seen += [(steps, mib) for mib in peaks if mib]
            time.sleep(0.2)
        if job.poll() is None:
            job.kill()
        err.seek(0)
        return job.wait(), err.read(), seen


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += map(int, (task / "children").read_text().split())
    return found
