"""One training run over several processes (torchrun, DistributedDataParallel).

torchrun starts one process per CPU share or GPU and tells each its place through RANK,
WORLD_SIZE and LOCAL_RANK; without torchrun (or with one process) there is no process group and
nothing here costs anything. Processes talk over gloo on CPUs and nccl on GPUs.

Batches: every process draws the same global batch from the same seeded generator and keeps its
own contiguous share of the rows. Drawing a batch is cheap next to the step, no data moves
between processes, and the run sees the same samples whatever the number of processes, so a
run can resume on a different number of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Processes:
    """This process's place: ``rank`` of ``world``, on ``device``."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and plots."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch of ``batch_size`` (a multiple of ``world``)."""
        share = batch_size // self.world
        return slice(self.rank * share, (self.rank + 1) * share)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"{name}: expected a non-negative integer in the environment (set by torchrun), got {value!r}")
    return int(value)


def start(device: str) -> Processes:
    """Join torchrun's process group when there is more than one process, and pick this process's
    device: "cpu", or "cuda" (the GPU numbered LOCAL_RANK on its machine)."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {list(DEVICES)}, got {device!r}")
    world, rank, local_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or rank >= world:
        raise ValueError(f"RANK: expected 0 <= RANK < WORLD_SIZE (set by torchrun), got RANK={rank}, WORLD_SIZE={world}")
    where = "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' asked for, but torch sees no GPU here")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"device: process {local_rank} of this machine needs GPU {local_rank}, but there are only "
                             f"{torch.cuda.device_count()}; start at most one process per GPU")
        torch.cuda.set_device(local_rank)
        where = f"cuda:{local_rank}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Processes(rank=rank, world=world, device=where)


def stop(processes: Processes, *, failed: bool = False) -> None:
    """Leave the process group: after every process got here, so that none is cut off
    mid-message; at once when this one ``failed`` (the others may never get here, and torchrun
    stops them when it sees this one exit)."""
    if processes.world > 1 and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def mean(value: torch.Tensor, processes: Processes) -> float:
    """The mean of a scalar over all processes."""
    if processes.world == 1:
        return value.item()
    total = value.detach().clone().reshape(1)
    dist.all_reduce(total)
    return total.item() / processes.world
