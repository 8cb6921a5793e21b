"""JEST joint selection vs one teacher forward pass over the same super-batch.

For each pair loss (sigmoid: `ContrastivePairScores`; softmax: `SoftmaxPairScores`), super-batch
size B and keep fraction, this times `select_joint` (16 chunks, learnability) on lazy pair scores
built from random L2-normalised student and teacher embeddings of width 256, and compares it with one pass of the built-in two-tower teacher (`TwoTower`,
text–text, default towers) over B realistic text pairs of the demo corpus: stdlib docstring summaries (left)
and 120-character code snippets (right). Selection should cost ≤ 5 % of the teacher pass at
B = 16384 and never build a B×B matrix, so it also reports the selection's peak memory (RSS
increase in a fresh process on CPU, allocator peak on CUDA) and the largest tensor any torch
operation produces during it, next to the size of a B×B float32 matrix.

Run: python bench/selection.py [--sizes 4096,16384] [--keep 0.1,0.2] [--device cpu|cuda]
     [--losses sigmoid,softmax]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from common import MIB, peak_rss_kib, synced_seconds
from common_results import command_line, machine, record
from torch.utils._python_dispatch import TorchDispatchMode

from jestflow.demo.corpora import harvest
from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.models.scoring import embed_pairs
from jestflow.transforms.models.towers import TwoTower, TwoTowerConfig
from jestflow.transforms.reporting.tables import text_table
from jestflow.transforms.selection.jest import pair_scores, select_joint

WIDTH, N_CHUNKS = 256, 16
ROWS: list[dict] = []  # each measured row, for bench/results.json


class LargestTensor(TorchDispatchMode):
    """Records the largest output (elements and bytes) of any torch operation."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
                self.nbytes = max(self.nbytes, t.numel() * t.element_size())
        return out


def stdlib_text_pairs(n: int) -> tuple[list[str], list[str]]:
    """n (docstring summary, 120-character code snippet) pairs of the demo corpus, cycled."""
    pairs = harvest().pairs
    cycled = [pairs[i % len(pairs)] for i in range(n)]
    return [summary for summary, _ in cycled], [code[:120] for _, code in cycled]


def random_embeddings(b: int, seed: int, device: torch.device, loss: str) -> PairEmbeddings:
    """Random L2-normalised [B, 256] left/right embeddings (normalised in place: no temporaries)."""
    gen = torch.Generator().manual_seed(seed)
    left, right = (torch.randn(b, WIDTH, generator=gen).to(device) for _ in range(2))
    for x in (left, right):
        x.div_(x.norm(dim=1, keepdim=True))
    return PairEmbeddings(left, right, 10.0, -10.0, loss)


def lazy_pair_scores(b: int, device: torch.device, loss: str = "sigmoid"):
    student = random_embeddings(b, 1, device, loss)
    teacher = random_embeddings(b, 2, device, loss)
    return pair_scores("learnability", student=student, teacher=teacher)


def run_selection(pairs, k: int) -> torch.Tensor:
    return select_joint(pairs, k, n_chunks=N_CHUNKS, noise=torch.Generator().manual_seed(0))


def selection_seconds(pairs, k: int, device: torch.device, n: int) -> float:
    """Median of n timed selections, after one warm-up."""
    run_selection(pairs, k)
    return statistics.median(
        synced_seconds(lambda: run_selection(pairs, k), device) for _ in range(n)
    )


def teacher_pass_seconds(b: int, device: torch.device) -> float:
    """One `embed_pairs` pass of the built-in two-tower teacher over B text pairs."""
    torch.manual_seed(0)
    model = TwoTower(TwoTowerConfig(embed_dim=WIDTH)).to(device).eval()
    left, right = stdlib_text_pairs(b)
    embed_pairs(model, left[:64], right[:64])  # warm-up
    return synced_seconds(lambda: embed_pairs(model, left, right), device)


def selection_peak_rss_mib(b: int, k: int, loss: str) -> float:
    """Peak RSS increase of one CPU selection (Linux), run in a fresh process so that memory
    freed earlier and reused by the selection cannot hide part of its peak."""
    run_selection(lazy_pair_scores(64, torch.device("cpu"), loss), 8)  # kernels, thread pool
    pairs = lazy_pair_scores(b, torch.device("cpu"), loss)
    before = peak_rss_kib(reset=True)
    run_selection(pairs, k)
    return (peak_rss_kib() - before) / 1024


