"""``vidkd prepare``: transcode a dataset once so that training decodes small frames.

The tree under ``src`` is mirrored under ``dst``:

- every video file becomes ``<same relative path>.mp4`` (the indexes resolve a list entry
  ``x.avi`` to ``x.mp4`` by stem): H.264 (``libx264``, yuv420p, CRF 18, preset veryfast;
  ``mpeg4`` where PyAV has no libx264), shorter side ``short_side`` (aspect kept, even
  sizes), the source frame rate, every source frame, no audio. A key frame every
  ``gop`` frames (16 by default) keeps the loader's seek cost to under ``gop`` extra
  decoded frames per clip;
- a frame folder (``img_00001.jpg`` ...) stays a frame folder with the same file names,
  each image scaled to ``short_side`` (JPEG quality ~2 of 31; PNG stays PNG), so frame
  list annotations (start/end frame numbers) stay valid;
- ``.txt``/``.csv``/``.json``/``.yaml`` files (split lists, annotations, label lists) are
  copied (as ``rsync --update``: a copy newer than its source is kept); other files are
  ignored.

An existing file or folder at an output's path is replaced only when this module wrote it
(a video carrying its metadata tag, a frame folder holding only the source's frame names);
anything else there is reported as a failure and left as it is.

Each output (video, frame folder or copied file) is written under a temporary name
(``<name>.<pid>.partial``, which no index or check picks up) and moved into place with
:func:`os.replace` after it has been verified, so an output exists only when complete.
A run that was killed leaves ``*.partial`` names behind; the next run removes them first
(those of a process that is still running are left alone), and worker processes exit
when the main process dies (see :func:`vidkd.data.check.map_videos`). A video is verified
when it opens, its
frames decode, it holds the source's decoded frame count (within 1 frame or 1 %) and its
shorter side is ``short_side``. A finished output records the encoding settings in its
metadata; a second run skips an output that carries the same settings, is newer than its
source and decodes completely at ``short_side`` (resume; a changed setting re-encodes).
A source that ``vidkd check`` would flag (cannot open, no video stream, decode error,
truncated) gets no output; it is reported with its problem, never fatal.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from vidkd.data.check import (
    _error_text,
    check_frame_folder,
    check_video_file,
    check_workers,
    find_videos,
    frame_shortfall,
    map_videos,
)
from vidkd.data.decode import list_frame_files, scaled_size
from vidkd.data.index.walk import VisitedDirs
from vidkd.data.synthetic import video_codec
from vidkd.errors import VidkdError
from vidkd.files import atomic_write_text, escape_path

log = logging.getLogger("vidkd")

COPIED_SUFFIXES = (".txt", ".csv", ".json", ".yaml", ".yml")
TAG = "vidkd-prepare"
_PARTIAL = re.compile(r"\.(\d+)\.partial$")  # what _partial_name appends
CODECS = ("libx264", "mpeg4")  # the encoders this module sets quality options for


@dataclass(frozen=True)
class EncodeSettings:
    """How outputs are encoded; all of it is recorded in each output's metadata."""

    short_side: int = 128
    codec: str = "libx264"
    crf: int = 18
    gop: int = 16

    def tag(self) -> str:
        return f"{TAG} short_side={self.short_side} codec={self.codec} crf={self.crf} gop={self.gop}"


