"""Dataset indexes: read the official split/annotation layouts into a :class:`DatasetIndex`.

Every index resolves the entries its annotation names through one :class:`_Resolver`, which
lists each directory once and then matches

1. the exact name,
2. the name case-insensitively (``HandStandPushups`` vs ``HandstandPushups``, for folders
   and files alike),
3. the stem: the list says ``x.avi`` and the disk holds ``x.mp4`` (or ``.mkv``, a frame
   folder ``x/``, ...). This is logged once per index build.

Entries not found on disk go to ``DatasetIndex.missing`` and are reported in one log line;
they are never fatal. An index in which *no* entry is found raises :class:`VidkdError`.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError

logger = logging.getLogger("vidkd")

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")
# Suffixes recognised as a video extension in list entries (``a.b_c`` has no extension).
_KNOWN_VIDEO_SUFFIXES = frozenset(
    VIDEO_EXTENSIONS + (".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts")
)
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_UCF_GROUP = re.compile(r"_(g\d+)_c\d+", re.IGNORECASE)
_HMDB_CLIP_INDEX = re.compile(r"_\d+$")
_FRAME_NUMBER = re.compile(r"(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)


# --------------------------------------------------------------------------- resolver


def _video_suffix(name: str) -> str:
    """The lower-cased video extension of ``name`` (``".avi"``), or ``""`` if it has none."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in _KNOWN_VIDEO_SUFFIXES else ""


def _is_frame_folder(path: Path) -> bool:
    """Whether ``path`` is a directory holding at least one image frame."""
    try:
        with os.scandir(path) as entries:
            return any(
                entry.name.lower().endswith(FRAME_EXTENSIONS) and entry.is_file()
                for entry in entries
            )
    except OSError:
        return False


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
                        is_dir = entry.is_dir()
                        listing.exact[entry.name] = is_dir
                        listing.lower.setdefault(entry.name.lower(), entry.name)
                        if is_dir:
                            stem = entry.name.lower()
                        elif _video_suffix(entry.name) in self.extensions:
                            stem = os.path.splitext(entry.name)[0].lower()
                        else:
                            continue
                        listing.stems.setdefault(stem, []).append(entry.name)
            except OSError:
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


# --------------------------------------------------------------------------- helpers


def _require_dir(video_root: Path) -> Path:
    video_root = Path(video_root)
    if not video_root.is_dir():
        raise VidkdError(
            f"video directory {video_root} does not exist: check the video root path in the config"
        )
    return video_root


def _read_lines(path: Path, fix: str) -> list[str]:
    """Non-empty, stripped lines of ``path`` (CRLF-safe); a missing file is a VidkdError."""
    path = Path(path)
    if not path.is_file():
        raise VidkdError(f"annotation file {path} not found: {fix}")
    with path.open(encoding="utf-8", newline=None) as handle:
        return [line.strip() for line in handle if line.strip()]


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
            + "; check video_root"
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


def _ucf_group(name: str) -> str | None:
    """The ``gXX`` group of a UCF101-style name ``v_<Class>_gXX_cYY``, else ``None``."""
    match = _UCF_GROUP.search(name)
    return match.group(1).lower() if match else None


def _hmdb_group(relative: str) -> str:
    """The source video of an HMDB51 clip: its file name without extension and trailing
    ``_N`` clip index (``Iaido_draw_sword_f_cm_np1_fr_med_2.avi`` -> ``Iaido_draw_sword_f_cm_np1_fr_med``)."""
    name = relative.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name[: -len(_video_suffix(name))] if _video_suffix(name) else name
    return _HMDB_CLIP_INDEX.sub("", stem)


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _class_lookup(classes: Sequence[str]) -> dict[str, int]:
    return {name.lower(): label for label, name in enumerate(classes)}


# --------------------------------------------------------------------------- UCF101


def _check_split(split: int, subset: str, subsets: Iterable[str]) -> None:
    if split not in (1, 2, 3):
        raise VidkdError(f"split must be 1, 2 or 3, got {split!r}: fix the dataset config")
    if subset not in subsets:
        raise VidkdError(f"subset must be one of {sorted(subsets)}, got {subset!r}: fix the config")


