"""What this machine offers: native bf16 on the CPU, and whether ``torch.compile`` can run.

``vidkd bench`` reports both; the engine warns before a bf16 run on a CPU that only
emulates bf16 and refuses ``train.compile`` where no compiler backend exists. It also
asks glibc to keep freed memory for the next step (``train.reuse_host_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
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


def precision_warning(precision: str, device: torch.device) -> str | None:
    """One line for a ``train.precision`` that is slow on this CPU, else None: bf16 on a CPU
    without native bf16, and fp16 on any CPU (autocast's fp16 convolutions on a CPU took 26x
    as long as fp32 on a demo step, 2026-11-30, 2-core AMD EPYC)."""
    if device.type != "cpu":
        return None
    if precision == "fp16":
        return ("train.precision=fp16 on a CPU: fp16 autocast is for GPUs, and its CPU kernels "
                "are many times slower than fp32 (`vidkd bench` does not time it here); prefer "
                "fp32, or bf16 on a CPU with AVX512-BF16 or AMX")
    if precision == "bf16" and not cpu_native_bf16():
        return ("train.precision=bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated and can "
                "be many times slower than fp32 here (`vidkd bench` measures both); prefer fp32")
    return None


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


#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
#: glibc's usual behaviour, as near as ``mallopt`` can set it back: its default mmap count,
#: and the mmap and trim thresholds its adaptive rule settles at (32 MiB and twice that);
#: any ``mallopt`` call switches that rule off for good
_USUAL = ((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, 32 * 2**20), (_M_TRIM_THRESHOLD, 64 * 2**20))
#: environment through which the user already chose how memory is allocated: left alone
_ALLOCATOR_ENVIRONMENT = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                          "MALLOC_TOP_PAD_")
_ALLOCATOR_TUNABLES = ("glibc.malloc.mmap_max", "glibc.malloc.trim_threshold",
                       "glibc.malloc.mmap_threshold", "glibc.malloc.top_pad")

#: whether this process's glibc currently keeps freed memory because vidkd asked it to:
#: the allocator's settings belong to the whole process, and this mirrors them
_reusing = False


def _glibc() -> ctypes.CDLL | str:
    """This process's glibc, or why there is none to tune."""
    libc_name, _ = platform.libc_ver()
    if libc_name != "glibc":
        return f"the C library is not glibc ({platform.system()} {libc_name or 'unknown libc'})"
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError) as error:
        return f"glibc's mallopt is not reachable ({error})"
    return libc


def _allocator_chosen_by_environment() -> str | None:
    """The variable (or library) through which the user already tuned or replaced malloc."""
    for name in _ALLOCATOR_ENVIRONMENT:
        if name in os.environ:
            return name
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(tunable in tunables for tunable in _ALLOCATOR_TUNABLES):
        return "GLIBC_TUNABLES"
    if "malloc" in os.environ.get("LD_PRELOAD", "").lower():  # jemalloc, tcmalloc, mimalloc
        return "LD_PRELOAD"
    provider = _malloc_provider()
    return f"{provider}, whose malloc this process calls," if provider else None