@dataclass(frozen=True)
class PrepareResult:
    """One video: ``status`` is ``transcoded``, ``skipped`` (resume) or ``failed``."""

    source: str
    output: str
    status: str
    frames: int = 0
    problem: str = ""


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did; ``failed`` maps source path -> problem."""

    src: Path
    dst: Path
    transcoded: int = 0
    skipped: int = 0
    copied: int = 0
    frames: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def write(self, path: Path) -> None:
        """TSV: comment lines with the counts, then ``source<TAB>problem`` per failed video."""
        lines = [
            f"# vidkd prepare {self.src} -> {self.dst}: {self.transcoded} transcoded, "
            f"{self.skipped} already done, {len(self.failed)} failed, {self.copied} files copied",
            "# source\tproblem",
        ]
        lines += [f"{escape_path(source)}\t{problem}" for source, problem in self.failed.items()]
        atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- one video


class _SourceProblem(Exception):
    """The source is unreadable; the message is the problem, as ``vidkd check`` words it."""


def _partial_name(output: Path) -> Path:
    return output.with_name(f"{output.name}.{os.getpid()}.partial")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # someone else's process, or unknowable
        return True
    return True


def remove_leftovers(dst: Path) -> list[Path]:
    """Remove the ``<name>.<pid>.partial`` files and folders a killed run left under ``dst``.

    Only names this module makes are touched, links are not followed, and the partial
    outputs of a process that is still running are kept. Returns what was removed.
    """
    removed = []
    for directory, subdirs, files in os.walk(dst):
        for name in [*subdirs, *files]:
            match = _PARTIAL.search(name)
            if match and not _process_alive(int(match.group(1))):
                path = Path(directory) / name
                _remove(path)
                removed.append(path)
        subdirs[:] = [name for name in subdirs if not _PARTIAL.search(name)]
    return removed


def _frames_match(decoded: int, expected: int) -> bool:
    return abs(decoded - expected) <= max(1, expected // 100)


def _verify_video(path: Path, short_side: int, expected_frames: int | None) -> tuple[int, str]:
    """``(frames decoded, problem)`` of an output; ``problem`` is empty when it is good.

    ``expected_frames`` None (resume): the count is checked against the output's own
    container instead (:func:`check_video_file` flags a shortfall).
    """
    result = check_video_file(path)
    if result.problem:
        return result.frames, result.problem
    if min(result.width, result.height) != short_side:
        return result.frames, f"is {result.width}x{result.height}, shorter side not {short_side}"
    if expected_frames is not None and not _frames_match(result.frames, expected_frames):
        return result.frames, f"decodes to {result.frames} frames, the source to {expected_frames}"
    return result.frames, ""


def _stored_tag(path: Path) -> str:
    """The settings tag in ``path``'s metadata (:meth:`EncodeSettings.tag`); "" for a file this
    module did not write, or cannot read (not finished, or damaged)."""
    try:
        with av.open(str(path)) as container:
            tag = container.metadata.get("comment", "")
    except Exception:
        return ""
    return tag if tag.startswith(TAG) else ""


def _not_ours(output: Path) -> str:
    return (f"output {output} exists and was not written by vidkd prepare (or is damaged): "
            "delete or move it to prepare this source, or choose another destination")


def _encode_video(source: Path, partial: Path, settings: EncodeSettings) -> int:
    """Transcode ``source`` into ``partial``; the number of frames written."""
    try:
        inp = av.open(str(source))
    except Exception as error:
        raise _SourceProblem(f"cannot open: {_error_text(error)}") from None
    with inp:
        if not inp.streams.video:
            raise _SourceProblem("no video stream")
        stream = inp.streams.video[0]
        stream.codec_context.thread_count = 1  # parallelism is across videos
        claimed = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(100_000)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise _SourceProblem("video stream has no frame size")
        out_w, out_h = scaled_size(width, height, settings.short_side)
        written = 0
        with av.open(str(partial), mode="w", format="mp4") as out:
            out.metadata["comment"] = settings.tag()
            encoder = out.add_stream(settings.codec, rate=rate)
            encoder.width, encoder.height = out_w, out_h
            encoder.pix_fmt = "yuv420p"
            encoder.codec_context.gop_size = settings.gop
            encoder.codec_context.thread_count = 1
            if settings.codec == "libx264":
                encoder.options = {"crf": str(settings.crf), "preset": "veryfast"}
            else:  # mpeg4: a fixed quantiser of about the same quality
                encoder.codec_context.bit_rate = 0
                encoder.options = {"qscale": "3"}
            try:
                for frame in inp.decode(stream):
                    scaled = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                    scaled.pts, scaled.time_base = written, 1 / rate
                    out.mux(encoder.encode(scaled))
                    written += 1
            except (av.FFmpegError, MemoryError, ValueError) as error:
                raise _SourceProblem(
                    f"decode error after {written} frames: {_error_text(error)}"
                ) from None
            if not written:
                raise _SourceProblem("no frame decoded")
            shortfall = frame_shortfall(written, claimed)
            if shortfall:
                raise _SourceProblem(shortfall)
            out.mux(encoder.encode())
    return written


def prepare_video(job: tuple[str, str, EncodeSettings]) -> PrepareResult:
    """Transcode one video file (or skip it when its output is finished); never raises."""
    source_name, output_name, settings = job
    source, output = Path(source_name), Path(output_name)
    if output.exists() or output.is_symlink():
        tag = _stored_tag(output)
        if not tag:  # another file there: never replaced
            return PrepareResult(source_name, output_name, "failed", problem=_not_ours(output))
        if tag == settings.tag() and output.stat().st_mtime >= source.stat().st_mtime:
            frames, problem = _verify_video(output, settings.short_side, None)
            if not problem:
                return PrepareResult(source_name, output_name, "skipped", frames)
    partial = _partial_name(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        frames = _encode_video(source, partial, settings)
        _, problem = _verify_video(partial, settings.short_side, frames)
        if problem:
            return PrepareResult(source_name, output_name, "failed", frames, f"output: {problem}")
        os.replace(partial, output)
        return PrepareResult(source_name, output_name, "transcoded", frames)
    except _SourceProblem as problem:
        return PrepareResult(source_name, output_name, "failed", problem=str(problem))
    except Exception as error:  # one bad video never stops the run
        return PrepareResult(source_name, output_name, "failed", problem=_error_text(error))
    finally:
        _remove(partial)


def _scale_image(source: Path, target: Path, short_side: int) -> None:
    with av.open(str(source)) as inp:
        frame = next(inp.decode(video=0))
    width, height = scaled_size(frame.width, frame.height, short_side)
    png = source.suffix.lower() == ".png"
    codec, pix_fmt = ("png", "rgb24") if png else ("mjpeg", "yuvj420p")
    with av.open(str(target), mode="w", format="image2") as out:
        encoder = out.add_stream(codec, rate=1)
        encoder.width, encoder.height, encoder.pix_fmt = width, height, pix_fmt
        if not png:
            encoder.codec_context.qmin = encoder.codec_context.qmax = 2
        for packet in encoder.encode(frame.reformat(width=width, height=height, format=pix_fmt)):
            out.mux(packet)
        for packet in encoder.encode():
            out.mux(packet)


def _holds_only(folder: Path, names: set[str]) -> bool:
    """Whether ``folder`` is a real directory whose entries all have one of ``names`` (the
    frame names of its source): an earlier output of this module, safe to replace."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        return all(entry.name in names and entry.is_file(follow_symlinks=False)
                   for entry in os.scandir(folder))
    except OSError:
        return False


