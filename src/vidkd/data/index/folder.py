"""Generic ``root/<class>/<video>`` trees, path lists and VideoFrameDataset frame lists."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from vidkd.data.index.common import (
    _class_lookup,
    _classes_from_labels,
    _finish,
    _name,
    _parse_int,
    _read_lines,
    _require_dir,
    _Resolver,
    _ucf_group,
)
from vidkd.data.index.walk import (
    VIDEO_EXTENSIONS,
    VisitedDirs,
    _is_frame_folder,
    _list_dir,
    _sorted_dirs_first_real,
    _video_suffix,
    entry_kind,
)
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError

_FRAME_NUMBER = re.compile(r"(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)


def folder_index(
    root: Path,
    list_file: Path | None = None,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    *,
    setting: str = "data.annotations",
) -> DatasetIndex:
    """Index a generic ``root/<class>/<video>`` tree; a frame folder counts as one video.

    Classes are the sorted subdirectories of ``root`` unless given (matched
    case-insensitively). With ``list_file``, only its entries are indexed: lines
    ``<relative/path> [label]`` (0-based label; without one, the label of the top folder).
    ``group`` is the ``gXX`` of UCF101-style names, else ``None``. Each real directory is
    walked once (a class folder or frame folder reached again through a symlink is
    skipped, with a warning). ``setting`` is the config key that named ``list_file``.
    """
    root = _require_dir(root)
    visited = VisitedDirs(root)
    class_dirs = [
        entry for entry in _sorted_dirs_first_real(_list_dir(root))
        if entry_kind(entry, visited) == "dir"
    ]
    class_dirs.sort(key=_name)
    if classes is None:
        classes = [entry.name for entry in class_dirs]
    classes = list(classes)
    lookup = _class_lookup(classes)
    extensions = tuple(ext.lower() for ext in extensions)
    resolver = _Resolver(root, extensions)
    records: list[VideoRecord] = []
    missing: list[str] = []
    expected = f"{root}/<class>/<video>{extensions[0]} or {root}/<class>/<video>/img_00001.jpg"

    if list_file is None:
        for class_dir in class_dirs:
            label = lookup.get(class_dir.name.lower())
            if label is None:
                continue
            videos = _sorted_dirs_first_real(_list_dir(Path(class_dir.path)))
            found = []
            for entry in videos:
                path = Path(entry.path)
                kind = entry_kind(entry, visited)
                if kind == "dir" and not _is_frame_folder(path):
                    continue
                if kind is None or (kind == "file" and _video_suffix(entry.name) not in extensions):
                    continue
                found.append(VideoRecord(path, label, group=_ucf_group(entry.name)))
            records.extend(sorted(found, key=lambda record: record.path.name))
        visited.warn(str(root))
        return _finish(root.name, resolver, records, missing, classes, expected)

    list_file = Path(list_file)
    for line in _read_lines(list_file, f"check {setting}"):
        relative, label = line, None
        head, _, tail = line.rpartition(" ")
        if head.strip() and re.fullmatch(r"-?\d+", tail):
            relative, label = head.strip(), _parse_int(tail, list_file, line)
        if label is None:
            folder = relative.replace("\\", "/").split("/")[0]
            label = lookup.get(folder.lower())
            if label is None:
                raise VidkdError(
                    f"{list_file}: {relative} has no label and its folder {folder!r} is not a "
                    f"class under {root}: add a label to the line"
                )
        elif not 0 <= label < len(classes):
            raise VidkdError(f"{list_file}: label of {relative} is outside 0..{len(classes) - 1}")
        path = resolver.resolve(relative)
        if path is None:
            missing.append(relative)
        else:
            records.append(VideoRecord(path, label, group=_ucf_group(Path(relative).name)))
    return _finish(list_file.name, resolver, records, missing, classes, expected)


def _frame_range(folder: Path) -> tuple[int, int] | None:
    """First and last frame number of the ``img_NNNNN.jpg`` files in ``folder``."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries]
    except OSError:
        return None
    numbers = [int(match.group(1)) for name in names if (match := _FRAME_NUMBER.search(name))]
    return (min(numbers), max(numbers)) if numbers else None


def frame_list_index(
    root: Path, annotation_file: Path, classes: Sequence[str] | None = None
) -> DatasetIndex:
    """Index frame folders from a VideoFrameDataset list (``<path> <start> <end> <label>``).

    Frames are 1-based and ``end`` inclusive (RaivoKoot/Video-Dataset-Loading-Pytorch).
    Records cover whole folders: a line whose ``start..end`` is not the folder's full frame
    range raises :class:`VidkdError` (sub-ranges are not supported yet). Class names are
    the top folders of each label's entries unless ``classes`` is given.
    """
    root, annotation_file = _require_dir(root), Path(annotation_file)
    rows: list[tuple[str, int, int, int]] = []
    for line in _read_lines(annotation_file, "check the annotation file path"):
        tokens = line.split()
        if len(tokens) != 4:
            raise VidkdError(
                f"{annotation_file}: expected '<path> <start> <end> <label>' (one label), "
                f"got {line!r}"
            )
        start, end, label = (_parse_int(token, annotation_file, line) for token in tokens[1:])
        rows.append((tokens[0], start, end, label))
    if classes is None:
        classes = _classes_from_labels(annotation_file, [(row[0], row[3]) for row in rows])
    classes = list(classes)
    resolver = _Resolver(root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for relative, start, end, label in rows:
        if not 0 <= label < len(classes):
            raise VidkdError(
                f"{annotation_file}: label of {relative} is outside 0..{len(classes) - 1}"
            )
        path = resolver.resolve(relative)
        if path is None or not path.is_dir():
            missing.append(relative)
            continue
        extent = _frame_range(path)
        if extent is None:
            missing.append(relative)
            continue
        if (start, end) != extent:
            raise VidkdError(
                f"{annotation_file}: {relative} names frames {start}..{end} but the folder holds "
                f"{extent[0]}..{extent[1]}; frame sub-ranges are not supported yet: list whole folders"
            )
        records.append(VideoRecord(path, label))
    expected = f"{root}/<path>/img_00001.jpg as named in {annotation_file.name}"
    return _finish(annotation_file.name, resolver, records, missing, classes, expected)