class _DlInfo(ctypes.Structure):  # dladdr's Dl_info (dlfcn.h)
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _malloc_provider() -> str | None:
    """The library whose ``malloc`` this process calls when it is not glibc's own: jemalloc or
    tcmalloc put first by ``LD_PRELOAD`` under any name, by ``/etc/ld.so.preload``, or linked
    in. ``mallopt`` would tune glibc's heap, which that allocator does not use. Any other
    interposer (a heap profiler, a leak tracer) counts too: it chose the allocator."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        process, libc = ctypes.CDLL(None), ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        called = ctypes.cast(process.malloc, ctypes.c_void_p).value
        if called == ctypes.cast(libc.malloc, ctypes.c_void_p).value:
            return None
    except (OSError, AttributeError):  # no answer: glibc is the likely allocator
        return None
    try:  # only the name is left to find (glibc before 2.34 keeps dladdr in libdl)
        info = _DlInfo()
        process.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        if process.dladdr(called, ctypes.byref(info)) and info.dli_fname:
            return os.path.basename(os.fsdecode(info.dli_fname))
    except (OSError, AttributeError):
        pass
    return "a library other than glibc"


def reuse_host_memory() -> str | None:
    """Make glibc keep freed memory in the heap for reuse; None, or why it cannot here.

    PyTorch takes every CPU tensor from ``malloc``. glibc serves a block over 32 MB with a
    fresh ``mmap`` and unmaps it on ``free``, so every training step faults in each page of
    its large activations and gradients again (one ReLU gradient of a 3D ResNet-18 at batch
    32 is 411 MB). With direct mmaps off (``M_MMAP_MAX`` 0) and trimming off
    (``M_TRIM_THRESHOLD`` unlimited) the next step reuses the same pages. These are the
    knobs of the ``MALLOC_MMAP_MAX_`` and ``MALLOC_TRIM_THRESHOLD_`` environment variables,
    set from inside the process so that a plain ``vidkd train`` gets them. They hold for
    the whole process, its threads and the loader workers it forks; only a block too large
    for a thread's own heap (64 MiB) still comes from ``mmap`` there. Freed blocks that no
    later request fits stay held until :func:`trim_host_memory`.
    """
    global _reusing
    libc = _glibc()
    if isinstance(libc, str):
        return libc
    if libc.mallopt(_M_MMAP_MAX, 0) != 1:
        return "glibc's mallopt refused M_MMAP_MAX"
    # mallopt takes an int; glibc reads -1 as the largest size_t, i.e. never trim
    if libc.mallopt(_M_TRIM_THRESHOLD, -1) != 1:
        _set_usual(libc)
        return "glibc's mallopt refused M_TRIM_THRESHOLD"
    _reusing = True
    return None


def _set_usual(libc: ctypes.CDLL) -> None:
    global _reusing
    for parameter, value in _USUAL:
        libc.mallopt(parameter, value)
    _reusing = False


def return_host_memory() -> None:
    """Undo :func:`reuse_host_memory` as far as glibc allows, and hand freed memory back.

    glibc's thresholds are adaptive until the first ``mallopt``; this sets them where the
    adaptive rule settles (:data:`_USUAL`). Only a new process gets the adaptive rule back.
    """
    if not _reusing:
        return
    libc = _glibc()
    if not isinstance(libc, str):
        _set_usual(libc)
        libc.malloc_trim(0)


def trim_host_memory() -> None:
    """Hand the heap's free pages back to the OS (``malloc_trim``), where memory is reused.

    The engine calls it once an epoch, after validation, so that freed blocks no request
    fitted cannot pile up over a run; the next steps fault their pages in once more.
    """
    if not _reusing:
        return
    libc = _glibc()
    if not isinstance(libc, str):
        libc.malloc_trim(0)


def apply_reuse_host_memory(enabled: bool, device: torch.device) -> tuple[bool, str | None]:
    """``train.reuse_host_memory`` for a run on ``device``: (reused, why not where it is not).

    Only a CPU run computes on host memory, so a GPU run changes nothing, and says whether
    an earlier CPU run of this process left reuse on. Off, it undoes what an earlier run of
    this process set, as far as glibc allows (:func:`return_host_memory`).
    """
    if device.type != "cpu":
        return _reusing, None
    if not enabled:
        return_host_memory()
        return False, None
    chosen = _allocator_chosen_by_environment()
    if chosen is not None:
        return False, f"train.reuse_host_memory: not applied, {chosen} already sets the allocator"
    problem = reuse_host_memory()
    if problem is None:
        return True, None
    return False, f"train.reuse_host_memory: not applied, {problem}"


_BF16_PROBE = """
import sys, torch
from vidkd.models.resnet3d import resnet3d
depth, width, frames, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t_size, t_stride = int(sys.argv[5]), int(sys.argv[6])
student = resnet3d(depth, 4, width_multiplier=width, conv1_t_size=t_size, conv1_t_stride=t_stride)
student = student.to(memory_format=torch.channels_last_3d)
clips = torch.rand(2, 3, frames, size, size).contiguous(memory_format=torch.channels_last_3d)
with torch.autocast("cpu", dtype=torch.bfloat16):
    logits = student(clips)
logits.float().sum().backward()
print("ok")
"""


def cpu_bf16_step_problem(
    depth: int, width: float, frames: int, size: int, conv1_t_size: int = 7,
    conv1_t_stride: int = 1, timeout: float = 120.0,
) -> str | None:
    """Why a bf16 training step of this 3D ResNet on this clip shape fails on this CPU, or None.

    With torch 2.13 on an AVX512-BF16 CPU (AMD EPYC), the bf16 weight gradient of the
    7x7x7 stem corrupts the heap or hangs inside oneDNN on 4-frame clips (5, 8 and 16
    frames train fine). A child process tries one step of two clips of the real shape, on
    the config's stem, so that a crash or hang does not take the caller down.
    """
    import subprocess
    import sys

    source = str(Path(__file__).resolve().parents[2])  # the `src` folder holding vidkd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    shape = f"{frames}x{size}x{size} clips"
    try:
        result = subprocess.run(
            [sys.executable, "-c", _BF16_PROBE, str(depth), str(width), str(frames), str(size),
             str(conv1_t_size), str(conv1_t_stride)],
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
