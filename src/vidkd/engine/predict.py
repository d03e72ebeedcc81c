"""Class probabilities of single videos with a shipped student (``vidkd predict``).

Video-level scoring, exactly as the test protocol of ``vidkd eval``: ``N`` clips spread
uniformly over the video, one centre crop each, softmax averaged over the clips
(MMAction2's ``average_clip`` with ``prob``). Clip length, stride, resize and crop come
from the student's own description, so a file is scored the way its student was trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidkd.config import MAX_CLIPS
from vidkd.data.check import find_videos as videos_under
from vidkd.data.dataset import ClipSpec, VideoClipDataset
from vidkd.data.decode import DecodeError
from vidkd.data.index import VIDEO_EXTENSIONS
from vidkd.data.index.walk import _is_frame_folder
from vidkd.data.records import VideoRecord
from vidkd.data.transforms import to_model_input
from vidkd.errors import VidkdError


@dataclass(frozen=True)
class Prediction:
    """One video: its averaged class probabilities, or why it could not be read."""

    path: Path
    probabilities: list[float] | None = None
    error: str | None = None

    def top(self, classes: list[str], k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes (name, probability), most probable first."""
        if self.probabilities is None:
            return []
        order = sorted(range(len(self.probabilities)), key=lambda i: -self.probabilities[i])
        return [(classes[i], self.probabilities[i]) for i in order[:k]]


def clip_spec(description: dict[str, Any], source: Path | str = "checkpoint") -> ClipSpec:
    """The clip protocol stored with a student (``clip_len``, ``frame_stride``, sizes)."""
    try:
        return ClipSpec(
            int(description["clip_len"]), int(description.get("frame_stride", 1)),
            int(description["short_side"]), int(description["crop_size"]),
        )
    except KeyError as error:
        raise VidkdError(
            f"{source}: its model description lacks {error}; ship the student again with "
            "`vidkd train` (older files did not store the input protocol)"
        ) from None


def find_videos(inputs: list[Path]) -> list[Path]:
    """Expand folders into the video files (and frame folders) under them, sorted, as
    ``vidkd check`` finds them (links followed, hidden names skipped).

    A path that does not exist is kept, so that it is reported as unreadable in turn.
    """
    videos: list[Path] = []
    for item in inputs:
        if not item.is_dir() or _is_frame_folder(item):
            videos.append(item)
            continue
        unlistable: dict[str, str] = {}
        found = videos_under(item, unlistable)
        if unlistable:
            folder, reason = next(iter(sorted(unlistable.items())))
            raise VidkdError(f"{folder}: {reason}; check its permissions")
        if not found:
            raise VidkdError(
                f"{item} holds no video files ({', '.join(VIDEO_EXTENSIONS)}) or frame folders; "
                "pass video files or a folder of them"
            )
        videos += found
    return videos


def read_clips(path: Path, spec: ClipSpec, num_clips: int) -> torch.Tensor:
    """``num_clips`` uniform, centre-cropped clips of one video: uint8 (N, T, H, W, C).

    Raises :class:`DecodeError` naming the reason when the video cannot be read.
    """
    dataset = VideoClipDataset([VideoRecord(Path(path), 0)], spec, "test", num_clips=num_clips)
    item = dataset[0]
    if not item["valid"]:
        reason = item["failed"][0].split(": ", 1)[-1] if item["failed"] else "unreadable"
        raise DecodeError(reason)
    return item["clips"]


@torch.no_grad()
def video_probabilities(model: nn.Module, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Softmax averaged over the clips of one video: uint8 (N, T, H, W, C) -> (classes,)."""
    logits = model(to_model_input(clips, device, channels_last=False))
    return logits.float().softmax(dim=1).mean(dim=0).cpu()


def predict_videos(
    model: nn.Module, description: dict[str, Any], videos: list[Path], num_clips: int,
    device: torch.device,
) -> Iterator[Prediction]:
    """One :class:`Prediction` per video, in order; an unreadable video yields its reason."""
    if not 1 <= num_clips <= MAX_CLIPS:
        raise VidkdError(f"--clips {num_clips}: pass 1 to {MAX_CLIPS} clips per video")
    spec = clip_spec(description)
    model.eval()
    for path in videos:
        try:
            clips = read_clips(path, spec, num_clips)
        except DecodeError as error:
            yield Prediction(path, error=str(error))
            continue
        yield Prediction(path, video_probabilities(model, clips, device).tolist())
