"""VideoFrameDataset frame lists (RaivoKoot/Video-Dataset-Loading-Pytorch):
``<folder> <start> <end> <label>`` a line, a labelled range of a folder of frames.

Frames are numbered as the files are (``img_00001.jpg`` is frame 1) and ``end`` is
inclusive. One folder may hold several ranges (the actions of one long recording): each
range is one video, sampled only inside its frames, and all ranges of a folder form one
group, so a validation split never holds a range of a recording that is trained on.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Sequence
from pathlib import Path

from vidkd.data.index.common import (
    _finish,
    _parse_int,
    _read_lines,
    _require_dir,
    _Resolver,
    _ucf_group,
)
from vidkd.data.index.folder import _INTEGER, _names_from_labels
from vidkd.data.index.walk import list_frame_files
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def is_frame_list(list_file: Path, setting: str = "data.annotations") -> bool:
    """Whether ``list_file`` is a VideoFrameDataset list: its first line reads ``<folder>
    <start> <end> <label>`` (four fields, the last three integers; MMAction2's lists have
    two or three). :func:`frame_list_index` then names any line that does not."""
    lines = _read_lines(list_file, f"check {setting}")
    tokens = lines[0].split() if lines else []
    return len(tokens) == 4 and all(_INTEGER.fullmatch(token) for token in tokens[1:])


def frame_numbers(folder: Path) -> list[int]:
    """The frame number of each image of ``folder``, in the order the reader reads them."""
    numbers = []
    for path in list_frame_files(folder):
        match = _LAST_NUMBER.search(path.stem)
        numbers.append(int(match.group(1)) if match else -1)
    return numbers


def frame_list_index(
    root: Path, annotation_file: Path, classes: Sequence[str] | None = None,
    *, setting: str = "data.annotations",
) -> DatasetIndex:
    """Index the ranges a VideoFrameDataset list names; folders are relative to ``root``,
    or absolute.

    A range that covers its whole folder is the folder; a part of one is a record with
    ``start_frame``/``end_frame`` (positions in the folder's frame order, end exclusive).
    A range outside the folder's frames or in a gap of its numbering, ``start > end``, or a
    line of another format is an error naming the line. Unless ``classes`` is given, the
    classes are named as an MMAction2 list's are (``_names_from_labels``): after the folder
    holding each label's entries, else by the label numbers.
    """
    root, annotation_file = _require_dir(root), Path(annotation_file)
    rows: list[tuple[str, int, int, int, str]] = []
    for line in _read_lines(annotation_file, f"check {setting}"):
        tokens = line.split()
        if len(tokens) != 4:
            raise VidkdError(
                f"{annotation_file}: expected '<path> <start> <end> <label>' (one label), "
                f"got {line!r}"
            )
        start, end, label = (_parse_int(token, annotation_file, line) for token in tokens[1:])
        if start > end:
            raise VidkdError(f"{annotation_file}: start frame {start} is after end frame {end} "
                             f"in line {line!r}: fix the line")
        rows.append((tokens[0], start, end, label, line))
    if classes is None:  # as for MMAction2 lists: the folders holding each label, else numbers
        classes = _names_from_labels(annotation_file, [(row[0], row[3]) for row in rows])
    classes = list(classes)
    resolver = _Resolver(root)
    absolute = _Resolver(Path(os.path.abspath(os.sep)))
    records: list[VideoRecord] = []
    missing: list[str] = []
    numbers_of: dict[Path, list[int]] = {}
    for relative, start, end, label, line in rows:
        if not 0 <= label < len(classes):
            raise VidkdError(
                f"{annotation_file}: label of {relative} is outside 0..{len(classes) - 1}"
            )
        path = (absolute if os.path.isabs(relative) else resolver).resolve(relative)
        if path is None or not path.is_dir():
            missing.append(relative)
            continue
        if path not in numbers_of:
            numbers_of[path] = frame_numbers(path)
        numbers = numbers_of[path]
        if not numbers:
            missing.append(relative)
            continue
        if numbers != sorted(numbers) or start < numbers[0] or end > numbers[-1]:
            raise VidkdError(
                f"{annotation_file}: line {line!r} names frames {start}..{end}, but {path} holds "
                f"frames {numbers[0]}..{numbers[-1]}: fix the line"
                if numbers == sorted(numbers) else
                f"{annotation_file}: {path} numbers its frames out of order; name them "
                "img_00001.jpg, img_00002.jpg, ..."
            )
        first, last = bisect.bisect_left(numbers, start), bisect.bisect_right(numbers, end)
        if first == last:
            raise VidkdError(f"{annotation_file}: line {line!r} names frames {start}..{end}, but "
                             f"{path} has none of them (its numbering skips them): fix the line")
        whole = first == 0 and last == len(numbers)
        records.append(VideoRecord(
            path, label, group=_ucf_group(path.name) or f"frames:{path}",
            start_frame=None if whole else first, end_frame=None if whole else last,
        ))
    absolute.report(annotation_file.name)
    expected = f"{root}/<path>/img_00001.jpg as named in {annotation_file.name}"
    return _finish(annotation_file.name, resolver, records, missing, classes, expected)
