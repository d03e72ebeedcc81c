"""The clip dataset: a list of :class:`VideoRecord` -> uint8 clip tensors.

Training items hold ``num_views`` clips of one video (one for ``baseline``, two for
SKD-SRL), each at its own random temporal position and random crop window (one window
for all frames of a clip); with ``same_clip`` every view is the same clip, window
included, and the views differ only by their augmentation draws (on the device). Test items hold ``num_clips`` clips spread uniformly over the
video, each centre-cropped. Clips stay uint8 ``(T, H, W, C)`` until they reach the
training device (see :func:`vidkd.data.transforms.to_model_input`).

A video that fails to decode never crashes a worker: in training it is replaced by
another random video and its path travels with the batch (``failed``) so the engine can
log it once and count it; in testing the item is marked ``valid = False``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vidkd.data.decode import ClipReader, DecodeError, open_clip_reader
from vidkd.data.records import VideoRecord
from vidkd.data.sampling import Clip, random_clip, uniform_clips
from vidkd.errors import VidkdError

MAX_REPLACEMENTS = 20


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut: frames per clip, frame stride, resize and crop sizes."""

    clip_len: int = 16
    frame_stride: int = 1
    short_side: int = 128
    crop_size: int = 112


def crop(frames: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """One crop window for every frame of a clip."""
    return frames[:, top : top + size, left : left + size]


def pad_to(frames: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (mid-grey after scaling) frames smaller than the crop size."""
    _, height, width, _ = frames.shape
    if height >= size and width >= size:
        return frames
    out = np.full((frames.shape[0], max(height, size), max(width, size), 3), 128, np.uint8)
    out[:, :height, :width] = frames
    return out


def read_clip(reader: ClipReader, clip: Clip, last: int | None) -> np.ndarray:
    """The frames of ``clip``, none at or past frame ``last`` (where the record's range ends,
    when it has one): a clip longer than what is left of the range repeats the frames it
    has, as a clip longer than its video does (Hara's LoopPadding)."""
    if last is not None:
        available = max(1, -(-(last - clip.start) // clip.stride))
        if available < clip.num_frames:
            frames = reader.read(clip.start, available, clip.stride)
            return frames[np.arange(clip.num_frames) % len(frames)]
    return reader.read(*clip)


class VideoClipDataset(Dataset):
    """Clips of labelled videos for training (random) or testing (uniform, centre crop)."""

    def __init__(
        self,
        records: list[VideoRecord],
        spec: ClipSpec,
        mode: Literal["train", "test"],
        num_views: int = 1,
        same_clip: bool = False,
        num_clips: int = 10,
        seed: int = 0,
        open_reader: Callable[[str | Path, int], ClipReader] = open_clip_reader,
    ) -> None:
        if not records:
            raise VidkdError("the dataset has no videos; check data.root and data.annotations")
        self.records = records
        self.spec = spec
        self.mode = mode
        self.num_views = num_views
        self.same_clip = same_clip
        self.num_clips = num_clips
        self.seed = seed
        self.epoch = 0
        self.open_reader = open_reader  # files, or a MemoryCache's frames (data.cache)

    def set_epoch(self, epoch: int) -> None:
        """Clip positions and crops depend on (seed, epoch, index) only, not on workers."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _frame_range(self, record: VideoRecord, fps: float, total: int) -> tuple[int, int | None]:
        """The record's frames ``[first, last)`` (``last`` None: to the end)."""
        if record.start_frame is not None or record.end_frame is not None:
            first, last = record.start_frame or 0, record.end_frame
        else:
            first = int(record.start_sec * fps) if record.start_sec is not None else 0
            last = int(record.end_sec * fps) if record.end_sec is not None else None
        return min(first, max(total - 1, 0)), last

    def _read_train(self, record: VideoRecord, rng: np.random.Generator) -> np.ndarray:
        spec = self.spec
        with self.open_reader(record.path, spec.short_side) as reader:
            first, last = self._frame_range(record, reader.info.fps, reader.info.num_frames)
            views = []
            for _ in range(1 if self.same_clip else self.num_views):
                clip = random_clip(
                    reader.info.num_frames, spec.clip_len, spec.frame_stride, rng, first, last
                )
                frames = pad_to(read_clip(reader, clip, last), spec.crop_size)
                _, height, width, _ = frames.shape
                top = int(rng.integers(0, height - spec.crop_size + 1))
                left = int(rng.integers(0, width - spec.crop_size + 1))
                views.append(crop(frames, top, left, spec.crop_size))
        if self.same_clip:  # SPEC: the clip is reused, crop window included
            views *= self.num_views
        return np.stack(views)

    def _read_test(self, record: VideoRecord) -> np.ndarray:
        spec = self.spec
        with self.open_reader(record.path, spec.short_side) as reader:
            first, last = self._frame_range(record, reader.info.fps, reader.info.num_frames)
            clips = uniform_clips(
                reader.info.num_frames, spec.clip_len, spec.frame_stride, self.num_clips, first, last
            )
            out = []
            cache: dict[Clip, np.ndarray] = {}
            for clip in clips:
                if clip not in cache:
                    frames = pad_to(read_clip(reader, clip, last), spec.crop_size)
                    _, height, width, _ = frames.shape
                    top = (height - spec.crop_size) // 2
                    left = (width - spec.crop_size) // 2
                    cache[clip] = crop(frames, top, left, spec.crop_size)
                out.append(cache[clip])
        return np.stack(out)

    def __getitem__(self, index: int) -> dict[str, Any]:
        failed: list[str] = []
        if self.mode == "test":
            record = self.records[index]
            try:
                clips = self._read_test(record)
                valid = True
            except DecodeError as error:
                failed.append(f"{record.path}: {error}")
                size = self.spec.crop_size
                clips = np.zeros((self.num_clips, self.spec.clip_len, size, size, 3), np.uint8)
                valid = False
            return {
                "clips": torch.from_numpy(np.ascontiguousarray(clips)),
                "label": record.label,
                "index": index,
                "valid": valid,
                "failed": failed,
            }
        rng = np.random.default_rng([self.seed, self.epoch, index])
        current = index
        for _ in range(MAX_REPLACEMENTS):
            record = self.records[current]
            try:
                clips = self._read_train(record, rng)
            except DecodeError as error:
                failed.append(f"{record.path}: {error}")
                current = int(rng.integers(0, len(self.records)))
                continue
            return {
                "clips": torch.from_numpy(np.ascontiguousarray(clips)),
                "label": record.label,
                "index": current,
                "valid": True,
                "failed": failed,
            }
        raise VidkdError(
            f"{MAX_REPLACEMENTS} videos in a row failed to decode (last: {failed[-1]}); "
            "run `vidkd check` on the dataset and pass its skip list as data.skip_list"
        )


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips and labels; keep the per-item failure lists as one flat list."""
    return {
        "clips": torch.stack([item["clips"] for item in items]),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "valid": torch.tensor([item["valid"] for item in items], dtype=torch.bool),
        "failed": [path for item in items for path in item["failed"]],
    }
