"""``vidkd check``: decode every video of a dataset and list the unreadable ones.

Each video (file or frame folder) is decoded completely, one process per core. A video
has a problem when it

- cannot be opened (zero bytes, not a video, header cut off: ``cannot open: ...``),
- has no video stream (an audio-only file: ``no video stream``),
- yields no frame (``no frame decoded``),
- raises a decode error part-way (``decode error after N frames: ...``), or
- yields far fewer frames than its container claims (a truncated file whose header
  survived: ``decoded N of M frames the container claims``; fewer than
  :data:`MIN_FRAME_FRACTION` of them).

The report is one TSV file: comment lines (``#``) with the counts, then one line
``path<TAB>problem`` per unreadable video. The path is absolute (the dataset index's
``record.path`` made absolute against the working directory of ``vidkd check``), so the
report *is* a skip list, usable from any directory: ``--set data.skip_list=REPORT``
(see :func:`vidkd.data.build.read_skip_list`, which compares resolved paths).

:func:`map_videos` (process pool, bounded in-flight window, a crashed worker's jobs are
retried one per process) is shared with :mod:`vidkd.data.prepare`.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import av

from vidkd.config import DataConfig
from vidkd.data.decode import list_frame_files
from vidkd.data.index.walk import (
    FRAME_EXTENSIONS,
    VisitedDirs,
    _is_frame_folder,
    _sorted_dirs_first_real,
    _video_suffix,
    entry_kind,
)
from vidkd.errors import VidkdError
from vidkd.files import atomic_write_text, escape_path

log = logging.getLogger("vidkd")

MIN_FRAME_FRACTION = 0.9  # fewer decoded frames than this share of the claimed count: truncated
_FRAME_SLACK = 2  # ... and more than this many missing (containers round their counts)

J = TypeVar("J")
R = TypeVar("R")


# --------------------------------------------------------------------------- one video


@dataclass(frozen=True)
class VideoCheck:
    """What decoding one video completely found; ``problem`` is ``None`` when readable."""

    path: str
    frames: int = 0  # frames decoded
    claimed: int = 0  # frames the container announces (0: unknown)
    width: int = 0
    height: int = 0
    problem: str | None = None


def _claimed_frames(stream: av.video.stream.VideoStream) -> int:
    """The frame count the container announces, else one derived from the stream duration."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return int(math.floor(float(stream.duration * stream.time_base) * float(rate)))
    return 0  # unknown: the count cannot be checked


def frame_shortfall(decoded: int, claimed: int) -> str | None:
    """The problem of a video that decodes to far fewer frames than claimed, else None."""
    if claimed and decoded < MIN_FRAME_FRACTION * claimed and claimed - decoded > _FRAME_SLACK:
        return f"decoded {decoded} of {claimed} frames the container claims (truncated?)"
    return None


def _error_text(error: BaseException) -> str:
    """One line; FFmpeg errors without the ``[Errno N]`` and file name they repeat."""
    text = getattr(error, "strerror", None) if isinstance(error, av.FFmpegError) else None
    return " ".join(str(text or error).split()) or type(error).__name__


