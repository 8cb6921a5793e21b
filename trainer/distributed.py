"""One process or many under `torchrun`: NCCL on GPUs, gloo on CPUs. Each rank draws and selects
its own super-batches; DistributedDataParallel all-reduces the gradients of the chosen
sub-batches, so every rank holds the same parameters after each step."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..transforms.models.scoring import resolve_device


@dataclass(frozen=True, kw_only=True)
class Ranks:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Ranks:
    """Join the process group `torchrun` describes in the environment, or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(rank=0, world=1, device=resolve_device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), device=chosen)


def teardown(ranks: Ranks, *, finished: bool) -> None:
    if ranks.world > 1 and dist.is_initialized():
        if finished:
            # Every rank waits for rank 0's last save: a gloo group torn down while a peer is
            # still busy can abort that peer ("terminate called without an active exception").
            # Not after an error: the others may never get here.
            dist.barrier()
        dist.destroy_process_group()


class LossOf(nn.Module):
    """The training loss as a module's forward, so DDP sees the call and syncs gradients."""

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: list) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def wrap(module: nn.Module, ranks: Ranks) -> nn.Module:
    if ranks.world == 1:
        return module
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def parameter_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's value, on every rank."""
    if ranks.world == 1:
        return [value]
    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out