def ucf101_index(video_root: Path, split_dir: Path, split: int, subset: str) -> DatasetIndex:
    """Index UCF101 from the official ``ucfTrainTestlist`` (``classInd.txt``, ``trainlist0N``).

    Labels are 0-based (``classInd.txt`` is 1-based). Test lists carry no label: it comes
    from the class folder, matched case-insensitively. ``group`` is the ``gXX`` of the name
    (the unit the official splits keep disjoint).
    """
    _check_split(split, subset, ("train", "test"))
    video_root, split_dir = _require_dir(video_root), Path(split_dir)
    fix = "pass the ucfTrainTestlist folder of UCF101TrainTestSplits-RecognitionTask.zip"
    class_file = split_dir / "classInd.txt"
    classes: list[str] = []
    for line in _read_lines(class_file, fix):
        number, _, name = line.partition(" ")
        if _parse_int(number, class_file, line) != len(classes) + 1 or not name.strip():
            raise VidkdError(f"{class_file}: expected '<n> <Class>' numbered from 1, got {line!r}")
        classes.append(name.strip())
    lookup = _class_lookup(classes)

    list_file = split_dir / f"{subset}list{split:02d}.txt"
    resolver = _Resolver(video_root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for line in _read_lines(list_file, fix):
        relative, _, label_text = line.partition(" ")
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


# --------------------------------------------------------------------------- HMDB51


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
            f"split directory {split_dir} does not exist: pass the folder holding "
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
            video, _, usage = line.rpartition(" ")
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


def _read_path_label_list(list_file: Path) -> list[tuple[str, int]]:
    """Lines ``<path> [num_frames] <label>`` (MMAction2): path is the first token."""
    entries = []
    for line in _read_lines(list_file, "check the path"):
        tokens = line.split()
        if len(tokens) < 2:
            raise VidkdError(f"{list_file}: expected '<path> <label>', got {line!r}")
        entries.append((tokens[0], _parse_int(tokens[-1], list_file, line)))
    return entries


def _classes_from_labels(list_file: Path, entries: Iterable[tuple[str, int]]) -> list[str]:
    """Class names ``classes[label]`` from the top folder of each ``(path, label)`` entry."""
    names: dict[int, str] = {}
    for relative, label in entries:
        folder = relative.replace("\\", "/").split("/")[0]
        if names.setdefault(label, folder) != folder:
            raise VidkdError(
                f"{list_file}: label {label} is used for folders {names[label]!r} and {folder!r}: "
                "fix the list"
            )
    if sorted(names) != list(range(len(names))):
        absent = sorted(set(range(max(names) + 1)) - set(names)) if names else []
        raise VidkdError(
            f"{list_file}: labels must be 0..K-1 with every class listed; no entry has label "
            f"{absent[:5]}: pass classes explicitly or fix the list"
        )
    return [names[label] for label in range(len(names))]


# --------------------------------------------------------------------------- Kinetics


def _read_classes_file(classes_file: Path) -> list[str]:
    """Class names from Kinetics' ``id,name`` CSV or a one-name-per-line text file."""
    lines = _read_lines(Path(classes_file), "check classes_file")
    if lines[0].replace('"', "").lower().startswith("id,name"):
        with Path(classes_file).open(encoding="utf-8", newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda row: int(row["id"]))
        return [row["name"].strip() for row in rows]
    return [line.strip().strip('"') for line in lines]


def kinetics_index(
    video_root: Path,
    annotation_csv: Path,
    subset_name: str,
    classes_file: Path | None = None,
    trimmed: bool = True,
) -> DatasetIndex:
    """Index Kinetics from its CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Rows whose ``split`` column equals ``subset_name`` are kept. Files are
    ``<youtube_id>_<start:06d>_<end:06d>.<any ext>`` under ``video_root/<label>/`` (label as
    written or with ``_`` for spaces) or flat in ``video_root``. Downloads are usually
    trimmed to the 10 s segment, so ``start_sec``/``end_sec`` are set only when
    ``trimmed=False``. ``group`` is the YouTube id. Rows without a label are skipped (logged).
    """
    video_root, annotation_csv = _require_dir(video_root), Path(annotation_csv)
    if not annotation_csv.is_file():
        raise VidkdError(f"annotation file {annotation_csv} not found: check annotation_csv")
    with annotation_csv.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        rows = list(reader)
    needed = {"youtube_id", "time_start", "time_end"}
    if not needed <= set(columns):
        raise VidkdError(
            f"{annotation_csv}: header {columns} lacks {sorted(needed - set(columns))}: "
            "expected label,youtube_id,time_start,time_end,split"
        )
    if "split" in columns:
        subset_rows = [row for row in rows if (row["split"] or "").strip() == subset_name]
        if not subset_rows:
            present = sorted({(row["split"] or "").strip() for row in rows})
            raise VidkdError(
                f"{annotation_csv}: no rows with split {subset_name!r} (found {present}): "
                "fix subset_name"
            )
    else:
        subset_rows = rows
    labelled = [row for row in subset_rows if (row.get("label") or "").strip()]
    if not labelled:
        raise VidkdError(
            f"{annotation_csv}: subset {subset_name!r} has no labels (the original Kinetics "
            "test set was released without them): use an annotation CSV with a label column"
        )
    if len(labelled) < len(subset_rows):
        logger.warning(
            "%s: skipped %d rows of subset %r without a label",
            annotation_csv.name,
            len(subset_rows) - len(labelled),
            subset_name,
        )

    if classes_file is not None:
        classes = _read_classes_file(Path(classes_file))
    else:
        classes = sorted({row["label"].strip() for row in labelled})
    lookup = {name: label for label, name in enumerate(classes)}
    resolver = _Resolver(video_root)
    records: list[VideoRecord] = []
    missing: list[str] = []
    for row in labelled:
        name = row["label"].strip()
        if name not in lookup:
            raise VidkdError(
                f"{annotation_csv}: label {name!r} is not in {classes_file}: "
                "use the label list of the same Kinetics version"
            )
        start, end = float(row["time_start"]), float(row["time_end"])
        stem = f"{row['youtube_id'].strip()}_{int(start):06d}_{int(end):06d}"
        candidates = (f"{name}/{stem}", f"{name.replace(' ', '_')}/{stem}", stem)
        path = next(filter(None, map(resolver.resolve, candidates)), None)
        if path is None:
            missing.append(f"{name}/{stem}")
            continue
        records.append(
            VideoRecord(
                path,
                lookup[name],
                group=row["youtube_id"].strip(),
                start_sec=None if trimmed else start,
                end_sec=None if trimmed else end,
            )
        )
    expected = (
        f"{video_root}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 (or flat in {video_root})"
    )
    return _finish(
        f"{annotation_csv.name} ({subset_name})", resolver, records, missing, classes, expected
    )


# --------------------------------------------------------------------------- generic folders


def folder_index(
    root: Path,
    list_file: Path | None = None,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> DatasetIndex:
    """Index a generic ``root/<class>/<video>`` tree; a frame folder counts as one video.

    Classes are the sorted subdirectories of ``root`` unless given (matched
    case-insensitively). With ``list_file``, only its entries are indexed: lines
    ``<relative/path> [label]`` (0-based label; without one, the label of the top folder).
    ``group`` is the ``gXX`` of UCF101-style names, else ``None``.
    """
    root = _require_dir(root)
    if classes is None:
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    classes = list(classes)
    lookup = _class_lookup(classes)
    extensions = tuple(ext.lower() for ext in extensions)
    resolver = _Resolver(root, extensions)
    records: list[VideoRecord] = []
    missing: list[str] = []
    expected = f"{root}/<class>/<video>{extensions[0]} or {root}/<class>/<video>/img_00001.jpg"

    if list_file is None:
        class_dirs = sorted((entry for entry in os.scandir(root) if entry.is_dir()), key=_name)
        for class_dir in class_dirs:
            label = lookup.get(class_dir.name.lower())
            if label is None:
                continue
            for entry in sorted(os.scandir(class_dir.path), key=_name):
                path = Path(entry.path)
                if entry.is_dir() and not _is_frame_folder(path):
                    continue
                if entry.is_file() and _video_suffix(entry.name) not in extensions:
                    continue
                records.append(VideoRecord(path, label, group=_ucf_group(entry.name)))
        return _finish(root.name, resolver, records, missing, classes, expected)

    list_file = Path(list_file)
    for line in _read_lines(list_file, "check list_file"):
        relative, label = line, None
        head, _, tail = line.rpartition(" ")
        if head.strip() and re.fullmatch(r"-?\d+", tail):
            relative, label = head.strip(), int(tail)
        if label is None:
            folder = relative.replace("\\", "/").split("/")[0]
            label = lookup.get(folder.lower())
            if label is None:
                raise VidkdError(
                    f"{list_file}: {relative} has no label and its folder {folder!r} is not a "
                    f"class under {root}: add a label or pass classes"
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
    numbers = [
        int(match.group(1))
        for entry in os.scandir(folder)
        if (match := _FRAME_NUMBER.search(entry.name))
    ]
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
    for line in _read_lines(annotation_file, "check annotation_file"):
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


# --------------------------------------------------------------------------- validation split


def split_train_val(
    records: Sequence[VideoRecord], fraction: float = 0.1, seed: int = 0
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split ``records`` into train and a group-disjoint validation set of about ``fraction``.

    Records sharing a ``group`` land on the same side (``None``: a group of its own).
    Groups are shuffled with ``seed`` and taken while that brings the validation size closer
    to ``fraction * len(records)``; at least one group goes to validation and at least one
    stays in train whenever there are two groups. Both sides keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups: dict[object, list[int]] = {}
    for position, record in enumerate(records):
        key = ("group", record.group) if record.group is not None else ("video", position)
        groups.setdefault(key, []).append(position)
    order = list(groups)
    random.Random(seed).shuffle(order)
    target = fraction * len(records)
    val_positions: set[int] = set()
    for key in order:
        new_size = len(val_positions) + len(groups[key])
        if new_size < len(records) and abs(new_size - target) < abs(len(val_positions) - target):
            val_positions.update(groups[key])
    if not val_positions and len(order) > 1:  # fraction too small for any group: take the smallest
        val_positions.update(min((groups[key] for key in order), key=len))
    train = [record for position, record in enumerate(records) if position not in val_positions]
    val = [record for position, record in enumerate(records) if position in val_positions]
    return train, val
