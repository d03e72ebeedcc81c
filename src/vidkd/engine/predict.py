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
from vidkd.files import escape_path, is_special


@dataclass(frozen=True)
class Prediction:
    """One video: its averaged class probabilities, or why it could not be read."""

    path: Path
    probabilities: list[float] | None = None
    error: str | None = None

    def top(self, classes: list[str], k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` most probable classes (index, name, probability), most probable first."""
        if self.probabilities is None:
            return []
        order = sorted(range(len(self.probabilities)), key=lambda i: -self.probabilities[i])
        return [(i, classes[i], self.probabilities[i]) for i in order[:k]]


#: bounds on a stored clip protocol: a larger value is a damaged file (it would exhaust memory)
MAX_CLIP_LEN, MAX_SHORT_SIDE = 1024, 4096
#: clips of one video through the network at once (``--clips`` may ask for up to MAX_CLIPS)
CLIPS_PER_FORWARD = 8


def clip_spec(description: dict[str, Any], source: Path | str = "checkpoint") -> ClipSpec:
    """The clip protocol stored with a student (``clip_len``, ``frame_stride``, sizes),
    checked against the ranges training allows."""
    try:
        values = {key: description[key] for key in ("clip_len", "short_side", "crop_size")}
    except KeyError as error:
        raise VidkdError(
            f"{source}: its model description lacks {error}; ship the student again with "
            "`vidkd train` (older files did not store the input protocol)"
        ) from None
    values["frame_stride"] = description.get("frame_stride", 1)
    bounds = {"clip_len": (1, MAX_CLIP_LEN), "frame_stride": (1, MAX_CLIP_LEN),
              "short_side": (1, MAX_SHORT_SIDE), "crop_size": (4, values["short_side"])}
    for key, (low, high) in bounds.items():
        value = values[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise VidkdError(f"{source}: its model description has {key}={value!r}, outside "
                             f"{low}..{high}; the file is damaged, ship it again from its run directory")
    return ClipSpec(values["clip_len"], values["frame_stride"], values["short_side"],
                    values["crop_size"])


def class_names(description: dict[str, Any], source: Path | str = "checkpoint") -> list[str]:
    """The student's class names, one for each of its ``num_classes`` outputs (their index
    as text for a file that stores none)."""
    count = description["num_classes"]
    names = description.get("classes")
    if names is None:
        return [str(i) for i in range(count)]
    if not (isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names)):
        raise VidkdError(
            f"{source}: its model description lists {len(names) if isinstance(names, list) else 'no'} "
            f"class names for {count} outputs; the file is damaged, ship it again from its run directory"
        )
    return names


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
    if is_special(path):  # PyAV would wait on a FIFO for ever
        raise DecodeError("not a regular file or folder (a FIFO, device or socket)")
    dataset = VideoClipDataset([VideoRecord(Path(path), 0)], spec, "test", num_clips=num_clips)
    item = dataset[0]
    if not item["valid"]:
        reason = item["failed"][0].split(": ", 1)[-1] if item["failed"] else "unreadable"
        raise DecodeError(reason)
    return item["clips"]


@torch.no_grad()
def video_probabilities(model: nn.Module, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Softmax averaged over the clips of one video: uint8 (N, T, H, W, C) -> (classes,);
    :data:`CLIPS_PER_FORWARD` clips at a time, so that many clips fit in memory."""
    total = None
    for chunk in clips.split(CLIPS_PER_FORWARD):
        logits = model(to_model_input(chunk, device, channels_last=False))
        summed = logits.float().softmax(dim=1).sum(dim=0)
        total = summed if total is None else total + summed
    return (total / clips.shape[0]).cpu()


def predict_videos(
    model: nn.Module, description: dict[str, Any], videos: list[Path], num_clips: int,
    device: torch.device, source: Path | str = "checkpoint",
) -> Iterator[Prediction]:
    """One :class:`Prediction` per video, in order; an unreadable video yields its reason."""
    check_clips(num_clips)
    spec = clip_spec(description, source)
    model.eval()
    for path in videos:
        try:
            clips = read_clips(path, spec, num_clips)
        except DecodeError as error:
            yield Prediction(path, error=str(error))
            continue
        probabilities = video_probabilities(model, clips, device)
        if not torch.isfinite(probabilities).all():
            raise VidkdError(f"{source}: the network's outputs are not finite (NaN or inf) on "
                             f"{escape_path(str(path))}; "
                             "its weights are damaged, ship it again from its run directory")
        yield Prediction(path, probabilities.tolist())


def check_clips(num_clips: int) -> None:
    """``--clips``, checked before any work."""
    if not 1 <= num_clips <= MAX_CLIPS:
        raise VidkdError(f"--clips {num_clips}: pass 1 to {MAX_CLIPS} clips per video")
