"""Output paths proven writable before any work starts (a long job never dies at its last step)."""

from __future__ import annotations

import os
from pathlib import Path

from vidkd.errors import VidkdError


def _probe(directory: Path) -> str | None:
    """None when a file can be created in ``directory``, else the reason."""
    probe = directory / f".vidkd-write-test-{os.getpid()}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def writable_dir(path: str | Path, option: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it."""
    directory = Path(path).expanduser()
    if directory.exists() and not directory.is_dir():
        raise VidkdError(f"{option} {directory} is a file, not a directory; pass a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VidkdError(
            f"{option} {directory} cannot be created ({error.strerror}); pass a writable directory"
        ) from None
    problem = _probe(directory)
    if problem:
        raise VidkdError(f"{option} {directory} is not writable ({problem}); pass a writable directory")
    return directory


def writable_file(path: str | Path, option: str) -> Path:
    """Prove ``path`` can be written (its folder is created if needed); nothing is left behind."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise VidkdError(f"{option} {file} is a directory; pass a file name, e.g. {file / 'out'}")
    parent = file.parent
    if parent.exists() and not parent.is_dir():
        raise VidkdError(f"{option} {file}: {parent} is a file, not a directory; pass another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VidkdError(
            f"{option} {file}: its folder cannot be created ({error.strerror}); pass a writable path"
        ) from None
    problem = _probe(parent)
    if problem is None and file.exists() and not os.access(file, os.W_OK):
        problem = "the file is read-only"
    if problem:
        raise VidkdError(f"{option} {file} is not writable ({problem}); pass a writable path")
    return file
