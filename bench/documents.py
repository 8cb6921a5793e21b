"""What scoring whole documents costs: the built-in byte LM (the demo teacher's size) scores
documents of 1, 8 and 64 KB on their first 64 tokens (`curate --score-seq-len 64`) and whole,
window by window (the default, up to `--score-max-tokens`), and prints documents/s, tokens/s and
the process's peak RSS for each, side by side. With `--curate`, the same comparison through
`jestflow curate` itself (2 local workers, default dedup, keep 0.3) on pools of `--pool-mb` MB
of such documents: seconds, documents/s, tokens/s and the peak RSS of its process tree.

Each case runs in a fresh process, so its peak RSS is its own. The documents are Python's own
docstrings joined to the size asked for; the model's weights are untrained (cost does not depend
on them).

Run: python bench/documents.py [--sizes 1,8,64] [--documents 64] [--max-tokens 8192]
     [--curate --pool-mb 4]   (about 1 minute; with --curate about 6 more)
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import cpu_model, run_curate
from common_results import command_line, record

from jestflow.demo.corpora import harvest
from jestflow.transforms.formats.manifest import read_manifest
from jestflow.transforms.formats.model_files import save_checkpoint
from jestflow.transforms.memory import memory_mib
from jestflow.transforms.models import new_model
from jestflow.transforms.models.documents import LmScoring
from jestflow.transforms.reporting.tables import text_table

# The demo's LM teacher: the built-in byte LM at its default size (256-byte context).
TEACHER = {"d_model": 128, "n_layer": 2, "n_head": 4, "max_len": 256}


def documents(size_kb: int, n: int) -> list[str]:
    """n documents of size_kb KB, each of docstring paragraphs drawn at random (seeded): distinct
    documents, so dedup keeps them."""
    paragraphs, rng = harvest().paragraphs, random.Random(size_kb)
    texts = []
    for _ in range(n):
        parts, length = [], 0
        while length < size_kb * 1024:
            parts.append(paragraphs[rng.randrange(len(paragraphs))])
            length += len(parts[-1].encode()) + 2
        texts.append("\n\n".join(parts).encode()[: size_kb * 1024].decode(errors="ignore"))
    return texts


def measure(size_kb: int, n: int, whole: bool, max_tokens: int) -> dict:
    """One case, in this process: seconds, documents/s, tokens/s scored, peak RSS."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = new_model("lm", **TEACHER).eval()
    texts = documents(size_kb, n)
    scoring = LmScoring(max_tokens=max_tokens) if whole else LmScoring(prefix=64)
    limit = max_tokens if whole else scoring.prefix
    tokens = sum(min(len(t.encode()), limit) for t in texts)
    began = time.perf_counter()
    scoring.score(model, texts)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "documents_per_s": n / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens": tokens,
        "capped": scoring.capped(model, texts),
        "peak_rss_mib": memory_mib()[0],
    }


def run_case(size_kb: int, n: int, whole: bool, max_tokens: int) -> dict:
    command = [sys.executable, __file__, "--case", json.dumps([size_kb, n, whole, max_tokens])]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,64", help="document sizes in KB")
    parser.add_argument("--documents", type=int, default=64, help="documents per case")
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--curate", action="store_true", help="also time jestflow curate")
    parser.add_argument("--pool-mb", type=float, default=4.0, help="each curate pool's size")
    parser.add_argument("--out", type=Path, default=Path("build/bench-documents"))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a fresh process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(*json.loads(args.case))))
        return
    rows, found = [], {"documents": args.documents, "scoring": []}
    for size in (int(s) for s in args.sizes.split(",")):
        for whole in (False, True):
            r = run_case(size, args.documents, whole, args.max_tokens)
            name = f"whole, ≤ {args.max_tokens:,} tokens" if whole else "first 64 tokens"
            print(f"{size} KB, {name}: {r['seconds']:.1f} s", flush=True)
            found["scoring"].append({"size_kb": size, "scored": name, **r})
            rows.append(
                [
                    f"{size} KB",
                    name,
                    f"{r['documents_per_s']:,.1f}",
                    f"{r['tokens_per_s']:,.0f}",
                    f"{r['capped']}/{args.documents}",
                    f"{r['peak_rss_mib']:,.0f}",
                ]
            )
    header = ["documents", "scored", "documents/s", "tokens/s", "capped", "peak RSS MiB"]
    print(f"\nbuilt-in byte LM {TEACHER}, CPU: {cpu_model()}, torch {torch.__version__}")
    print(text_table(rows, header=header, align="llrrrr"))
    if args.curate:
        found["curate"] = curate_table(args)
    title = "What scoring whole documents costs"
    name = "documents_curate" if args.curate else "documents"
    record(name, title=title, command=command_line(), data=found)


def curate_table(args: argparse.Namespace) -> list[dict]:
    """`jestflow curate` on a pool of each size, scored on the start and whole."""
    args.out.mkdir(parents=True, exist_ok=True)
    teacher = args.out / "teacher"
    if not (teacher / "model.safetensors").exists():
        torch.manual_seed(0)
        save_checkpoint(new_model("lm", **TEACHER), str(teacher))
    rows, found = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        n = max(2, int(args.pool_mb * 1024 / size))
        texts = documents(size, n)
        pool = args.out / f"pool-{size}kb.jsonl"
        pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        for whole in (False, True):
            name = f"whole, ≤ {args.max_tokens:,} tokens" if whole else "first 64 tokens"
            extra = ["--overwrite", "--quiet"]
            extra += ["--score-seq-len", "0", "--score-max-tokens", str(args.max_tokens)] * whole
            options = argparse.Namespace(
                keep=0.3, super_batch=min(1000, n), workers=2, seed=0, dedup=None, extra=extra
            )
            output = args.out / f"curated-{size}kb-{'whole' if whole else 'start'}"
            r = run_curate(
                [str(pool)], str(teacher), output, args.out / "logs" / output.name, options
            )
            limit = args.max_tokens if whole else 64
            scored = read_manifest(str(output / "manifest")).to_pylist()
            kept = {r["position"] for r in scored if r["status"] != "duplicate"}
            # dedup's copies are not scored
            tokens = sum(min(len(texts[p].encode()), limit) for p in kept)
            print(f"curate {size} KB, {name}: {r['seconds']:.1f} s", flush=True)
            found.append(
                {"documents": n, "size_kb": size, "kept_by_dedup": len(kept), "scored": name}
                | {"seconds": r["seconds"], "documents_per_s": n / r["seconds"]}
                | {"tokens_per_s": tokens / r["seconds"], "peak_mib": r["peak_mib"]}
            )
            rows.append(
                [
                    f"{n:,} × {size} KB",
                    f"{len(kept):,}",
                    name,
                    f"{r['seconds']:,.1f}",
                    f"{n / r['seconds']:,.1f}",
                    f"{tokens / r['seconds']:,.0f}",
                    f"{r['peak_mib']:,.0f}",
                ]
            )
    header = [
        "pool",
        "kept by dedup",
        "scored",
        "seconds",
        "documents/s",
        "tokens/s",
        "peak RSS MiB (tree)",
    ]
    print("\njestflow curate, 2 workers, keep 0.3, default dedup")
    print(text_table(rows, header=header, align="lrlrrrr"))
    return found


if __name__ == "__main__":
    main()
