"""Clips per second on one core: our seek-based loader vs decoding the whole video.

    python benchmarks/decode.py --data ../shared/data/ucf101-mini

For every video, one random clip of ``--clip-len`` frames at shorter side ``--short-side``:

- ``ours``: :class:`vidkd.data.decode.VideoReader` (open, seek to the key frame before
  the clip, decode forward, scale only the clip's frames);
- ``whole``: the common PyAV recipe: decode every frame of the video, convert each to
  RGB at the same size, then slice the clip out.

Both run on the original files and on the output of ``vidkd prepare`` (``--prepared-dir``,
created with ``prepare_dataset(..., short_side)`` if it does not hold a finished copy).
The process is pinned to one core, with one decoder thread and one torch thread; clip
positions are the same for both methods. Prints clips/s and the ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from vidkd.data.check import find_videos
from vidkd.data.decode import VideoReader, scaled_size
from vidkd.data.prepare import prepare_dataset


def read_ours(path: Path, start: int, clip_len: int, short_side: int) -> np.ndarray:
    with VideoReader(path, short_side, threads=1) as reader:
        return reader.read(start, clip_len)


def read_whole(path: Path, start: int, clip_len: int, short_side: int) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        width, height = scaled_size(stream.codec_context.width, stream.codec_context.height,
                                    short_side)
        frames = [
            frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
            for frame in container.decode(stream)
        ]
    video = np.stack(frames)
    return video[start : start + clip_len]


def len_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return container.streams.video[0].frames


def clip_starts(paths: list[Path], clips: int, clip_len: int, seed: int) -> list[tuple[Path, int]]:
    """``clips`` (video, first frame) pairs cycling over ``paths``; same for every method."""
    rng = random.Random(seed)
    lengths = {path: len_of(path) for path in paths}
    jobs = []
    for number in range(clips):
        path = paths[number % len(paths)]
        jobs.append((path, rng.randrange(max(lengths[path] - clip_len, 0) + 1)))
    return jobs


def clips_per_second(
    read: Callable[[Path, int, int, int], np.ndarray], jobs: list[tuple[Path, int]],
    clip_len: int, short_side: int, repeats: int,
) -> float:
    """Best of ``repeats`` passes over ``jobs`` (the least disturbed by other processes)."""
    rates = []
    for _ in range(repeats):
        started = time.process_time()
        for path, start in jobs:
            clip = read(path, start, clip_len, short_side)
            assert clip.shape[0] == clip_len and min(clip.shape[1:3]) == short_side, clip.shape
        rates.append(len(jobs) / (time.process_time() - started))
    return max(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucf101-mini", help="folder of videos")
    parser.add_argument("--clips", type=int, default=0, help="clips per method (0: one a video)")
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="passes; the best one counts")
    parser.add_argument("--prepared-dir", help="output of `vidkd prepare` (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = Path(args.data)
    if not data.is_dir():
        print(f"decode.py: {data} does not exist; pass --data", file=sys.stderr)
        return 2
    temp = None
    if args.prepared_dir:
        prepared = Path(args.prepared_dir)
    else:
        temp = tempfile.TemporaryDirectory(prefix="vidkd-prepared-")
        prepared = Path(temp.name)
    started = time.perf_counter()
    report = prepare_dataset(data, prepared, args.short_side, progress=False)
    prepare_seconds = time.perf_counter() - started

    # one core, one decoder thread, one torch thread
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    originals = [path for path in find_videos(data) if path.is_file()]
    results: dict[str, dict[str, float]] = {}
    for name, root in (("original", data), ("prepared", prepared)):
        paths = [path for path in find_videos(root) if path.is_file()]
        jobs = clip_starts(paths, args.clips or len(paths), args.clip_len, args.seed)
        for path, _ in jobs:  # warm the page cache
            path.read_bytes()
        results[name] = {
            method: clips_per_second(read, jobs, args.clip_len, args.short_side, args.repeats)
            for method, read in (("ours", read_ours), ("whole", read_whole))
        }
    frames = [len_of(p) for p in originals]
    print(f"data: {data} ({len(originals)} videos, median {statistics.median(frames):.0f} frames)")
    print(f"prepared: {prepared} ({report.transcoded} transcoded, {report.skipped} reused, "
          f"{len(report.failed)} failed, {prepare_seconds:.1f}s on {os.cpu_count()} cores)")
    print(f"one {args.clip_len}-frame clip per video at short side {args.short_side}, "
          f"clips/s on one core (CPU time, best of {args.repeats})")
    print(f"{'files':10s} {'ours':>8s} {'whole':>8s} {'ours/whole':>11s}")
    for name, row in results.items():
        print(f"{name:10s} {row['ours']:8.1f} {row['whole']:8.1f} "
              f"{row['ours'] / row['whole']:10.2f}x")
    original, prepared_row = results["original"], results["prepared"]
    print(f"ours on prepared / ours on original: "
          f"{prepared_row['ours'] / original['ours']:.2f}x")
    print(f"ours on prepared / whole on original: "
          f"{prepared_row['ours'] / original['whole']:.2f}x")
    if temp is not None:
        temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
