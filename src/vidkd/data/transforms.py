"""Tensor-side conversions shared by the training methods and evaluation."""

from __future__ import annotations

import torch


def to_model_input(clips: torch.Tensor, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    """uint8 clips (N, T, H, W, C) from the loader -> float (N, C, T, H, W) in [-1, 1] on ``device``.

    The permute keeps the loader's memory order, which is exactly ``channels_last_3d``.
    """
    clips = clips.to(device, non_blocking=True).permute(0, 4, 1, 2, 3)
    clips = clips.float().mul_(2.0 / 255.0).sub_(1.0)
    if channels_last:
        return clips.contiguous(memory_format=torch.channels_last_3d)
    return clips.contiguous()
