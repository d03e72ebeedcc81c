"""``data.cache: memory``: decode every video once, keep its frames in RAM, cut clips from them.

A dataset that fits in memory (the embedded demo set, a small user set) then costs one decode
pass instead of one per epoch. Clips are cut exactly as from files: the same reader
interface (:class:`~vidkd.data.decode.ClipReader`), the same frame count from the container
(which drives temporal sampling), the same short-side scaling, loop padding and fallback to
frame 0 when the container over-counts its frames. A video that fails to decode is not
cached; it is read (and fails, and is counted) from its file as before.

The cache is filled in the main process before the loader's workers start, so forked
workers share its pages. ``data.cache_budget_mb`` bounds it: a dataset that does not fit
stops with one line naming the budget, before training starts.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidkd.data.decode import (
    ClipReader,
    DecodeError,
    VideoInfo,
    _loop_pad,
    open_clip_reader,
    scaled_size,
)
from vidkd.errors import VidkdError

log = logging.getLogger("vidkd")


class MemoryReader:
    """A :class:`ClipReader` over frames already decoded (uint8, (N, H, W, 3))."""

    def __init__(self, frames: np.ndarray, info: VideoInfo) -> None:
        self.frames = frames
        self.info = info

    def __enter__(self) -> MemoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, start: int, num_frames: int, stride: int = 1) -> np.ndarray:
        """Frames ``start, start+stride, ...``, loop-padded, as :meth:`VideoReader.read`."""
        stop = min(start + num_frames * stride, len(self.frames))
        frames = list(self.frames[start:stop:stride])
        if not frames and start > 0:  # the container over-counted: read from frame 0
            frames = list(self.frames[0 : min(num_frames * stride, len(self.frames)) : stride])
        return _loop_pad(frames, num_frames)


class MemoryCache:
    """Decoded videos by path, within a byte budget; ``open`` is a drop-in ``open_clip_reader``."""

    def __init__(self, short_side: int, budget_mb: int) -> None:
        self.short_side = short_side
        self.budget = budget_mb * 2**20
        self.used = 0
        self.videos: dict[str, tuple[np.ndarray, VideoInfo]] = {}

    def fill(self, paths: Iterable[str | Path], progress: bool = True, threads: int = 1) -> None:
        """Decode every video of ``paths`` once (unreadable ones are left to the file path).

        ``threads`` decoders run at once (PyAV releases the GIL while it decodes and scales);
        videos are added in the order of ``paths``. A video stops decoding once it alone
        would take more than the budget left when it started, so one long video cannot
        exhaust memory; the budget is checked as each video is added, so while filling,
        memory can pass it by the ``threads`` videos decoded ahead.
        """
        paths = [str(p) for p in dict.fromkeys(str(p) for p in paths) if str(p) not in self.videos]
        with closing(self._decode_in_order(paths, max(1, threads))) as decoded:
            for path, result in tqdm(decoded, total=len(paths), desc="caching videos in memory",
                                     disable=not progress, leave=False):
                if result is not None:
                    self._add(path, *result, total=len(paths))
        log.info("cached %d videos in memory (%.0f MiB)", len(self.videos), self.used / 2**20)

    def _decode(self, path: str) -> tuple[np.ndarray, VideoInfo] | None:
        try:
            with open_clip_reader(path, self.short_side) as reader:
                width, height = scaled_size(reader.info.width, reader.info.height, self.short_side)
                frame_bytes = width * height * 3
                left = max(self.budget - self.used, 0)
                return reader.read_all(max_frames=left // frame_bytes), reader.info
        except DecodeError:
            return None

    def _decode_in_order(
        self, paths: list[str], threads: int
    ) -> Iterator[tuple[str, tuple[np.ndarray, VideoInfo] | None]]:
        """``(path, decoded or None)`` in the order of ``paths``, ``threads`` videos ahead;
        closing it cancels the decodes not yet started and waits for the running ones."""
        pool = ThreadPoolExecutor(threads)
        window: deque[tuple[str, Future]] = deque()
        try:
            for path in paths:
                window.append((path, pool.submit(self._decode, path)))
                if len(window) > threads:
                    done, future = window.popleft()
                    yield done, future.result()
            while window:
                done, future = window.popleft()
                yield done, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _add(self, path: str, frames: np.ndarray, info: VideoInfo, total: int) -> None:
        self.used += frames.nbytes
        if self.used > self.budget:
            raise VidkdError(
                f"data.cache=memory: the videos do not fit in data.cache_budget_mb="
                f"{self.budget // 2**20} (the first {len(self.videos) + 1} of {total} "
                f"already take {self.used / 2**20:.0f} MiB at short side {self.short_side}); "
                "raise the budget, lower data.short_side, or set data.cache=none"
            )
        self.videos[path] = (frames, info)

    def open(self, path: str | Path, short_side: int | None = None) -> ClipReader:
        cached = self.videos.get(str(path))
        if cached is None or short_side != self.short_side:
            return open_clip_reader(path, short_side)
        return MemoryReader(*cached)
