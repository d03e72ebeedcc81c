"""Where clips start in a video (after PyTorchVideo's ``clip_sampling`` and MMAction2's
``SampleFrames``): one random clip per video per epoch for training, N clips spread
uniformly over the video for testing."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Clip(NamedTuple):
    """A clip of ``num_frames`` frames taken every ``stride`` frames from ``start``."""

    start: int
    num_frames: int
    stride: int


def clip_span(num_frames: int, stride: int) -> int:
    """Frames of the video covered by one clip."""
    return (num_frames - 1) * stride + 1


def random_clip(
    video_frames: int, num_frames: int, stride: int, rng: np.random.Generator,
    first: int = 0, last: int | None = None,
) -> Clip:
    """One clip at a uniformly random position inside ``[first, last)``."""
    last = video_frames if last is None else min(last, video_frames)
    room = last - first - clip_span(num_frames, stride)
    start = first + (int(rng.integers(0, room + 1)) if room > 0 else 0)
    return Clip(start, num_frames, stride)


def uniform_clips(
    video_frames: int, num_frames: int, stride: int, num_clips: int,
    first: int = 0, last: int | None = None,
) -> list[Clip]:
    """``num_clips`` clips whose centres split ``[first, last)`` into equal parts
    (the "N clips x 1 crop" test protocol). Short videos repeat the clip at 0."""
    last = video_frames if last is None else min(last, video_frames)
    room = last - first - clip_span(num_frames, stride) + 1
    if room <= 1:
        return [Clip(first, num_frames, stride)] * num_clips
    interval = room / num_clips
    return [Clip(first + int(interval / 2 + interval * i), num_frames, stride) for i in range(num_clips)]
