"""What machine and libraries a result came from: the CPU (and its bf16 support, which decides the
LLMs' precision), the GPU, the package versions. Written into every run's config.json and model card."""
from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
           "cpu_bf16": cpu_bf16()}
    for pkg in ("laborllm", "torch", "transformers", "peft", "accelerate", "pandas", "numpy", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name()
    except Exception:  # pragma: no cover - no torch / no driver
        pass
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16() -> str:
    """What the CPU offers for bf16 (which decides the precision LLMs train and score in)."""
    return "AMX" if amx_cpu() else "AVX512-BF16, no AMX" if native_bf16_cpu() else "no native bf16"


def native_bf16_cpu() -> bool:
    """True on CPUs that compute bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and
    slower than fp32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # older torch: read the flags
        return _cpu_flag(" avx512_bf16") or _cpu_flag(" amx_bf16")


def amx_cpu() -> bool:
    """True on CPUs with AMX tiles: the only CPUs where bf16 *training* (autocast, backward, AdamW) was
    measured faster than fp32; with AVX512-BF16 alone it was 25-30% slower (docs/benchmarks.md)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_amx_tile_supported())
    except AttributeError:
        return _cpu_flag(" amx_bf16")


def _cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def machine() -> str:
    """One line naming the machine: the GPU, or the CPU with its bf16 support."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU {torch.cuda.get_device_name()}"
    except Exception:  # pragma: no cover - no driver
        pass
    return f"{cpu_name()} ({cpu_bf16()})"
