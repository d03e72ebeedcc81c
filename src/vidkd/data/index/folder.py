"""Generic ``root/<class>/<video>`` and ``root/{train,val,test}/<class>/<video>`` trees
and MMAction2 path lists."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from vidkd.data.index.common import (
    _check_label_cover,
    _class_lookup,
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
    _entry_is_dir,
    _is_frame_folder,
    _is_partial,
    _list_dir,
    _sorted_dirs_first_real,
    _video_suffix,
    entry_kind,
    is_hidden,
)
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError

logger = logging.getLogger("vidkd")

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_INTEGER = re.compile(r"-?\d+")


def _class_dir_names(directory: Path) -> list[str]:
    """Sorted names of the subdirectories of ``directory`` (``*.partial`` and hidden excluded)."""
    return sorted(
        entry.name for entry in _list_dir(directory)
        if not _is_partial(entry.name) and not is_hidden(entry.name) and _entry_is_dir(entry)
    )


def _holds_class_folders(directory: Path) -> bool:
    """Whether ``directory`` holds a subdirectory that is not itself a frame folder."""
    return any(
        _entry_is_dir(entry) and not _is_partial(entry.name) and not is_hidden(entry.name)
        and not _is_frame_folder(Path(entry.path))
        for entry in _list_dir(directory)
    )


def split_layout(root: Path) -> dict[str, Path]:
    """The split folders of an ImageFolder-style ``root/{train,val,test}/<class>/<video>`` tree.

    ``{"train": ..., "test": ..., "val": ...}`` (``val`` only when present; ``validation``
    is read as ``val``; names matched case-insensitively) when ``root`` holds ``train`` and
    ``test`` folders whose children are class folders, else ``{}``: a dataset whose
    *classes* are called ``train`` and ``test`` holds videos there, not folders of videos.
    """
    root = _require_dir(root)
    found: dict[str, Path] = {}
    for entry in sorted(_list_dir(root), key=_name):
        split = SPLIT_FOLDERS.get(entry.name.lower())
        if split is not None and split not in found and _entry_is_dir(entry):
            found[split] = Path(entry.path)
    if "train" not in found or "test" not in found:
        return {}
    if not all(_holds_class_folders(found[split]) for split in ("train", "test")):
        return {}
    return found


def split_layout_classes(splits: dict[str, Path]) -> list[str]:
    """The union of the class folders of every split folder, sorted.

    Folders are matched case-insensitively (as list entries are); the first spelling met
    (train, then val, then test) names the class.
    """
    names: dict[str, str] = {}
    for split in ("train", "val", "test"):
        if split in splits:
            for name in _class_dir_names(splits[split]):
                names.setdefault(name.lower(), name)
    return sorted(names.values())


def _folder_classes(root: Path) -> list[str]:
    """Class names of a tree: the class folders of its splits, or its own subdirectories."""
    splits = split_layout(root)
    return split_layout_classes(splits) if splits else _class_dir_names(root)


def _list_rows(list_file: Path, setting: str) -> list[tuple[str, int | None]]:
    """``(path, label)`` of each line of a folder list; ``label`` is ``None`` when absent.

    The number of fields decides the format (MMAction2's): ``<path> <label>`` (videos),
    ``<path> <total_frames> <label>`` (frame folders; the frame count is not needed, the
    folder is read), or ``<path>`` alone. A path may hold spaces when it is followed by
    one label or by none.
    """
    rows: list[tuple[str, int | None]] = []
    for line in _read_lines(list_file, f"check {setting}"):
        tokens = line.split()
        if len(tokens) < 2 or not _INTEGER.fullmatch(tokens[-1]):
            rows.append((line, None))
            continue
        label = _parse_int(tokens[-1], list_file, line)
        if len(tokens) == 3 and _INTEGER.fullmatch(tokens[1]):
            rows.append((tokens[0], label))
        else:
            rows.append((line[: len(line) - len(tokens[-1])].strip(), label))
    return rows


def _parent_folder(relative: str) -> str:
    """The folder directly holding a list entry (``""`` for a bare name)."""
    parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
    return parts[-2] if len(parts) >= 2 else ""


def _names_from_labels(list_file: Path, rows: Sequence[tuple[str, int]]) -> list[str]:
    """Class names of a list whose every line has a label: the labels must cover 0..K-1.

    Label ``i`` is named after the folder that holds its entries when that folder is the
    same for all of them and differs from every other label's; otherwise the names are
    the label numbers (``"0"``, ``"1"``, ...): set ``data.classes_file`` to name them.
    """
    count = _check_label_cover(list_file, (label for _, label in rows))
    folders: dict[int, set[str]] = {}
    for relative, label in rows:
        folders.setdefault(label, set()).add(_parent_folder(relative))
    names = [next(iter(folders[label])) for label in range(count)]
    named = all(len(folders[label]) == 1 for label in range(count)) and all(names)
    if named and len({name.lower() for name in names}) == count:
        return names
    logger.warning(
        "%s: the folders of its entries do not name its %d labels one to one; the class "
        "names are the label numbers (set data.classes_file, one name a line, to name them)",
        list_file.name,
        count,
    )
    return [str(label) for label in range(count)]


def _label_from_folders(relative: str, lookup: dict[str, int]) -> int | None:
    """The label of the nearest folder of ``relative`` that names a class."""
    parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
    for folder in reversed(parts[:-1]):
        if folder.lower() in lookup:
            return lookup[folder.lower()]
    return None


def folder_index(
    root: Path,
    list_file: Path | None = None,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    *,
    setting: str = "data.annotations",
) -> DatasetIndex:
    """Index a generic ``root/<class>/<video>`` tree; a frame folder counts as one video.

    Without ``list_file``, every class folder of ``root`` is walked; classes are the sorted
    subdirectories of ``root`` unless given (matched case-insensitively; a folder not in
    ``classes`` is skipped, with a warning).

    With ``list_file``, only its entries are indexed (:func:`_list_rows`: MMAction2's
    ``<path> <label>`` and ``<path> <total_frames> <label>``, or ``<path>`` alone). Paths
    are relative to ``root``, or absolute. Labels are 0-based. When ``classes`` is not
    given, a list whose every line has a label defines them (:func:`_names_from_labels`:
    the labels must cover 0..K-1); a list with label-less lines takes the class folders
    (those of ``root/{train,val,test}`` in a :func:`split_layout` tree) and gives each
    label-less entry the label of its nearest folder that names a class.

    ``group`` is the ``gXX`` of UCF101-style names, else ``None`` (the video itself). Each
    real directory is walked once (a class folder or frame folder reached again through a
    symlink is skipped, with a warning). ``setting`` is the config key that named
    ``list_file``.
    """
    root = _require_dir(root)
    extensions = tuple(ext.lower() for ext in extensions)
    resolver = _Resolver(root, extensions)
    records: list[VideoRecord] = []
    missing: list[str] = []
    expected = f"{root}/<class>/<video>{extensions[0]} or {root}/<class>/<video>/img_00001.jpg"

    if list_file is None:
        visited = VisitedDirs(root)
        class_dirs = [
            entry for entry in _sorted_dirs_first_real(_list_dir(root))
            if entry_kind(entry, visited) == "dir"
        ]
        class_dirs.sort(key=_name)
        classes = [entry.name for entry in class_dirs] if classes is None else list(classes)
        lookup = _class_lookup(classes)
        unlisted = [entry.name for entry in class_dirs if entry.name.lower() not in lookup]
        if unlisted:
            logger.warning(
                "%s: skipped %d folder(s) that name no class of the class list: %s",
                root,
                len(unlisted),
                ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else ""),
            )
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
    rows = _list_rows(list_file, setting)
    if classes is None:
        labelled = [(relative, label) for relative, label in rows if label is not None]
        if rows and len(labelled) == len(rows):
            classes = _names_from_labels(list_file, labelled)
        else:
            classes = _folder_classes(root)
    classes = list(classes)
    lookup = _class_lookup(classes)
    absolute = _Resolver(Path(os.path.abspath(os.sep)), extensions)
    for relative, label in rows:
        if label is None:
            label = _label_from_folders(relative, lookup)
            if label is None:
                raise VidkdError(
                    f"{list_file}: {relative} has no label and none of its folders is a class "
                    f"under {root}: add a label to the line"
                )
        elif not 0 <= label < len(classes):
            raise VidkdError(f"{list_file}: label of {relative} is outside 0..{len(classes) - 1}")
        path = absolute.resolve(relative) if os.path.isabs(relative) else None
        if path is None:
            path = resolver.resolve(relative)
        if path is None:
            missing.append(relative)
        else:
            records.append(VideoRecord(path, label, group=_ucf_group(Path(relative).name)))
    absolute.report(list_file.name)
    return _finish(list_file.name, resolver, records, missing, classes, expected)