def selection_peak_mib(pairs, k: int, device: torch.device, loss: str) -> float:
    """Peak memory increase of one selection: CUDA allocator peak, or RSS in a fresh process."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run_selection(pairs, k)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / MIB
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(selection_peak_rss_mib, pairs.size, k, loss).result()


def largest_tensor(pairs, k: int) -> LargestTensor:
    with LargestTensor() as probe:
        run_selection(pairs, k)
    return probe


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,16384", help="super-batch sizes B")
    parser.add_argument("--keep", default="0.1,0.2", help="fractions of B to keep")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=5, help="timed selections (median)")
    parser.add_argument("--losses", default="sigmoid,softmax", help="pair losses")
    return parser.parse_args()


def measure(b: int, keep: float, loss: str, teacher: float, device: torch.device, args) -> tuple:
    """One loss, B and keep fraction: the table row, the selection's time over the teacher
    pass's, and whether it stayed below a B×B matrix: no tensor larger than the inputs ([B, d]),
    one B×chunk block or, softmax, one block of chosen rows × B; and for sigmoid a peak below one
    B×B matrix (softmax keeps the chosen rows' logits up to 4 × 64 MiB, `CACHED_LOGITS`)."""
    full = b * b * 4 / MIB
    k, pairs = round(keep * b), lazy_pair_scores(b, device, loss)
    select = selection_seconds(pairs, k, device, args.repeats)
    peak, probe = selection_peak_mib(pairs, k, device, loss), largest_tensor(pairs, k)
    cells = [loss, b, keep, k, f"{select:.3f}", f"{teacher:.2f}", f"{select / teacher:.2%}"]
    cells += [f"{peak:.1f}", f"{full:.0f}", f"{probe.nbytes / MIB:.1f}"]
    cells += [f"{probe.numel / (b * b):.2%}"]
    keys = ("loss", "B", "keep", "k", "select_s", "teacher_s", "ratio", "peak_mib", "full_mib")
    values = (loss, b, keep, k, select, teacher, select / teacher, peak, full)
    ROWS.append({**dict(zip(keys, values, strict=True)), "largest_mib": probe.nbytes / MIB})
    print(f"{loss}, B = {b}, keep {keep}: select_joint {select:.3f} s", flush=True)
    block = min(1024, k) if loss == "softmax" else 0
    below = probe.numel <= b * max(WIDTH, -(-k // N_CHUNKS), block)
    below &= loss == "softmax" or peak < full
    return cells, select / teacher, below


def main() -> None:
    args, started = parse_args(), time.perf_counter()
    sizes, keeps = [int(s) for s in args.sizes.split(",")], [float(f) for f in args.keep.split(",")]
    device = torch.device(args.device)
    memory = "CUDA peak Δ MiB" if device.type == "cuda" else "peak RSS Δ MiB"
    header = ["loss", "B", "keep", "k", "select_joint s", "teacher pass s", "ratio", memory]
    header += ["B×B would be MiB", "largest tensor MiB", "largest / B×B"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{N_CHUNKS} chunks, width {WIDTH}, select_joint median of {args.repeats}, teacher once")
    rows, ratio_ok, no_b_by_b = [], True, True
    for b in sizes:
        teacher = teacher_pass_seconds(b, device)
        for loss, keep in itertools.product(args.losses.split(","), keeps):
            cells, ratio, below = measure(b, keep, loss, teacher, device, args)
            rows.append(cells)
            no_b_by_b &= below
            ratio_ok &= b != 16384 or loss != "sigmoid" or ratio <= 0.05
    print(text_table(rows, header=header))
    ratio = ratio_ok if 16384 in sizes else "not measured"
    verdict = "met" if ratio is True and no_b_by_b else "NOT met"
    print(
        f"target {verdict}: sigmoid ratio ≤ 5 % at B=16384: {ratio}; no B×B allocation: {no_b_by_b}"
    )
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    record(
        "selection" if device.type == "cpu" else f"selection_{device.type}",
        title="JEST selection against a teacher pass",
        command=command_line(),
        data={"device": str(device), "chunks": N_CHUNKS, "width": WIDTH, "rows": ROWS},
        machine_name=machine(str(device)),
    )


if __name__ == "__main__":
    main()
