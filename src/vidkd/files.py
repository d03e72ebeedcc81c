"""Reading the user's text files and checking output paths, with one-line errors.

Every list, annotation, skip list and config is read through :func:`read_text`: UTF-8
with an optional byte-order mark (``utf-8-sig``; Windows editors write one), so the
first entry of a list is never silently renamed ``'\\ufeff...'``. A file that is not
UTF-8 is a :class:`~vidkd.errors.VidkdError` naming the file and the byte offset.

Outputs that are written after long work (reports, JSON results) are checked first
with :func:`check_writable`, so a bad path fails before the work, not after it, and with
:func:`check_output`, so that an output path never replaces a file the command did not
write before (the checkpoint, a video, a config, a run's ``results.json``: one typo
away from ``--json``). They are written with :func:`atomic_write_text`: a killed
command leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from vidkd.errors import VidkdError


def read_text(path: str | Path, what: str = "file", fix: str = "") -> str:
    """The text of ``path`` (UTF-8, byte-order mark stripped, newlines as written).

    A missing file, a directory, an unreadable file or bytes that are not UTF-8 raise
    :class:`VidkdError`; ``what`` names the file's role, ``fix`` is appended to the
    not-found message.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VidkdError(f"{what} {path} not found" + (f": {fix}" if fix else "")) from None
    except IsADirectoryError:
        raise VidkdError(f"{what} {path} is a directory: pass the file itself") from None
    except OSError as error:
        raise VidkdError(f"cannot read {what} {path} ({error.strerror or error}): check it") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise VidkdError(
            f"{what} {path} is not UTF-8 text (byte {error.start}: {data[error.start:error.start + 1]!r}): "
            "save it as UTF-8"
        ) from None


def read_lines(path: str | Path, what: str = "file", fix: str = "") -> list[str]:
    """The non-empty, stripped lines of :func:`read_text` (LF, CRLF or CR endings)."""
    text = read_text(path, what, fix).replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip()]


def check_writable(path: str | Path, option: str) -> Path:
    """Fail now, with one line, if ``path`` could not be written later.

    An existing file must be writable (it is opened for appending, which changes
    nothing); otherwise the nearest existing parent must be a directory in which a file
    can be created (a probe file is created and removed there). Missing parent folders
    are created.
    """
    path = Path(path)
    fix = f"pass a writable file path to {option}"
    if path.is_dir():
        raise VidkdError(f"{option} {path} is a directory: {fix}")
    try:
        if path.exists():
            with path.open("a"):
                pass
            return path
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise VidkdError(f"{option} {path}: {parent} is not a directory: {fix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        parent = path.parent
        handle, probe = tempfile.mkstemp(prefix=".vidkd-probe-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise VidkdError(f"cannot write {option} {path} ({error.strerror or error}): {fix}") from None
    return path


def writable_dir(path: str | Path, option: str, fix: str = "pass a writable directory") -> Path:
    """Create directory ``path`` if needed and prove a file can be created in it."""
    directory = Path(path).expanduser()
    if directory.exists() and not directory.is_dir():
        raise VidkdError(f"{option} {directory} is a file, not a directory; {fix}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".vidkd-probe-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise VidkdError(
            f"{option} {directory} is not writable ({error.strerror or error}); {fix}"
        ) from None
    return directory


def check_output(path: str | Path, option: str, previous: Callable[[Path], bool], what: str) -> Path:
    """:func:`check_writable`, and refuse to replace an existing file that ``previous``
    does not recognise as an earlier output of the same command (``what`` names it)."""
    path = Path(path)
    if path.is_file() and not previous(path):
        raise VidkdError(
            f"{option} {path} exists and is not {what}, so it is left alone: pass a new path "
            "(or remove that file yourself if it may go)"
        )
    return check_writable(path, option)


def _head(path: Path, size: int = 4096) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def json_written_by(command: str) -> Callable[[Path], bool]:
    """``previous`` for :func:`check_output`: an empty file, or a JSON object whose
    ``written_by`` is ``command`` (every vidkd JSON output carries it)."""

    def previous(path: Path) -> bool:
        if path.stat().st_size == 0:
            return True
        if not _head(path, 64).lstrip().startswith(b"{") or path.stat().st_size > 256 * 2**20:
            return False
        try:
            value = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(value, dict) and value.get("written_by") == command

    return previous


def text_starting_with(prefix: str) -> Callable[[Path], bool]:
    """``previous`` for :func:`check_output`: an empty file, or text whose first line starts
    with ``prefix`` (the header line of a vidkd report)."""

    def previous(path: Path) -> bool:
        head = _head(path)
        return not head or head.startswith(prefix.encode())

    return previous


def temporary_beside(path: Path) -> Path:
    """A new, empty file beside ``path`` to be renamed onto it: a unique hidden name, the
    mode ``path`` has (or the umask's default for a new file, as ``open`` would give)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        break
    try:
        if path.is_file():
            os.chmod(fd, stat.S_IMODE(path.stat().st_mode))
    finally:
        os.close(fd)
    return tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` under a temporary name beside ``path``, fsync it, then rename it into
    place (and fsync the folder): a crash leaves the old file or the new one. A symbolic
    link is followed: the file it points to is replaced, the link stays."""
    path = Path(os.path.realpath(path))
    tmp = temporary_beside(path)
    try:
        with open(tmp, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
