"""UCF101 from the official ``ucfTrainTestlist``."""

from __future__ import annotations

from pathlib import Path

from vidkd.data.index.common import (
    _check_split,
    _class_lookup,
    _finish,
    _first_field,
    _parse_int,
    _read_lines,
    _require_dir,
    _Resolver,
    _ucf_group,
)
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError


def ucf101_index(video_root: Path, split_dir: Path, split: int, subset: str) -> DatasetIndex:
    """Index UCF101 from the official ``ucfTrainTestlist`` (``classInd.txt``, ``trainlist0N``).

    Labels are 0-based (``classInd.txt`` is 1-based). Test lists carry no label: it comes
    from the class folder, matched case-insensitively. ``group`` is the ``gXX`` of the name
    (the unit the official splits keep disjoint).
    """
    _check_split(split, subset, ("train", "test"))
    video_root, split_dir = _require_dir(video_root), Path(split_dir)
    fix = (
        "set data.annotations to the ucfTrainTestlist folder of "
        "UCF101TrainTestSplits-RecognitionTask.zip"
    )
    class_file = split_dir / "classInd.txt"
    classes: list[str] = []
    for line in _read_lines(class_file, fix):
        number, name = _first_field(line)
        if _parse_int(number, class_file, line) != len(classes) + 1 or not name.strip():
            raise VidkdError(f"{class_file}: expected '<n> <Class>' numbered from 1, got {line!r}")
        classes.append(name.strip())
    lookup = _class_lookup(classes)

    list_file = split_dir / f"{subset}list{split:02d}.txt"
    resolver = _Resolver(video_root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for line in _read_lines(list_file, fix):
        relative, label_text = _first_field(line)
        folder = relative.replace("\\", "/").split("/")[0]
        folder_label = lookup.get(folder.lower())
        if label_text.strip():
            label = _parse_int(label_text.strip(), list_file, line) - 1
            if folder_label is not None and folder_label != label:
                raise VidkdError(
                    f"{list_file}: {relative} is labelled {label + 1} but its folder is class "
                    f"{folder_label + 1} in {class_file}: use the classInd.txt of the same release"
                )
        elif folder_label is None:
            raise VidkdError(
                f"{list_file}: folder {folder!r} of {relative} is not a class of {class_file}: "
                "use the classInd.txt of the same release"
            )
        else:
            label = folder_label
        if not 0 <= label < len(classes):
            raise VidkdError(f"{list_file}: label of {relative} is outside 1..{len(classes)}")
        path = resolver.resolve(relative)
        if path is None:
            missing.append(relative)
        else:
            records.append(VideoRecord(path, label, group=_ucf_group(Path(relative).name)))
    expected = f"{video_root}/<Class>/v_<Class>_gXX_cYY.avi as named in {list_file.name}"
    return _finish(list_file.name, resolver, records, missing, classes, expected)
