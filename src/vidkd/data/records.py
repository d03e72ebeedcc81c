"""The unit every dataset index produces: one video (file or frame folder) and its label."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video.

    ``path`` is a video file, or a directory of frames (``img_00001.jpg`` ...) for the
    frame-folder backend. ``start_sec``/``end_sec`` optionally restrict sampling to a
    segment (Kinetics annotations name one); ``None`` means the whole video.
    ``start_frame``/``end_frame`` restrict it to frames ``[start_frame, end_frame)`` (positions
    in the frame order; a VideoFrameDataset list names one range of a frame folder).
    ``group`` identifies videos that share actors and scenes (UCF101/HMDB51 groups, the
    ranges of one frame folder), used to make a group-disjoint validation split; ``None``
    means the video is its own group.
    """

    path: Path
    label: int
    group: str | None = None
    start_sec: float | None = None
    end_sec: float | None = None
    start_frame: int | None = None
    end_frame: int | None = None


@dataclass(frozen=True)
class DatasetIndex:
    """A split of a dataset: its records and the ordered class names (label i -> classes[i])."""

    records: list[VideoRecord]
    classes: list[str]
    missing: list[str]  # entries named by the annotation but not found on disk
