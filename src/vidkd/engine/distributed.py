"""Multi-GPU and multi-node set-up through ``torchrun`` and PyTorch DDP.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them the run is a
single plain process. Under ``torchrun`` the process group is always joined, even with one
process, so that ``torchrun --nproc-per-node 1`` runs the same DDP path as a multi-GPU job.
NCCL on CUDA, Gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vidkd.errors import VidkdError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False  # launched by torchrun: DDP model, distributed samplers
    local_world_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0, option: str = "train.device") -> torch.device:
    """``auto`` -> the local GPU when there is one, else the CPU. ``option`` names where the
    value came from in messages (``train.device``, or ``--device`` of predict)."""
    fix = "--set train.device=" if option == "train.device" else f"{option} "
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(preference)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        # mps, xpu, meta...: not supported; cpu:1 names no device torch can load onto
        raise VidkdError(
            f"{option}={preference!r} is not a device vidkd runs on; use auto, cpu, cuda or cuda:N"
        )
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index >= count:
            found = "no CUDA GPU is visible" if count == 0 else f"only {count} CUDA GPU(s) are visible"
            raise VidkdError(
                f"{option}={preference} asks for GPU {device.index} but {found} "
                f"(torch {torch.__version__}); use {fix}cpu (or auto)"
            )
    return device


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` describes, if any."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(
        int(os.environ["RANK"]),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ["WORLD_SIZE"]),
        enabled=True,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            # bound to this process's GPU: NCCL otherwise guesses it from the rank, which
            # can hang where ranks and GPUs are not numbered alike
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return info


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (identity in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_module(module: torch.nn.Module) -> None:
    """Give every process rank 0's parameters and buffers, in place (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group once every process has reached this point.

    The barrier matters: a Gloo process that tears its group down while a peer is still
    working can abort ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
