"""Decoding clips of T consecutive frames: PyAV for video files, JPEG folders as a second backend.

A reader opens the file once, reports the stream's length and frame rate, and reads
clips by frame index. A clip is read by seeking to the key frame before its first
frame and decoding forward, so a 16-frame clip of a 30-second video costs a few
dozen decoded frames, not the whole video. Frames are scaled by libswscale inside
the decoder so that the shorter side is ``short_side`` (aspect ratio kept).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from vidkd.data.index.walk import list_frame_files

_DURATION_TAG = re.compile(r"(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)")  # Matroska: 00:00:02.000000000


class DecodeError(RuntimeError):
    """A video could not be read (corrupt, truncated, empty, not a video)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about a video before decoding it."""

    num_frames: int
    fps: float
    width: int
    height: int


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``short_side``; even sizes."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    new_w = max(2, int(round(width * scale / 2)) * 2)
    new_h = max(2, int(round(height * scale / 2)) * 2)
    if width <= height:
        new_w = short_side
    else:
        new_h = short_side
    return new_w, new_h


class ClipReader(Protocol):
    info: VideoInfo

    def read(self, start: int, num_frames: int, stride: int = 1) -> np.ndarray: ...

    def read_all(self, max_frames: int | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


def _loop_pad(frames: list[np.ndarray], num_frames: int) -> np.ndarray:
    """Repeat the decoded frames cyclically up to ``num_frames`` (Hara's LoopPadding)."""
    if not frames:
        raise DecodeError("no frame could be decoded")
    while len(frames) < num_frames:
        frames.extend(frames[: num_frames - len(frames)])
    return np.stack(frames[:num_frames])


class VideoReader:
    """PyAV reader of one video file; use as a context manager."""

    def __init__(self, path: str | Path, short_side: int | None = None, threads: int = 1) -> None:
        self.path = Path(path)
        try:
            if self.path.stat().st_size == 0:
                raise DecodeError("empty file (0 bytes)")
        except OSError:
            pass  # av.open names the problem
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise DecodeError(f"cannot open: {error}") from error
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError("no video stream")
        self._stream = self._container.streams.video[0]
        codec = self._stream.codec_context
        if threads > 1:
            self._stream.thread_type = "AUTO"
            codec.thread_count = threads
        else:
            codec.thread_count = 1
        width, height = codec.width, codec.height
        if not width or not height:
            self._container.close()
            raise DecodeError("video stream has no frame size")
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        fps = float(rate) if rate else 25.0
        self._time_base = float(self._stream.time_base or 1 / 90000)
        self._start = float(self._stream.start_time or 0) * self._time_base
        num_frames = int(self._stream.frames or 0)
        if num_frames <= 0:
            if self._stream.duration:
                seconds = float(self._stream.duration) * self._time_base
            elif (tagged := _duration_tag(self._stream.metadata)) is not None:
                seconds = tagged  # Matroska/WebM: the container's length counts the audio too
            elif self._container.duration:
                seconds = self._container.duration / av.time_base
            else:
                seconds = 0.0
            num_frames = int(math.floor(seconds * fps))
        self.out_width, self.out_height = scaled_size(width, height, short_side)
        self.info = VideoInfo(max(num_frames, 1), fps, width, height)
        self._decoded_any = False

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _decode_from(self, start: int, wanted: int, stride: int) -> list[np.ndarray]:
        fps = self.info.fps
        target = self._start + start / fps
        if start > 0 or self._decoded_any:
            self._container.seek(
                int(target / self._time_base), stream=self._stream, backward=True, any_frame=False
            )
        self._decoded_any = True
        frames: list[np.ndarray] = []
        half_frame = 0.5 / fps
        position = 0
        for frame in self._container.decode(self._stream):
            if frame.time is not None and frame.time < target - half_frame:
                continue
            if position % stride == 0:
                image = frame.reformat(
                    width=self.out_width, height=self.out_height, format="rgb24"
                ).to_ndarray()
                frames.append(image)
                if len(frames) == wanted:
                    break
            position += 1
        return frames

    def read_all(self, max_frames: int | None = None) -> np.ndarray:
        """Every decodable frame, in order, unpadded, as uint8 (N, H, W, 3) (``data.cache``);
        past ``max_frames``, decoding stops at ``max_frames + 1`` frames (too many to keep)."""
        frames: list[np.ndarray] = []
        try:
            for frame in self._container.decode(self._stream):
                if frame.time is None or frame.time >= self._start - 0.5 / self.info.fps:
                    frames.append(frame.reformat(width=self.out_width, height=self.out_height,
                                                 format="rgb24").to_ndarray())
                    if max_frames is not None and len(frames) > max_frames:
                        break
        except (av.FFmpegError, OSError, ValueError, MemoryError) as error:
            raise DecodeError(f"decoding failed: {error}") from error
        if not frames:
            raise DecodeError("no frame could be decoded")
        return np.stack(frames)

    def read(self, start: int, num_frames: int, stride: int = 1) -> np.ndarray:
        """Frames ``start, start+stride, ...`` as uint8 (num_frames, H, W, 3), loop-padded."""
        try:
            frames = self._decode_from(start, num_frames, stride)
            if not frames and start > 0:  # frame count overestimated by the container
                frames = self._decode_from(0, num_frames, stride)
        except (av.FFmpegError, OSError, ValueError, MemoryError) as error:
            raise DecodeError(f"decoding failed: {error}") from error
        return _loop_pad(frames, num_frames)


def _duration_tag(metadata: dict[str, str]) -> float | None:
    """Seconds of a stream's ``DURATION`` tag (``HH:MM:SS.fraction``), as Matroska muxers write."""
    for key, value in metadata.items():
        if key.upper().split("-")[0] == "DURATION":
            match = _DURATION_TAG.fullmatch(value.strip())
            if match:
                hours, minutes, seconds = match.groups()
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


class FrameFolderReader:
    """Reader of a folder of pre-extracted frames (Hara-style ``image_00001.jpg`` ...).

    Images are decoded with PyAV's image demuxer, so no extra imaging library is needed.
    """

    def __init__(self, path: str | Path, short_side: int | None = None, fps: float = 25.0) -> None:
        self.path = Path(path)
        self._files = list_frame_files(self.path)
        if not self._files:
            raise DecodeError("frame folder holds no img_*.jpg / *.jpg / *.png files")
        first = self._decode_image(self._files[0], None)
        height, width = first.shape[:2]
        self.out_width, self.out_height = scaled_size(width, height, short_side)
        self.info = VideoInfo(len(self._files), fps, width, height)

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _decode_image(self, path: Path, size: tuple[int, int] | None) -> np.ndarray:
        try:
            with av.open(str(path)) as container:
                frame = next(container.decode(video=0))
                if size is None:
                    return frame.to_ndarray(format="rgb24")
                return frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
        except (av.FFmpegError, OSError, StopIteration, ValueError) as error:
            raise DecodeError(f"cannot decode frame {path.name}: {error}") from error

    def read_all(self, max_frames: int | None = None) -> np.ndarray:
        """Every frame, in order, as uint8 (N, H, W, 3) (``data.cache``); at most
        ``max_frames + 1`` of them."""
        size = (self.out_width, self.out_height)
        files = self._files if max_frames is None else self._files[: max_frames + 1]
        return np.stack([self._decode_image(path, size) for path in files])

    def read(self, start: int, num_frames: int, stride: int = 1) -> np.ndarray:
        size = (self.out_width, self.out_height)
        indices = range(start, min(start + num_frames * stride, len(self._files)), stride)
        frames = [self._decode_image(self._files[i], size) for i in indices]
        return _loop_pad(frames, num_frames)


def open_clip_reader(path: str | Path, short_side: int | None = None, threads: int = 1) -> ClipReader:
    """A reader for a video file or a frame folder."""
    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path, short_side)
    if not path.exists():
        raise DecodeError("file not found")
    return VideoReader(path, short_side, threads)
