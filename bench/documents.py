"""What scoring whole documents costs: the built-in byte LM (the demo teacher's size) scores
documents of 1, 8 and 64 KB on their first 64 tokens (the default) and whole, window by window
(`curate --score-seq-len 0`, up to `--score-max-tokens`), and prints documents/s, tokens/s and
the process's peak RSS for each, side by side.

Each case runs in a fresh process, so its peak RSS is its own. The documents are Python's own
docstrings joined to the size asked for.

Run: python bench/documents.py [--sizes 1,8,64] [--documents 64] [--max-tokens 8192]
(about 3 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from common import cpu_model

from jestflow.demo.corpora import harvest
from jestflow.transforms.memory import memory_mib
from jestflow.transforms.models import new_model
from jestflow.transforms.models.documents import LmScoring
from jestflow.transforms.reporting.tables import text_table

# The demo's LM teacher: the built-in byte LM at its default size (256-byte context).
TEACHER = {"d_model": 128, "n_layer": 2, "n_head": 4, "max_len": 256}


def documents(size_kb: int, n: int) -> list[str]:
    """n documents of about size_kb KB, each docstrings joined from its own offset."""
    paragraphs = harvest().paragraphs
    texts, start = [], 0
    for _ in range(n):
        text, k = "", start
        while len(text.encode()) < size_kb * 1024:
            text += paragraphs[k % len(paragraphs)] + "\n\n"
            k += 1
        texts.append(text.encode()[: size_kb * 1024].decode(errors="ignore"))
        start = k
    return texts


def measure(size_kb: int, n: int, whole: bool, max_tokens: int) -> dict:
    """One case, in this process: seconds, documents/s, tokens/s scored, peak RSS."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = new_model("lm", **TEACHER).eval()
    texts = documents(size_kb, n)
    scoring = LmScoring(prefix=None, max_tokens=max_tokens) if whole else LmScoring()
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
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a fresh process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(*json.loads(args.case))))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for whole in (False, True):
            r = run_case(size, args.documents, whole, args.max_tokens)
            name = f"whole, ≤ {args.max_tokens:,} tokens" if whole else "first 64 tokens"
            print(f"{size} KB, {name}: {r['seconds']:.1f} s", flush=True)
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


if __name__ == "__main__":
    main()
