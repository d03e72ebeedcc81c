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
import re
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from vidkd.errors import VidkdError

#: the largest config, list or annotation file read (Kinetics-400's train.csv is 18 MiB)
MAX_TEXT_BYTES = 512 << 20


def read_text(path: str | Path, what: str = "file", fix: str = "") -> str:
    """The text of ``path`` (UTF-8, byte-order mark stripped, newlines as written).

    A missing file, a directory, an unreadable file or bytes that are not UTF-8 raise
    :class:`VidkdError`; ``what`` names the file's role, ``fix`` is appended to the
    not-found message.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise VidkdError(f"{what} {path} not found" + (f": {fix}" if fix else "")) from None
    except IsADirectoryError:
        raise VidkdError(f"{what} {path} is a directory: pass the file itself") from None
    except OSError as error:
        raise VidkdError(f"cannot read {what} {path} ({error.strerror or error}): check it") from None
    except (ValueError, UnicodeError):  # a NUL character or a lone surrogate in the path
        raise VidkdError(f"{what} {str(path)!r} is not a possible file name: fix the path") from None
    if len(data) > MAX_TEXT_BYTES:  # /dev/zero, a video passed by mistake
        raise VidkdError(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 20} MiB: it is not a "
                         "config or a list; pass the text file itself")
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


def read_json_lines(path: str | Path) -> tuple[list[dict], int]:
    """The JSON objects of a ``.jsonl`` file, and how many non-empty lines were not one (a
    line cut short by a kill, or damaged by hand)."""
    records, damaged = [], 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged += 1
    return records, damaged


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_ESCAPED = re.compile(r"\\(x[0-9a-fA-F]{2}|[\\tnr])")


def escape_path(name: str) -> str:
    r"""``name`` as one UTF-8 field of a report line: a backslash, tab, newline and carriage
    return are written ``\\``, ``\t``, ``\n``, ``\r``, and a byte that is not UTF-8 (a
    surrogate escape of :func:`os.fsdecode`) ``\xNN``. :func:`unescape_path` reverses it."""
    parts = []
    for char in name:
        if char in _ESCAPES:
            parts.append(_ESCAPES[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:
            parts.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            parts.append(char)
    return "".join(parts)


def unescape_path(text: str) -> str:
    """The path that :func:`escape_path` wrote as ``text``."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x":
            value = int(code[1:], 16)
            return chr(0xDC00 + value if value >= 0x80 else value)
        return _UNESCAPES[code]

    return _ESCAPED.sub(one, text)


def is_special(path: str | Path) -> bool:
    """Whether ``path`` names something that exists and is neither a regular file nor a
    directory (``/dev/null``, ``/dev/stdout``, a FIFO): written in place, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def nearest_existing(path: Path) -> Path:
    """``path`` or the closest folder above it that exists (where its missing folders go)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | Path, option: str) -> Path:
    """Fail now, with one line, if ``path`` could not be written later; returns it (``~``
    expanded).

    An existing file must be writable (it is opened for appending, which changes
    nothing), and so must the folder of the file a symbolic link leads to, where
    :func:`atomic_write_text` puts its temporary file: a probe file is created and removed
    there. For a new file the nearest existing parent must be a directory where a file can
    be created (probed the same way); missing folders below it are created only when the
    output is written (:func:`atomic_write`), so a command that fails first leaves none.
    """
    path = Path(path).expanduser()
    fix = f"pass a writable file path to {option}"
    if path.is_dir():
        raise VidkdError(f"{option} {path} is a directory: {fix}")
    try:
        if is_special(path):
            # a FIFO is not opened now: closing it would end its reader's stream
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                with open(path, "a"):
                    pass
            return path
        target = Path(os.path.realpath(path))
        if target.exists():
            with target.open("a"):
                pass
        parent = nearest_existing(target.parent)
        if not parent.is_dir():
            raise VidkdError(f"{option} {path}: {parent} is not a directory: {fix}")
        handle, probe = tempfile.mkstemp(prefix=".vidkd-probe-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise VidkdError(f"cannot write {option} {path} ({error.strerror or error}): {fix}") from None
    return path


def writable_dir(path: str | Path, option: str, fix: str = "pass a writable directory") -> Path:
    """Create directory ``path`` if needed and prove a file can be created in it."""
    directory = Path(path).expanduser()
    try:
        if directory.exists() and not directory.is_dir():
            raise VidkdError(f"{option} {directory} is a file, not a directory; {fix}")
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".vidkd-probe-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise VidkdError(
            f"{option} {directory} is not writable ({error.strerror or error}); {fix}"
        ) from None
    return directory