def prepare_frame_folder(job: tuple[str, str, EncodeSettings]) -> PrepareResult:
    """Scale every image of a frame folder to ``short_side``, same names; never raises."""
    source_name, output_name, settings = job
    source, output = Path(source_name), Path(output_name)
    files = list_frame_files(source)
    if output.is_dir():
        done = check_frame_folder(output)
        if (not done.problem and done.frames == len(files) and files
                and min(done.width, done.height) == settings.short_side):
            return PrepareResult(source_name, output_name, "skipped", done.frames)
    if output.exists() or output.is_symlink():
        if not _holds_only(output, {file.name for file in files}):
            return PrepareResult(source_name, output_name, "failed", problem=_not_ours(output))
    checked = check_frame_folder(source)
    if checked.problem:
        return PrepareResult(source_name, output_name, "failed", problem=checked.problem)
    partial = _partial_name(output)
    try:
        _remove(partial)
        partial.mkdir(parents=True)
        for file in files:
            _scale_image(file, partial / file.name, settings.short_side)
        done = check_frame_folder(partial)
        if done.problem or done.frames != len(files):
            problem = done.problem or f"{done.frames} of {len(files)} frames written"
            return PrepareResult(source_name, output_name, "failed", problem=f"output: {problem}")
        _remove(output)
        os.replace(partial, output)
        return PrepareResult(source_name, output_name, "transcoded", len(files))
    except Exception as error:
        return PrepareResult(source_name, output_name, "failed", problem=_error_text(error))
    finally:
        _remove(partial)


def _prepare_one(job: tuple[str, str, EncodeSettings]) -> PrepareResult:
    if Path(job[0]).is_dir():
        return prepare_frame_folder(job)
    return prepare_video(job)


def _crashed(job: tuple[str, str, EncodeSettings]) -> PrepareResult:
    return PrepareResult(job[0], job[1], "failed", problem="the decoder crashed on this file")


# --------------------------------------------------------------------------- dataset


