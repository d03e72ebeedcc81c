"""Clip-level and video-level accuracy (MMAction2's ``average_clip`` with ``prob``).

Video level averages the softmax over the N clips of each video. Every number is
reported with its protocol, e.g. ``video top-1 (10 clips x 1 centre crop)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy
from tqdm import tqdm

from vidkd.data.transforms import to_model_input
from vidkd.engine.distributed import all_reduce_sum
from vidkd.errors import VidkdError


@dataclass(frozen=True)
class EvalResult:
    clip_top1: float
    clip_top5: float
    video_top1: float
    video_top5: float
    num_videos: int
    num_clips: int
    failed: list[str]
    top_k: int
    #: unreadable videos over every process (``failed`` names this process's)
    num_failed: int = 0
    #: video-level confusion counts, ``confusion[true][predicted]`` (not in :meth:`as_dict`)
    confusion: list[list[int]] = field(default_factory=list, repr=False)

    @property
    def protocol(self) -> str:
        return f"{self.num_clips} clips x 1 centre crop"

    def as_dict(self) -> dict:
        return {
            "clip_top1": self.clip_top1,
            "clip_top5": self.clip_top5,
            "video_top1": self.video_top1,
            "video_top5": self.video_top5,
            "num_videos": self.num_videos,
            "protocol": self.protocol,
            "top5_k": self.top_k,
            "failed_videos": self.num_failed,
        }

    def lines(self) -> list[str]:
        k = self.top_k
        return [
            f"video top-1 ({self.protocol}): {self.video_top1:6.2f}%",
            f"video top-{k} ({self.protocol}): {self.video_top5:6.2f}%",
            f"clip top-1 (1 clip x 1 centre crop, {self.num_clips} per video): {self.clip_top1:6.2f}%",
            f"clip top-{k} (1 clip x 1 centre crop, {self.num_clips} per video): {self.clip_top5:6.2f}%",
            f"videos: {self.num_videos} scored, {self.num_failed} unreadable (skipped)",
        ]


def autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = True,
    progress: bool = False,
    description: str = "eval",
) -> EvalResult:
    """Score every video of ``loader`` (test-mode items: N clips per video)."""
    k = min(5, num_classes)
    metrics = {
        name: MulticlassAccuracy(num_classes, top_k=top_k, average="micro").to(device)
        for name, top_k in [("clip_top1", 1), ("clip_top5", k), ("video_top1", 1), ("video_top5", k)]
    }
    was_training = model.training
    model.eval()
    failed: list[str] = []
    num_clips = 0
    num_videos = 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for batch in tqdm(loader, desc=description, disable=not progress, leave=False, mininterval=2):
        failed.extend(batch["failed"])
        valid = batch["valid"]
        if not valid.any():
            continue
        clips = batch["clips"][valid]  # (B, N, T, H, W, C) uint8
        labels = batch["label"][valid].to(device)
        videos, num_clips = clips.shape[:2]
        num_videos += videos
        with autocast(device, precision):
            logits = model(to_model_input(clips.flatten(0, 1), device, channels_last))
        probs = logits.float().softmax(dim=1)
        clip_labels = labels.repeat_interleave(num_clips)
        metrics["clip_top1"].update(probs, clip_labels)
        metrics["clip_top5"].update(probs, clip_labels)
        video_probs = probs.view(videos, num_clips, -1).mean(dim=1)
        metrics["video_top1"].update(video_probs, labels)
        metrics["video_top5"].update(video_probs, labels)
        confusion.index_put_((labels, video_probs.argmax(dim=1)), torch.ones_like(labels), accumulate=True)
    counts = all_reduce_sum(torch.tensor([num_videos, len(failed)], device=device))
    num_videos, num_failed = int(counts[0]), int(counts[1])
    if num_videos == 0:  # every rank sees the total, so every rank stops here
        example = f" (first: {failed[0]})" if failed else ""
        raise VidkdError(
            f"none of the videos of the {description} split could be decoded{example}; run "
            "`vidkd check` on the dataset and fix or replace them"
        )
    confusion = all_reduce_sum(confusion)
    values = {name: float(metric.compute()) * 100 for name, metric in metrics.items()}
    model.train(was_training)
    return EvalResult(
        **values, num_videos=num_videos, num_clips=num_clips, failed=failed, top_k=k,
        num_failed=num_failed,
        confusion=confusion.cpu().tolist(),
    )
