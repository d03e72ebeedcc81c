"""Walking dataset folders: video and frame-folder names, each real directory entered once.

A directory link back to a directory already walked (a symlink loop, or an alias) and a
link that cannot be resolved (``ELOOP``) are skipped and named in one warning;
``*.partial`` names (unfinished ``vidkd prepare`` outputs) and hidden names are never videos.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from vidkd.errors import VidkdError

logger = logging.getLogger("vidkd")

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")
# Suffixes recognised as a video extension in list entries (``a.b_c`` has no extension).
_KNOWN_VIDEO_SUFFIXES = frozenset(
    VIDEO_EXTENSIONS + (".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts")
)
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
# tried in order, case-insensitively: a TSN-style folder also holds flow_x_*.jpg, not frames
FRAME_PATTERNS = ("img_*.jpg", "image_*.jpg", "*.jpg", "*.jpeg", "*.png")
_DIGITS = re.compile(r"(\d+)")
PARTIAL_SUFFIX = ".partial"  # an output ``vidkd prepare`` has not finished


def _video_suffix(name: str) -> str:
    """The lower-cased video extension of ``name`` (``".avi"``), or ``""`` if it has none."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in _KNOWN_VIDEO_SUFFIXES else ""


def _is_partial(name: str) -> bool:
    """Whether ``name`` is an unfinished ``vidkd prepare`` output (never a video)."""
    return name.endswith(PARTIAL_SUFFIX)


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    """``entry.is_dir()``, False for a link that cannot be resolved (a loop: ELOOP)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _entry_is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def is_hidden(name: str) -> bool:
    """Hidden names (``.git``, macOS ``._x.mp4`` resource forks) and ``__MACOSX`` zip debris:
    never a class, a video or a frame."""
    return name.startswith(".") or name == "__MACOSX"


def _is_frame_folder(path: Path) -> bool:
    """Whether ``path`` is a directory of image frames: at least one image, no video file and
    no subdirectory (hidden names aside). A class folder that holds a cover image beside its
    videos, or beside its frame folders, is not a frame folder."""
    images = False
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if is_hidden(entry.name) or _is_partial(entry.name):
                    continue
                if _entry_is_dir(entry) or _video_suffix(entry.name):
                    return False
                images = images or (entry.name.lower().endswith(FRAME_EXTENSIONS)
                                    and _entry_is_file(entry))
    except OSError:
        return False
    return images


class VisitedDirs:
    """The real directories a walk has entered, by ``(st_dev, st_ino)``: each is entered once.

    :meth:`enter` refuses a directory already entered under another name (a symlink
    loop back to an ancestor, or an alias of a sibling) and a link that cannot be
    resolved (``ELOOP``); :meth:`warn` names them in one warning.
    """

    def __init__(self, root: Path) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.skipped: list[str] = []
        self.enter(root)

    def enter(self, path: str | Path) -> bool:
        """Whether ``path`` is a directory not entered before (it is now marked entered)."""
        try:
            stat = os.stat(path)
        except OSError as error:
            self.skipped.append(f"{path} ({error.strerror or error})")
            return False
        key = (stat.st_dev, stat.st_ino)
        if key in self.seen:
            self.skipped.append(f"{path} -> {os.path.realpath(path)}")
            return False
        self.seen.add(key)
        return True

    def warn(self, source: str) -> None:
        """One warning naming the skipped links (at most five), if any."""
        if self.skipped:
            shown = "; ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            logger.warning(
                "%s: skipped %d symlink(s) that lead back to a directory already walked "
                "(a symlink loop) or cannot be resolved: %s; each real directory is walked once",
                source,
                len(self.skipped),
                shown,
            )


def entry_kind(entry: os.DirEntry[str], visited: VisitedDirs) -> str | None:
    """``"dir"`` (a directory now entered), ``"file"``, or ``None`` (skip it).

    ``None`` for a directory already entered, a link that cannot be resolved (both are
    recorded in ``visited``), other non-files, ``*.partial`` and hidden names (:func:`is_hidden`).
    """
    if _is_partial(entry.name) or is_hidden(entry.name):
        return None
    if _entry_is_dir(entry):
        return "dir" if visited.enter(entry.path) else None
    if _entry_is_file(entry):
        return "file"
    if entry.is_symlink():
        visited.enter(entry.path)  # records why it cannot be followed
    return None


def _list_dir(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``; one that cannot be listed is a VidkdError."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError as error:
        raise VidkdError(
            f"cannot list {directory} ({error.strerror or error}): check its permissions"
        ) from None


def _sorted_dirs_first_real(entries: Iterable[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    """Entries by name, but real directories before links, so a link is the one skipped."""
    return sorted(entries, key=lambda entry: (entry.is_symlink(), entry.name))


def _frame_order(name: str) -> tuple:
    """Sort key: the numbers in a name compared as numbers (``img_2`` before ``img_10``)."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def list_frame_files(directory: Path) -> list[Path]:
    """The image files of a frame folder in frame order (``img_00001.jpg`` ...).

    Names match :data:`FRAME_PATTERNS` case-insensitively (the first pattern that matches any
    file wins); hidden files are not frames. Frame numbers order the files as numbers, so
    ``img_2.jpg`` comes before ``img_10.jpg`` when the numbers are not zero-padded.
    """
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries
                     if not is_hidden(entry.name) and entry.is_file()]
    except OSError:
        return []
    for pattern in FRAME_PATTERNS:
        matched = [name for name in names if fnmatch.fnmatchcase(name.lower(), pattern)]
        if matched:
            return [Path(directory) / name for name in sorted(matched, key=_frame_order)]
    return []
