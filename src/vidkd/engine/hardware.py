"""What this machine offers: native bf16 on the CPU, and whether ``torch.compile`` can run.

``vidkd bench`` reports both; the engine warns before a bf16 run on a CPU that only
emulates bf16 and refuses ``train.compile`` where no compiler backend exists.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from vidkd.errors import VidkdError

#: /proc/cpuinfo flags of CPUs that compute bf16 natively (AVX512-BF16, AMX)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is unreadable)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_native_bf16() -> bool:
    """Whether the CPU has AVX512-BF16 or AMX; without them bf16 matmuls are emulated."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def bf16_warning(device: torch.device) -> str | None:
    """One line for ``train.precision=bf16`` on a CPU without native bf16, else None."""
    if device.type != "cpu" or cpu_native_bf16():
        return None
    return ("train.precision=bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated and can "
            "be many times slower than fp32 here (`vidkd bench` measures both); prefer fp32")


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` (None when it can)."""
    try:
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        elif device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return "Triton is not installed (pip install triton)"
    except Exception as error:  # noqa: BLE001 - any failure to find a compiler
        return f"no working C++ compiler for TorchInductor ({type(error).__name__}); install g++"
    return None


def compile_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile(module)``, or one clear error where compiling cannot work here."""
    reason = compile_unavailable(device)
    if reason is not None:
        raise VidkdError(f"train.compile=true cannot run on {device}: {reason}; "
                         "or set train.compile=false")
    return torch.compile(module)
