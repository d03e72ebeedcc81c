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


_BF16_PROBE = """
import sys, torch
from vidkd.models.resnet3d import resnet3d
depth, width, frames, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
student = resnet3d(depth, 4, width_multiplier=width).to(memory_format=torch.channels_last_3d)
clips = torch.rand(2, 3, frames, size, size).contiguous(memory_format=torch.channels_last_3d)
with torch.autocast("cpu", dtype=torch.bfloat16):
    logits = student(clips)
logits.float().sum().backward()
print("ok")
"""


def cpu_bf16_step_problem(
    depth: int, width: float, frames: int, size: int, timeout: float = 120.0
) -> str | None:
    """Why a bf16 training step of this 3D ResNet on this clip shape fails on this CPU, or None.

    With torch 2.13 on an AVX512-BF16 CPU (AMD EPYC), the bf16 weight gradient of the
    7x7x7 stem corrupts the heap or hangs inside oneDNN on 4-frame clips (5, 8 and 16
    frames train fine). A child process tries one step of two clips of the real shape, so
    that a crash or hang does not take the caller down.
    """
    import os
    import subprocess
    import sys

    source = str(Path(__file__).resolve().parents[2])  # the `src` folder holding vidkd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    shape = f"{frames}x{size}x{size} clips"
    try:
        result = subprocess.run(
            [sys.executable, "-c", _BF16_PROBE, str(depth), str(width), str(frames), str(size)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        return (f"one bf16 training step of this network on {shape} hung for {timeout:.0f}s "
                f"(oneDNN, torch {torch.__version__}, this CPU)")
    if result.returncode != 0 or "ok" not in result.stdout:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return (f"one bf16 training step of this network on {shape} crashed ({last[:120]}; "
                f"torch {torch.__version__}, this CPU)")
    return None
