"""Which process this is under torchrun / accelerate launch: only rank 0 writes files, and the
world a split scoring shares. One process: rank 0 of a world of one."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun/accelerate job (only rank 0 writes files)."""
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def world() -> tuple[int, int]:
    """(processes, this process's rank); joins the process group torchrun describes when no one has
    (gloo on CPUs, nccl on GPUs)."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return n, dist.get_rank()
