"""Timing for bench/gpu.py: a model's case warmed up and timed (CUDA synchronised), the time of
`selection.select_joint` on lazy contrastive pair scores, and the device's peak FLOP/s."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import synced_seconds
from gpu_models import Case, Row

from jestflow.transforms.models.losses import PairEmbeddings
from jestflow.transforms.selection.jest import ContrastivePairScores, select_joint

# Peak dense bf16 FLOP/s by device name (the first match counts: "H100 PCIe" before "H100").
PEAKS = (
    ("H100 PCIe", 756e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)


def peak_flops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s or None, the device's name)."""
    if device.type != "cuda":
        return (given * 1e12 if given else None), "CPU"
    name = torch.cuda.get_device_name(device)
    if given:
        return given * 1e12, name
    return next((peak for key, peak in PEAKS if key in name), None), name


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls, CUDA synchronised before and after each."""
    return [synced_seconds(fn, device) for _ in range(repeats)]


def run_case(build: Callable[[], Case | str], device: torch.device, repeats: int) -> Row | str:
    """Build a case, warm it up, and time it (best of `repeats`); or why it was skipped."""
    case = build()
    if isinstance(case, str):
        return case
    row, fn = case
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fn()  # warm-up: kernels, the allocator's blocks, cuBLAS workspaces
    times = timed(fn, device, repeats)
    row.seconds = min(times)
    row.extra = {"times_s": times}
    if device.type == "cuda":
        row.extra["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def selection_seconds(b: int, device: torch.device, repeats: int) -> dict:
    """Median seconds of `select_joint` keeping 10 % of B lazy contrastive pair scores."""
    gen = torch.Generator(device=device).manual_seed(0)

    def embeddings() -> PairEmbeddings:
        left, right = (torch.randn(b, 256, generator=gen, device=device) for _ in range(2))
        return PairEmbeddings(F.normalize(left, dim=1), F.normalize(right, dim=1), 10.0, -10.0)

    pairs = ContrastivePairScores("learnability", student=embeddings(), teacher=embeddings())
    noise = torch.Generator(device=device)
    k = b // 10

    def run():
        return select_joint(pairs, k, n_chunks=16, noise=noise.manual_seed(1))

    run()  # warm-up
    times = timed(run, device, repeats)
    return {"B": b, "k": k, "seconds": statistics.median(times), "times_s": times}
