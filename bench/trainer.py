"""Step time of the online trainer: learnability (the student re-scores r·b, keeps b) against
uniform (trains on the first b) at equal b, for r in {2, 5, 10}, with the full and a shorter
scoring length. Prints the measured overhead beside the one the FLOP estimate predicts
(scoring FLOPs / training FLOPs, both from the trainer's log).

Run: python bench/trainer.py [--steps 20] [--batch-size 32] [--ratios 2,5,10] [--score-len 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from common_results import command_line, record

from jestflow.demo.corpora import harvest
from jestflow.trainer.loop import TrainConfig, train
from jestflow.transforms.formats.shard_samples import encode
from jestflow.transforms.formats.shards import ShardWriter
from jestflow.transforms.records import make_example
from jestflow.transforms.reporting.tables import text_table


def write_shards(folder: Path, n: int, seed: int) -> str:
    """n docstring paragraphs (100–400 characters) as curated LM shards."""
    rng = random.Random(seed)
    paragraphs = [p for p in harvest().paragraphs if len(p) >= 100]
    with ShardWriter(str(folder), prefix="shard-000000", max_count=1000) as writer:
        for i in range(n):
            text = rng.choice(paragraphs)[:400]
            example = make_example(layout="text", text=text, source="bench", position=i)
            writer.write(encode(example, {"teacher_loss": 2.0, "score": -2.0}))
    return str(folder / "shard-000000-*.tar")


def run(shards: str, out: Path, args, **changes) -> dict:
    config = TrainConfig(
        shards=(shards,),
        task="lm",
        output=str(out),
        batch_size=args.batch_size,
        steps=args.warmup + args.steps,
        eval_every=10**9,
        device="cpu",
        seed=args.seed,
        **changes,
    )
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    timed = steps[args.warmup :]
    return {
        "step_s": statistics.median(s["score_seconds"] + s["train_seconds"] for s in timed),
        "score_s": statistics.median(s["score_seconds"] for s in timed),
        "train_s": statistics.median(s["train_seconds"] for s in timed),
        "flop_ratio": sum(s["score_flops"] for s in timed) / sum(s["train_flops"] for s in timed),
        "wall_s": wall,
    }


HEADER = ("mode", "r", "scoring length", "step s", "scoring s", "training s", "overhead")
HEADER += ("by FLOPs",)


def table_row(mode: str, r: int, length: str, res: dict, base: dict) -> list:
    overhead = res["step_s"] / base["step_s"] - 1
    cells = [mode, r, length, f"{res['step_s']:.3f}", f"{res['score_s']:.3f}"]
    return [*cells, f"{res['train_s']:.3f}", f"{overhead:+.0%}", f"{res['flop_ratio']:+.0%}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ratios", default="2,5,10")
    parser.add_argument("--score-len", type=int, default=64, help="the shorter scoring length")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ratios = [int(r) for r in args.ratios.split(",")]
    print(
        f"{os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"jestflow {version('jestflow')}; student: built-in byte LM (d_model 128, 2 layers, "
        f"max_len 256); b = {args.batch_size}; median of {args.steps} steps after "
        f"{args.warmup}"
    )
    with tempfile.TemporaryDirectory(prefix="jestflow-bench-") as tmp:
        root = Path(tmp)
        shards = write_shards(root / "shards", 4000, args.seed)
        base = run(shards, root / "uniform", args, mode="uniform", super_batch_ratio=1)
        rows = [("uniform", 1, "—", base)]
        for r in ratios:
            for length in (None, args.score_len):
                result = run(
                    shards,
                    root / f"learn-{r}-{length}",
                    args,
                    mode="learnability",
                    super_batch_ratio=r,
                    score_seq_len=length,
                )
                rows.append(("learnability", r, str(length or "full"), result))
    cells = [table_row(mode, r, length, res, base) for mode, r, length, res in rows]
    print(text_table(cells, header=HEADER))
    print("overhead: step time over uniform's; by FLOPs: scoring FLOPs / training FLOPs, which")
    print("is the overhead if time were proportional to FLOPs.")
    data = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rows": [
            {
                "mode": mode,
                "r": r,
                "scoring_length": length,
                "step_s": res["step_s"],
                "score_s": res["score_s"],
                "train_s": res["train_s"],
                "overhead": res["step_s"] / base["step_s"] - 1,
                "flop_ratio": res["flop_ratio"],
            }
            for mode, r, length, res in rows
        ],
    }
    record("trainer", title="The online trainer's overhead", command=command_line(), data=data)


if __name__ == "__main__":
    main()