def check_output(
    path: str | Path, option: str, previous: Callable[[Path], bool], what: str,
    special: bool = True,
) -> Path:
    """:func:`check_writable`, and refuse to replace an existing file that is neither empty
    (nothing to lose) nor recognised by ``previous`` as an earlier output of the same
    command (``what`` names it). ``special=False`` also refuses ``/dev/null``, a FIFO and
    the like."""
    path = Path(path).expanduser()
    try:
        holds_data = path.is_file() and path.stat().st_size > 0
    except (OSError, ValueError) as error:  # a name too long, a NUL character
        raise VidkdError(f"{option} {str(path)[:80]!r}: not a usable path "
                         f"({getattr(error, 'strerror', None) or error}); pass a shorter plain path") from None
    if holds_data and not previous(path):
        raise VidkdError(
            f"{option} {path} exists and is not {what}, so it is left alone: pass a new path "
            "(or remove that file yourself if it may go)"
        )
    if not special and is_special(path):
        raise VidkdError(f"{option} {path} is not a regular file: pass a file path")
    return check_writable(path, option)


def _head(path: Path, size: int = 4096) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def json_written_by(command: str, before: frozenset[str] = frozenset()) -> Callable[[Path], bool]:
    """``previous`` for :func:`check_output`: a JSON object whose ``written_by`` is
    ``command`` (every vidkd JSON report carries it), or one without ``written_by`` that
    holds all the ``before`` keys (the command's reports from before the stamp)."""

    def previous(path: Path) -> bool:
        if not _head(path, 64).lstrip().startswith(b"{") or path.stat().st_size > 256 * 2**20:
            return False
        try:
            value = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False
        if not isinstance(value, dict):
            return False
        if "written_by" in value:
            return value["written_by"] == command
        return bool(before) and before <= value.keys()

    return previous


def text_starting_with(prefix: str) -> Callable[[Path], bool]:
    """``previous`` for :func:`check_output`: text whose first line starts with ``prefix``
    (the header line of a vidkd report)."""

    def previous(path: Path) -> bool:
        return _head(path).startswith(prefix.encode())

    return previous


def absolute_paths(path: Path) -> bool:
    """``previous`` for :func:`check_output`: a list of absolute paths, one a line, as
    ``vidkd check --skip-list`` wrote it before its lists got a header line."""
    if path.stat().st_size > 16 * 2**20:
        return False
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    entries = [line for line in lines if line.strip()]
    return bool(entries) and all(os.path.isabs(line) and "\t" not in line for line in entries)


def default_file_mode() -> int:
    """The mode ``open`` gives a new file under this process's umask (0o644 under 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # no /proc: read it by setting it, then put it back
    os.umask(umask)
    return 0o666 & ~umask


def temporary_beside(path: Path) -> Path:
    """A new, empty file beside ``path`` (a unique hidden name) to be renamed onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def keep_mode(tmp: Path, path: Path) -> None:
    """Give ``tmp``, about to be renamed onto ``path``, the mode ``path`` has, or the
    umask's default for a new file (some writers, such as safetensors, make 0600 files)."""
    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.is_file() else default_file_mode())


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` beside ``path``, fsync it, then rename it into place (and fsync
    the folder): a crash leaves the old file or the new one. A symbolic link is followed
    (the file it leads to is replaced, the link stays); ``/dev/stdout``, ``/dev/null`` and
    other files that are not regular are written in place."""
    path = Path(path).expanduser()
    if is_special(path):
        write(path)
        return
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)  # an output's new folders, made at last
    tmp = temporary_beside(path)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        keep_mode(tmp, path)  # after writing: a read-only mode would have stopped the write
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of ``text``."""
    atomic_write(path, lambda target: target.write_text(text))


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
