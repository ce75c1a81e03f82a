"""Whether a language model runs in bf16 or fp32: one decision, for training, scoring and reading
features, from the `precision` setting, the machine, and what a started piece of the same work used."""
from __future__ import annotations

import torch

from laborllm.errors import UserError
from laborllm.machine import amx_cpu, native_bf16_cpu

PRECISIONS = ("auto", "bf16", "fp32")


def machine_bf16(purpose: str) -> bool:
    """Whether bf16 is the faster choice here: on GPUs that support it; on CPUs, for scoring where
    bf16 is native and for training only where AMX makes it faster (25-30% slower without)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return amx_cpu() if purpose == "train" else native_bf16_cpu()


def choose_precision(precision: str = "auto", purpose: str = "score", started: bool | None = None) -> tuple[bool, str]:
    """(bf16 or not, why) for `purpose` ("train" or "score"). `started`: whether a started piece of
    this same work (training checkpoints, scored people, a head's features) ran in bf16; under "auto"
    the work continues in it, so a run moved to another machine keeps its pieces."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16", f"{precision} (asked for)"
    if started is not None:
        return started, f"{'bf16' if started else 'fp32'} (continues a run started in it)"
    bf16 = machine_bf16(purpose)
    what = "bf16" if bf16 else "fp32"
    if torch.cuda.is_available():
        return bf16, f"{what} (GPU {'with' if bf16 else 'without'} bf16)"
    if purpose == "train":
        return bf16, (f"{what} (CPU with AMX: bf16 trains faster)" if bf16 else
                      f"{what} (CPU without AMX: bf16 training measured 25-30% slower than fp32 there)")
    return bf16, f"{what} (CPU {'with' if bf16 else 'without'} native bf16)"
