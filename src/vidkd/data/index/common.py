"""What every index shares: the :class:`_Resolver` of list entries, line parsing, the
final report of missing entries.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidkd.data.index.walk import (
    VIDEO_EXTENSIONS,
    _entry_is_dir,
    _is_partial,
    _video_suffix,
)
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError
from vidkd.files import read_lines

logger = logging.getLogger("vidkd")


_UCF_GROUP = re.compile(r"_(g\d+)_c\d+", re.IGNORECASE)


@dataclass
class _Listing:
    """One directory's entries, listed once: by exact name, lower-cased name and stem."""

    exact: dict[str, bool] = field(default_factory=dict)  # name -> is_dir
    lower: dict[str, str] = field(default_factory=dict)  # lower name -> name
    stems: dict[str, list[str]] = field(default_factory=dict)  # lower stem -> names


class _Resolver:
    """Finds list entries under ``root`` with one directory listing per directory.

    ``extensions`` orders the candidates when a stem matches several files; a frame
    folder named by the stem comes last.
    """

    def __init__(self, root: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> None:
        self.root = root
        self.extensions = tuple(ext.lower() for ext in extensions)
        self._listings: dict[Path, _Listing | None] = {}
        self.stem_matches: Counter[tuple[str, str]] = Counter()  # (list ext, disk ext)

    def _listing(self, directory: Path) -> _Listing | None:
        if directory not in self._listings:
            listing: _Listing | None = _Listing()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if _is_partial(entry.name):
                            continue
                        is_dir = _entry_is_dir(entry)
                        listing.exact[entry.name] = is_dir
                        listing.lower.setdefault(entry.name.lower(), entry.name)
                        if is_dir:
                            stem = entry.name.lower()
                        elif _video_suffix(entry.name) in self.extensions:
                            stem = os.path.splitext(entry.name)[0].lower()
                        else:
                            continue
                        listing.stems.setdefault(stem, []).append(entry.name)
            except (OSError, ValueError):  # ValueError: a NUL character in a list entry
                listing = None
            self._listings[directory] = listing
        return self._listings[directory]

    def _child(self, directory: Path, name: str) -> tuple[str, bool] | None:
        """``(name on disk, is_dir)`` of ``name`` in ``directory``, exact then case-insensitive."""
        listing = self._listing(directory)
        if listing is None:
            return None
        if name in listing.exact:
            return name, listing.exact[name]
        disk_name = listing.lower.get(name.lower())
        if disk_name is not None:
            return disk_name, listing.exact[disk_name]
        return None

    def _rank(self, listing: _Listing, name: str) -> tuple[int, str]:
        if listing.exact[name]:
            return len(self.extensions), name
        return self.extensions.index(_video_suffix(name)), name

    def resolve(self, relative: str) -> Path | None:
        """The path on disk for ``relative`` (``/``-separated), or ``None`` if absent."""
        parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
        if not parts:
            return None
        directory = self.root
        for part in parts[:-1]:
            child = self._child(directory, part)
            if child is None or not child[1]:
                return None
            directory = directory / child[0]
        name = parts[-1]
        child = self._child(directory, name)
        if child is not None:
            return directory / child[0]
        listing = self._listing(directory)
        list_ext = _video_suffix(name)
        stem = (name[: -len(list_ext)] if list_ext else name).lower()
        candidates = listing.stems.get(stem) if listing is not None else None
        if not candidates:
            return None
        disk_name = min(candidates, key=lambda candidate: self._rank(listing, candidate))
        if list_ext:  # a list that names no extension (Kinetics, frame lists) is not a mismatch
            disk_ext = "frame folder" if listing.exact[disk_name] else _video_suffix(disk_name)
            self.stem_matches[(list_ext, disk_ext)] += 1
        return directory / disk_name

    def report(self, source: str) -> None:
        """Log the stem matches of this build, once."""
        if not self.stem_matches:
            return
        kinds = ", ".join(
            f"list says {list_ext}, disk has {disk_ext}"
            for (list_ext, disk_ext), _ in self.stem_matches.most_common()
        )
        logger.warning(
            "%s: resolved %d list entries by file stem under %s (%s)",
            source,
            sum(self.stem_matches.values()),
            self.root,
            kinds,
        )


def _require_dir(video_root: Path) -> Path:
    video_root = Path(video_root)
    if not video_root.is_dir():
        raise VidkdError(f"video directory {video_root} does not exist: check data.root in the config")
    return video_root


def _read_lines(path: Path, fix: str) -> list[str]:
    """Non-empty, stripped lines of ``path`` (CRLF-safe, BOM stripped); errors are VidkdError."""
    return read_lines(path, "annotation file", fix)


def _parse_int(token: str, path: Path, line: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise VidkdError(f"{path}: expected an integer in line {line!r}: fix the file") from None


def _finish(
    source: str,
    resolver: _Resolver,
    records: list[VideoRecord],
    missing: list[str],
    classes: list[str],
    expected: str,
) -> DatasetIndex:
    """Report stem matches and missing entries once; refuse an index with no videos."""
    video_root = resolver.root
    resolver.report(source)
    if not records:
        raise VidkdError(
            f"no videos found under {video_root}: expected {expected}"
            + (f" ({len(missing)} entries of {source}, none on disk)" if missing else "")
            + "; check data.root and the annotations"
        )
    if missing:
        logger.warning(
            "%s: %d of %d entries not found under %s (listed in DatasetIndex.missing)",
            source,
            len(missing),
            len(missing) + len(records),
            video_root,
        )
    return DatasetIndex(records=records, classes=classes, missing=missing)


def _first_field(line: str) -> tuple[str, str]:
    """``line`` cut at its first run of spaces or tabs (lists mix both): (head, rest or "")."""
    head, *rest = line.split(None, 1)
    return head, rest[0] if rest else ""


def _last_field(line: str) -> tuple[str, str]:
    """``line`` cut at its last run of spaces or tabs: (rest or "", last field)."""
    *rest, last = line.rsplit(None, 1)
    return rest[0] if rest else "", last


def _ucf_group(name: str) -> str | None:
    """The ``gXX`` group of a UCF101-style name ``v_<Class>_gXX_cYY``, else ``None``."""
    match = _UCF_GROUP.search(name)
    return match.group(1).lower() if match else None


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _class_lookup(classes: Sequence[str]) -> dict[str, int]:
    return {name.lower(): label for label, name in enumerate(classes)}


def _check_split(split: int, subset: str, subsets: Iterable[str]) -> None:
    if split not in (1, 2, 3):
        raise VidkdError(f"data.split must be 1, 2 or 3, got {split!r}: fix the config")
    if subset not in subsets:
        raise VidkdError(f"subset must be one of {sorted(subsets)}, got {subset!r}: fix the config")


def _read_path_label_list(list_file: Path) -> list[tuple[str, int]]:
    """Lines ``<path> [num_frames] <label>`` (MMAction2): path is the first token."""
    entries = []
    for line in _read_lines(list_file, "check data.annotations"):
        tokens = line.split()
        if len(tokens) < 2:
            raise VidkdError(f"{list_file}: expected '<path> <label>', got {line!r}")
        entries.append((tokens[0], _parse_int(tokens[-1], list_file, line)))
    return entries


def _check_label_cover(list_file: Path, labels: Iterable[int]) -> int:
    """The number of classes ``K`` a label list implies; its labels must be exactly 0..K-1.

    A negative label, or a label in 0..K-1 that no line uses, is a :class:`VidkdError`
    naming the first such label.
    """
    used = set(labels)
    if not used:
        raise VidkdError(f"{list_file}: no labelled lines: fix the list")
    if min(used) < 0:
        raise VidkdError(f"{list_file}: label {min(used)} is negative; labels are 0-based: fix the list")
    count = max(used) + 1
    if len(used) != count:
        first_missing = next(label for label in range(count) if label not in used)
        raise VidkdError(
            f"{list_file}: label {first_missing} is missing: labels must cover 0..{count - 1} "
            f"with every class listed ({len(used)} of {count} used): fix the list"
        )
    return count


def _classes_from_labels(list_file: Path, entries: Iterable[tuple[str, int]]) -> list[str]:
    """Class names ``classes[label]`` from the top folder of each ``(path, label)`` entry."""
    entries = list(entries)
    _check_label_cover(list_file, (label for _, label in entries))
    names: dict[int, str] = {}
    for relative, label in entries:
        folder = relative.replace("\\", "/").split("/")[0]
        if names.setdefault(label, folder) != folder:
            raise VidkdError(
                f"{list_file}: label {label} is used for folders {names[label]!r} and {folder!r}: "
                "fix the list"
            )
    return [names[label] for label in range(len(names))]