def _copy_annotations(src: Path, dst: Path) -> int:
    """Copy split lists and annotation files that are missing or changed; how many.

    As ``rsync --update``: a copy already there with the source's size and time is current,
    and one newer than the source (edited by hand) is kept and named in one warning.
    """
    copied = 0
    kept: list[str] = []
    visited = VisitedDirs(src)  # links are followed, each real directory once
    for directory, subdirs, files in os.walk(src, followlinks=True):
        subdirs[:] = sorted(
            name for name in subdirs
            if not name.startswith(".") and not name.endswith(".partial")
            and visited.enter(Path(directory) / name)
        )
        for name in files:
            if not name.lower().endswith(COPIED_SUFFIXES):
                continue
            source = Path(directory) / name
            target = dst / source.relative_to(src)
            try:
                stat = source.stat()
            except OSError:  # a link that cannot be followed
                continue
            if target.exists() or target.is_symlink():
                if not target.is_file():  # a folder, or a link that leads nowhere
                    kept.append(str(target))
                    continue
                current = target.stat()
                if current.st_size == stat.st_size and current.st_mtime_ns == stat.st_mtime_ns:
                    continue
                if current.st_mtime_ns > stat.st_mtime_ns:  # edited by hand since the copy
                    kept.append(str(target))
                    continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = _partial_name(target)
            try:
                shutil.copy2(source, partial)
                os.replace(partial, target)
            finally:
                _remove(partial)
            copied += 1
    if kept:
        log.warning(
            "%s: kept %d file(s) newer than their source, or not files (%s); delete them to "
            "copy the source's", dst, len(kept), ", ".join(kept[:3]) + (" ..." if len(kept) > 3 else ""),
        )
    return copied


def _check_codec(codec: str) -> None:
    """Refuse, once and up front, an encoder that PyAV does not have."""
    try:
        ok = av.codec.Codec(codec, "w").type == "video"
    except Exception:  # UnknownCodecError (a ValueError), or anything odd in the name
        ok = False
    if not ok:
        available = []
        for name in CODECS:
            try:
                av.codec.Codec(name, "w")
                available.append(name)
            except Exception:
                continue
        raise VidkdError(
            f"--codec {codec}: this PyAV build has no video encoder of that name; "
            f"use {' or '.join(available) or 'a build of PyAV with libx264 or mpeg4'}"
        )


def prepare_dataset(
    src: Path,
    dst: Path,
    short_side: int = 128,
    workers: int | None = None,
    progress: bool = True,
    codec: str | None = None,
    crf: int = 18,
    gop: int = 16,
) -> PrepareReport:
    """Mirror ``src`` under ``dst`` with every video re-encoded at ``short_side`` (see module).

    ``workers`` processes (default: all cores) share the videos; ``codec`` defaults to
    ``libx264`` (``mpeg4`` where PyAV lacks it). Unreadable sources are listed in
    ``report.failed``; a second call skips the finished outputs.
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_dir():
        raise VidkdError(f"source directory {src} does not exist: pass the dataset's video root")
    if short_side < 2 or short_side % 2:
        raise VidkdError(f"--short-side must be an even number >= 2 (yuv420p), got {short_side}")
    if gop < 1:
        raise VidkdError(f"--gop must be at least 1, got {gop}")
    check_workers(workers)
    codec = codec or video_codec()
    _check_codec(codec)
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real or dst_real.is_relative_to(src_real):
        raise VidkdError(f"destination {dst} is inside the source {src}: choose a folder outside it")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VidkdError(f"cannot create {dst} ({error.strerror}): pass a writable folder") from None
    settings = EncodeSettings(short_side, codec, crf, gop)
    started = time.perf_counter()
    report = PrepareReport(src, dst)
    leftovers = remove_leftovers(dst)
    if leftovers:
        log.warning(
            "%s: removed %d unfinished output(s) of an earlier, interrupted run (%s)",
            dst, len(leftovers), ", ".join(str(path.relative_to(dst)) for path in leftovers[:3])
            + (" ..." if len(leftovers) > 3 else ""),
        )
    report.copied = _copy_annotations(src, dst)

    jobs: list[tuple[str, str, EncodeSettings]] = []
    owners: dict[Path, Path] = {}
    for path in find_videos(src):
        relative = path.relative_to(src)
        output = dst / (relative if path.is_dir() else relative.with_suffix(".mp4"))
        if output in owners:  # x.avi and x.mp4 side by side: both would become x.mp4
            report.failed[str(path)] = f"same output {output} as {owners[output]}; rename one"
            continue
        owners[output] = path
        jobs.append((str(path), str(output), settings))
    if not jobs:
        raise VidkdError(f"no videos under {src}: expected .mp4/.avi/... files or frame folders")

    for _, result in map_videos(
        _prepare_one, jobs, workers, on_crash=_crashed, progress=progress, description="prepare"
    ):
        if result.status == "failed":
            report.failed[result.source] = result.problem
            continue
        report.frames += result.frames
        if result.status == "skipped":
            report.skipped += 1
        else:
            report.transcoded += 1
    report.failed = dict(sorted(report.failed.items()))
    report.seconds = time.perf_counter() - started
    return report