def check_video_file(path: str | Path) -> VideoCheck:
    """Decode every frame of a video file; never raises."""
    name = str(path)
    try:
        container = av.open(name)
    except Exception as error:  # any failure to open is the finding
        return VideoCheck(name, problem=f"cannot open: {_error_text(error)}")
    frames, claimed, width, height = 0, 0, 0, 0
    try:
        if not container.streams.video:
            return VideoCheck(name, problem="no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # parallelism is across videos
        claimed = _claimed_frames(stream)
        try:
            for frame in container.decode(stream):
                if not frames:
                    width, height = frame.width, frame.height
                frames += 1
        except Exception as error:  # av.FFmpegError, MemoryError, ...
            return VideoCheck(
                name, frames, claimed, width, height,
                f"decode error after {frames} frames: {_error_text(error)}",
            )
    finally:
        container.close()
    if not frames:
        return VideoCheck(name, 0, claimed, problem="no frame decoded")
    return VideoCheck(name, frames, claimed, width, height, frame_shortfall(frames, claimed))


def _decode_image(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def check_frame_folder(path: str | Path) -> VideoCheck:
    """Decode every image of a frame folder (``img_00001.jpg`` ...); never raises."""
    name = str(path)
    files = list_frame_files(Path(path))
    if not files:
        return VideoCheck(name, problem="frame folder holds no img_*.jpg / *.jpg / *.png files")
    size: tuple[int, int] | None = None
    for count, file in enumerate(files):
        try:
            this = _decode_image(file)
        except Exception as error:
            return VideoCheck(
                name, count, len(files), *(size or (0, 0)),
                f"cannot decode frame {file.name}: {_error_text(error)}",
            )
        if size is None:
            size = this
        elif this != size:
            return VideoCheck(
                name, count, len(files), *size,
                f"frame {file.name} is {this[0]}x{this[1]}, the first {size[0]}x{size[1]}",
            )
    assert size is not None
    return VideoCheck(name, len(files), len(files), *size)


def check_video(path: str | Path) -> VideoCheck:
    """:func:`check_frame_folder` for a directory, else :func:`check_video_file`."""
    if Path(path).is_dir():
        return check_frame_folder(path)
    if not Path(path).exists():
        return VideoCheck(str(path), problem="file not found")
    return check_video_file(path)


# --------------------------------------------------------------------------- many videos


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_POLL_SECONDS = 0.5


def _exit_with_parent(parent: int, parent_is_main_thread: bool) -> None:
    """Pool initializer: end this worker when the process that started it dies.

    Without it, killing the main process (SIGKILL, OOM killer) leaves the workers blocked
    on their task pipe forever. On Linux the kernel sends SIGKILL (``PR_SET_PDEATHSIG``;
    only when the parent's main thread started us, since the signal follows the starting
    thread); everywhere a daemon thread also polls :func:`os.getppid`, which changes when
    the worker is re-parented.
    """
    if sys.platform.startswith("linux") and parent_is_main_thread:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the thread below still works
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    if sys.platform != "win32":  # Windows keeps the dead parent's id: nothing to poll
        threading.Thread(target=watch, name="vidkd-parent-watch", daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn: the caller may hold threads (torch, OpenMP) that fork would copy half-locked
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(), threading.current_thread() is threading.main_thread()),
    )


def check_workers(workers: int | None) -> None:
    """Refuse a worker count below 1 (``None`` means one per core)."""
    if workers is not None and workers < 1:
        raise VidkdError(f"--workers/-j must be at least 1 (or left out for one per core), got {workers}")


def map_videos(
    function: Callable[[J], R],
    jobs: Sequence[J],
    workers: int | None = None,
    on_crash: Callable[[J], R] | None = None,
    progress: bool = True,
    description: str = "videos",
) -> Iterator[tuple[int, R]]:
    """``(index, function(job))`` for every job, in completion order, on ``workers`` processes.

    ``function`` must be a module-level function that does not raise. At most twice as
    many jobs as workers are in flight; if a worker process dies (a decoder crash), the
    pool is restarted and the jobs that were in flight are retried one process each, so
    the job that crashed is found: it yields ``on_crash(job)`` (or raises if not given).
    ``workers`` = 1 runs in this process (no crash protection).
    """
    from tqdm import tqdm

    check_workers(workers)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    bar = tqdm(total=len(jobs), desc=description, unit="video", disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    with bar:
        if workers == 1:
            for index, job in enumerate(jobs):
                result = function(job)
                bar.update()
                yield index, result
            return
        queue = list(range(len(jobs)))[::-1]  # pop() from the end = submission order
        suspects: list[int] = []
        while queue:
            crashed: list[int] = []
            with _pool(workers) as pool:
                running: dict[Future[R], int] = {}
                broken = False
                while (queue and not broken) or running:
                    while queue and not broken and len(running) < 2 * workers:
                        index = queue.pop()
                        running[pool.submit(function, jobs[index])] = index
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True
                            crashed.append(index)
                            continue
                        bar.update()
                        yield index, result
            suspects.extend(crashed)
        succeeded = len(jobs) - len(suspects)
        for index in sorted(suspects):  # one process each: only the culprit crashes again
            try:
                with _pool(1) as pool:
                    result = pool.submit(function, jobs[index]).result()
                succeeded += 1
            except BrokenProcessPool:
                if on_crash is None:
                    raise
                if not succeeded and index == max(suspects):
                    raise BrokenProcessPool(
                        "every worker process died: workers cannot start here "
                        "(run with workers=1 to see why)"
                    ) from None
                result = on_crash(jobs[index])
            bar.update()
            yield index, result


def _crashed(path: str) -> VideoCheck:
    return VideoCheck(path, problem="the decoder crashed on this file")


# --------------------------------------------------------------------------- datasets


def find_videos(root: Path, unlistable: dict[str, str] | None = None) -> list[Path]:
    """Video files (known extensions) and frame folders anywhere under ``root``, sorted.

    A frame folder counts as one video and is not searched further. Paths are
    ``root / relative``, the way the dataset indexes join them. Links are followed, but
    each real directory is entered once: a symlink loop is named in one warning.
    Hidden names and unfinished ``*.partial`` outputs of ``vidkd prepare`` are skipped.
    A folder that cannot be listed is skipped and, when ``unlistable`` is given, recorded
    there (path -> reason).
    """
    found: list[Path] = []
    visited = VisitedDirs(root)
    pending = [Path(root)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = _sorted_dirs_first_real(scan)
        except OSError as error:
            if unlistable is not None:
                unlistable[str(directory)] = f"cannot list folder ({error.strerror or error})"
            continue
        for entry in entries:
            path = directory / entry.name
            kind = entry_kind(entry, visited)
            if kind == "dir":
                if _is_frame_folder(path):
                    found.append(path)
                else:
                    pending.append(path)
            elif kind == "file" and _video_suffix(entry.name):
                found.append(path)
    visited.warn(str(root))
    if not found and _is_frame_folder(root):
        found.append(root)
    return sorted(found)


@dataclass
class CheckReport:
    """Result of :func:`check_paths`: ``problems`` maps path -> problem (in path order),
    ``frames`` counts the frames of the readable videos."""

    checked: int
    problems: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def write(self, path: Path) -> None:
        """The TSV report; its first column makes it a skip list for ``data.skip_list``."""
        lines = [
            f"# vidkd check {self.source}: {self.checked} videos, {len(self.problems)} unreadable",
            "# use as a skip list: --set data.skip_list=" + escape_path(os.path.abspath(path)),
            "# path\tproblem",
        ]
        lines += [f"{escape_path(os.path.abspath(name))}\t{problem}"
                  for name, problem in self.problems.items()]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def write_skip_list(self, path: Path) -> None:
        """A header comment, then only the unreadable paths (absolute), one a line."""
        header = f"# vidkd check {self.source}: the unreadable videos, one a line ({len(self.problems)})\n"
        atomic_write_text(
            path, header + "".join(f"{escape_path(os.path.abspath(name))}\n" for name in self.problems)
        )


def check_paths(
    paths: Sequence[str | Path], workers: int | None = None, progress: bool = True,
    source: str = "",
) -> CheckReport:
    """Decode every path completely (in parallel); the unreadable ones with their problem."""
    started = time.perf_counter()
    names = sorted(dict.fromkeys(str(path) for path in paths))
    results: list[VideoCheck | None] = [None] * len(names)
    for index, result in map_videos(
        check_video, names, workers, on_crash=_crashed, progress=progress, description="check"
    ):
        results[index] = result
    report = CheckReport(len(names), source=source)
    for result in results:
        assert result is not None
        if result.problem:
            report.problems[result.path] = result.problem
        else:
            report.frames += result.frames
    report.seconds = time.perf_counter() - started
    return report


def check_directory(
    root: Path, workers: int | None = None, progress: bool = True
) -> CheckReport:
    """Check every video file and frame folder under ``root`` (any depth), or ``root`` itself
    when it is one video file. A folder that cannot be listed is reported as a problem."""
    root = Path(root)
    if root.is_file():
        return check_paths([root], workers, progress, source=str(root))
    if not root.is_dir():
        raise VidkdError(f"dataset directory {root} does not exist: pass a folder of videos")
    unlistable: dict[str, str] = {}
    paths = find_videos(root, unlistable)
    if not paths and not unlistable:
        raise VidkdError(
            f"no videos under {root}: expected files ending in .mp4/.avi/.mkv/... or frame "
            f"folders of {'/'.join(FRAME_EXTENSIONS)} images"
        )
    report = check_paths(paths, workers, progress, source=str(root))
    report.problems = dict(sorted({**report.problems, **unlistable}.items()))
    return report


def check_config(
    cfg: DataConfig, workers: int | None = None, progress: bool = True
) -> CheckReport:
    """Check every train, test (and val folder) video the config's indexes name (skip list not applied).

    The report's paths are the indexes' ``record.path``, made absolute when written.
    """
    from vidkd.data.build import load_indexes

    indexes = load_indexes(cfg, progress)
    records = [*indexes.train.records, *indexes.test.records]
    if indexes.val is not None:
        records += indexes.val.records
    paths = [record.path for record in records]
    return check_paths(paths, workers, progress, source=f"{cfg.dataset} ({cfg.root})")
