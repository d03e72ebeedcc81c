"""HMDB51 from the official per-class split files or MMAction2 lists."""

from __future__ import annotations

import re
from pathlib import Path

from vidkd.data.index.common import (
    _check_split,
    _classes_from_labels,
    _finish,
    _last_field,
    _read_lines,
    _read_path_label_list,
    _require_dir,
    _Resolver,
)
from vidkd.data.index.walk import _video_suffix
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError

_HMDB_CLIP_INDEX = re.compile(r"_\d+$")


def _hmdb_group(relative: str) -> str:
    """The source video of an HMDB51 clip: its file name without extension and trailing
    ``_N`` clip index (``Iaido_draw_sword_f_cm_np1_fr_med_2.avi`` -> ``Iaido_draw_sword_f_cm_np1_fr_med``)."""
    name = relative.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name[: -len(_video_suffix(name))] if _video_suffix(name) else name
    return _HMDB_CLIP_INDEX.sub("", stem)


def hmdb51_index(video_root: Path, split_dir: Path, split: int, subset: str) -> DatasetIndex:
    """Index HMDB51 from either split format found in ``split_dir`` (auto-detected).

    (a) Official ``testTrainMulti_7030_splits``: ``<class>_test_split<N>.txt`` with lines
    ``<video> <0|1|2>`` (1 train, 2 test, 0 unused); labels = alphabetical class order.
    (b) MMAction2 lists ``hmdb51_{train,val}_split_<N>_videos.txt`` (or ``_rawframes.txt``)
    with lines ``<class>/<video> [num_frames] <label>`` (0-based); ``test`` reads ``val``.
    ``group`` is the source video (:func:`_hmdb_group`): clips cut from one video share it.
    """
    _check_split(split, subset, ("train", "test"))
    video_root, split_dir = _require_dir(video_root), Path(split_dir)
    if not split_dir.is_dir():
        raise VidkdError(
            f"split directory {split_dir} does not exist: set data.annotations to the folder holding "
            "<class>_test_split<N>.txt (testTrainMulti_7030_splits) or MMAction2's "
            "hmdb51_*_split_<N>_videos.txt"
        )
    official = sorted(split_dir.glob(f"*_test_split{split}.txt"))
    if official:
        return _hmdb51_official(video_root, official, split, subset)
    stem = f"hmdb51_{'train' if subset == 'train' else 'val'}_split_{split}"
    for suffix in ("videos", "rawframes"):
        list_file = split_dir / f"{stem}_{suffix}.txt"
        if list_file.is_file():
            return _hmdb51_mmaction(video_root, list_file)
    raise VidkdError(
        f"no HMDB51 split {split} files in {split_dir}: expected <class>_test_split{split}.txt "
        f"(official) or {stem}_videos.txt (MMAction2)"
    )


def _hmdb51_official(
    video_root: Path, split_files: list[Path], split: int, subset: str
) -> DatasetIndex:
    suffix = f"_test_split{split}.txt"
    classes = sorted(path.name[: -len(suffix)] for path in split_files)
    wanted = "1" if subset == "train" else "2"
    resolver = _Resolver(video_root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for label, name in enumerate(classes):
        split_file = split_files[0].parent / f"{name}{suffix}"
        for line in _read_lines(split_file, "download testTrainMulti_7030_splits.rar"):
            video, usage = _last_field(line)
            if usage.strip() not in ("0", "1", "2") or not video.strip():
                raise VidkdError(f"{split_file}: expected '<video> <0|1|2>', got {line!r}")
            if usage.strip() != wanted:
                continue
            relative = f"{name}/{video.strip()}"
            path = resolver.resolve(relative)
            if path is None:
                missing.append(relative)
            else:
                records.append(VideoRecord(path, label, group=_hmdb_group(relative)))
    expected = f"{video_root}/<class>/<video>.avi as named in *{suffix}"
    return _finish(
        f"HMDB51 split {split} ({subset})", resolver, records, missing, classes, expected
    )


def _hmdb51_mmaction(video_root: Path, list_file: Path) -> DatasetIndex:
    entries = _read_path_label_list(list_file)
    classes = _classes_from_labels(list_file, entries)
    resolver = _Resolver(video_root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for relative, label in entries:
        path = resolver.resolve(relative)
        if path is None:
            missing.append(relative)
        else:
            records.append(VideoRecord(path, label, group=_hmdb_group(relative)))
    expected = f"{video_root}/<class>/<video>.avi as named in {list_file.name}"
    return _finish(list_file.name, resolver, records, missing, classes, expected)
