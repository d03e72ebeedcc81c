"""From a :class:`DataConfig` to train / validation / test records and class names.

Validation comes from the training split (SPEC "Data protocol"): a group-disjoint
``val_fraction`` of the training videos by default, or the ``val`` folder of a
``root/{train,val,test}/<class>/<video>`` folder dataset (``val_fraction`` is then
ignored, and the results' notes say so). ``val_source: test_groups``
reproduces the authors' released code, which validated on the test split; results
obtained that way say so in their notes.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from vidkd.config import DataConfig
from vidkd.data.index import (
    folder_index,
    frame_list_index,
    hmdb51_index,
    is_frame_list,
    kinetics_index,
    read_classes_file,
    split_layout,
    split_layout_classes,
    split_train_val,
    ucf101_index,
)
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.data.synthetic import SyntheticSpec, default_cache_dir, ensure_synthetic_dataset
from vidkd.errors import VidkdError
from vidkd.files import read_lines, unescape_path

log = logging.getLogger("vidkd")


@dataclass
class DataSplits:
    """Records of each split plus what was noticed while building them."""

    train: list[VideoRecord]
    val: list[VideoRecord]
    test: list[VideoRecord]
    classes: list[str]
    missing: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def _require(value: str | None, key: str, example: str) -> Path:
    if not value:
        raise VidkdError(f"data.{key} is not set; add it to the config or pass --set data.{key}={example}")
    return Path(value).expanduser()


def synthetic_root(cfg: DataConfig, progress: bool = True) -> Path:
    """Generate (once) the embedded dataset and return its root."""
    syn = cfg.synthetic
    spec = SyntheticSpec(
        num_classes=syn.num_classes,
        train_per_class=syn.train_per_class,
        test_per_class=syn.test_per_class,
        size=syn.size,
        seed=syn.seed,
    )
    cache = Path(syn.cache_dir).expanduser() if syn.cache_dir else default_cache_dir()
    return ensure_synthetic_dataset(cache, spec, progress=progress)


def read_skip_list(path: Path) -> set[str]:
    """Paths listed by ``vidkd check`` (first tab-separated column of each line).

    ``vidkd check`` writes absolute paths; a relative entry (a hand-written list, an old
    report) is taken relative to the skip list's own directory, never the working
    directory. ``#`` lines are comments; the file is UTF-8 (a byte-order mark is ignored), with
    tabs, newlines, backslashes and bytes that are not UTF-8 escaped (``files.escape_path``).
    """
    path = Path(path)
    fix = f"create it with `vidkd check DATASET --skip-list {path}`"
    lines = read_lines(path, "skip list", fix)
    entries = set()
    for number, line in enumerate(lines, 1):
        if line.startswith("#"):
            continue
        entry = unescape_path(line.split("\t")[0].strip())
        if "\0" in entry:
            raise VidkdError(f"skip list {path}: entry {number} holds a NUL character: fix the file")
        if entry:
            entries.add(entry if os.path.isabs(entry) else os.path.join(path.parent, entry))
    return entries


def _real_path(path: str | Path) -> Path:
    """``path`` with links and ``..`` resolved, as far as the file system allows."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return Path(os.path.abspath(path))


@dataclass
class Indexes:
    """The indexes a layout defines; ``val`` only where the layout has its own (a ``val`` folder)."""

    train: DatasetIndex
    test: DatasetIndex
    val: DatasetIndex | None = None


def load_indexes(cfg: DataConfig, progress: bool = True) -> Indexes:
    """The dataset's train and test (and, where it has one, validation) indexes."""
    name = cfg.dataset
    if name == "synthetic":
        root = synthetic_root(cfg, progress)
        classes = read_lines(root / "classes.txt", "generated class list")
        return Indexes(
            folder_index(root / "videos", root / "trainlist.txt", classes),
            folder_index(root / "videos", root / "testlist.txt", classes),
        )
    root = _require(cfg.root, "root", "/data/videos")
    if name == "ucf101":
        splits = _require(cfg.annotations, "annotations", "/data/ucfTrainTestlist")
        return Indexes(
            ucf101_index(root, splits, cfg.split, "train"),
            ucf101_index(root, splits, cfg.split, "test"),
        )
    if name == "hmdb51":
        splits = _require(cfg.annotations, "annotations", "/data/hmdb51_splits")
        return Indexes(
            hmdb51_index(root, splits, cfg.split, "train"),
            hmdb51_index(root, splits, cfg.split, "test"),
        )
    if name == "kinetics400":
        train_csv = _require(cfg.annotations, "annotations", "/data/kinetics400/train.csv")
        test_csv = _require(cfg.test_annotations, "test_annotations", "/data/kinetics400/val.csv")
        classes_file = Path(cfg.classes_file).expanduser() if cfg.classes_file else None
        train_root = root / "train" if (root / "train").is_dir() else root
        test_root = root / test_csv.stem if (root / test_csv.stem).is_dir() else root
        # the subset is the CSV's split column value: train.csv -> "train", val.csv -> "val"
        train = kinetics_index(train_root, train_csv, train_csv.stem, classes_file)
        test = kinetics_index(
            test_root, test_csv, test_csv.stem, classes_file, setting="data.test_annotations"
        )
        if test.classes != train.classes:
            raise VidkdError(
                f"{train_csv} and {test_csv} name different label sets; set data.classes_file "
                "to the 400-line label list"
            )
        return Indexes(train, test)
    return _folder_indexes(cfg, root)


def _folder_indexes(cfg: DataConfig, root: Path) -> Indexes:
    """A folder dataset: lists, a ``root/{train,val,test}/<class>`` tree, or ``root/<class>``.

    ``data.classes_file`` (one name a line) names the labels and fixes their order;
    otherwise the lists' labels or the sorted class folders do (:func:`folder_index`).
    Without lists and split folders, a group-disjoint 20% is held out for test.
    """
    classes = read_classes_file(Path(cfg.classes_file).expanduser()) if cfg.classes_file else None
    if cfg.annotations:
        if not cfg.test_annotations:
            raise VidkdError("data.test_annotations is not set; a folder dataset with a train list needs a test list too")
        lists = Path(cfg.annotations).expanduser(), Path(cfg.test_annotations).expanduser()
        # VideoFrameDataset's `<folder> <start> <end> <label>`, else MMAction2's lists
        frame_lists = [is_frame_list(path, key) for path, key in
                       zip(lists, ("data.annotations", "data.test_annotations"), strict=True)]
        if frame_lists[0] != frame_lists[1]:
            framed, other = lists[frame_lists.index(True)], lists[frame_lists.index(False)]
            raise VidkdError(f"{framed} is a '<folder> <start> <end> <label>' list and {other} is "
                             "not: write data.annotations and data.test_annotations in one format")
        index = frame_list_index if frame_lists[0] else folder_index
        train = index(root, lists[0], classes)
        test = index(root, lists[1], train.classes, setting="data.test_annotations")
        return Indexes(train, test)
    splits = split_layout(root)
    if splits:
        if classes is None:
            classes = split_layout_classes(splits)
        log.info("%s: split folders %s, %d classes", root, ", ".join(sorted(splits)), len(classes))
        indexes = {split: folder_index(path, classes=classes) for split, path in splits.items()}
        return Indexes(indexes["train"], indexes["test"], indexes.get("val"))
    everything = folder_index(root, classes=classes)
    train_records, test_records = split_train_val(everything.records, 0.2, seed=12345)
    return Indexes(
        DatasetIndex(train_records, everything.classes, everything.missing),
        DatasetIndex(test_records, everything.classes, []),
    )


def _shown(names: list[str]) -> str:
    return ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")


def _span(record: VideoRecord) -> tuple[float, float]:
    """The part of its file a record covers, ``[start, end)`` in its own unit (frames of a
    frame-list range, else seconds of a Kinetics segment); the whole file by default."""
    if record.start_frame is not None or record.end_frame is not None:
        start, end = record.start_frame, record.end_frame
    else:
        start, end = record.start_sec, record.end_sec
    return (start or 0, math.inf if end is None else end)


def _named(record: VideoRecord) -> str:
    if record.start_frame is None and record.end_frame is None:
        return str(record.path)
    start, end = _span(record)
    return f"{record.path} (its frames {start + 1}..{end}, counted from 1)"


def _split_warnings(
    train: list[VideoRecord], test: list[VideoRecord], classes: list[str]
) -> list[str]:
    """Warnings (also returned, for ``results.json``) about splits that train but mislead:
    test videos that are training videos too, videos listed twice, classes never trained."""
    warnings = []
    spans: dict[Path, list[tuple[float, float]]] = {}
    for record in train:
        spans.setdefault(_real_path(record.path), []).append(_span(record))
    twice = sorted({_named(r) for r in train if spans[_real_path(r.path)].count(_span(r)) > 1})
    if twice:
        warnings.append(f"{len(twice)} training videos are listed more than once and trained on as "
                        f"often ({_shown(twice)}); check data.annotations")

    def trained(record: VideoRecord) -> bool:  # any of its frames
        start, end = _span(record)
        return any(start < other_end and other_start < end
                   for other_start, other_end in spans.get(_real_path(record.path), []))

    shared = sorted({_named(record) for record in test if trained(record)})
    if shared:
        warnings.append(f"{len(shared)} of {len(test)} test videos are training videos too "
                        f"({_shown(shared)}): the test score is optimistic; check "
                        "data.test_annotations")
    trained = {record.label for record in train}
    untrained = [name for label, name in enumerate(classes) if label not in trained]
    if untrained:
        warnings.append(f"{len(untrained)} of {len(classes)} classes have no training video "
                        f"({_shown(untrained)}): the network cannot learn them; remove empty class "
                        "folders or check data.annotations")
    for warning in warnings:
        log.warning(warning)
    return warnings


def build_splits(cfg: DataConfig, seed: int = 0, progress: bool = True) -> DataSplits:
    """Train / validation / test records for one run."""
    indexes = load_indexes(cfg, progress)
    train_index, test_index, val_index = indexes.train, indexes.test, indexes.val
    notes: list[str] = []
    missing = sum(len(index.missing) for index in (train_index, test_index, val_index) if index)
    if missing:
        notes.append(f"{missing} videos named by the annotations are not on disk (skipped)")
    train, test = train_index.records, test_index.records
    val_folder = val_index.records if val_index is not None else None
    skipped = 0
    if cfg.skip_list:
        # compare resolved paths so that `vidkd check ../x` matches a config naming /abs/x
        skip = {_real_path(p) for p in read_skip_list(Path(cfg.skip_list).expanduser())}
        before = len(train) + len(test) + len(val_folder or [])
        train = [r for r in train if _real_path(r.path) not in skip]
        test = [r for r in test if _real_path(r.path) not in skip]
        if val_folder is not None:
            val_folder = [r for r in val_folder if _real_path(r.path) not in skip]
        skipped = before - len(train) - len(test) - len(val_folder or [])
        notes.append(f"{skipped} videos excluded by skip list {cfg.skip_list}")
    if not train:
        raise VidkdError(f"no training videos found for dataset '{cfg.dataset}' under {cfg.root}; check data.root")
    if not test:
        raise VidkdError(f"no test videos found for dataset '{cfg.dataset}' under {cfg.root}; check data.root")
    warnings = _split_warnings(train, test, train_index.classes)
    if cfg.val_source == "test_groups":
        val = test
        notes.append("validation taken from the TEST split (authors' protocol): test numbers are optimistic")
        if val_folder is not None:
            notes.append(f"the val folder of {cfg.root} is not used (data.val_source: test_groups)")
    elif val_folder is not None:
        if not val_folder:
            raise VidkdError(f"no validation videos left in the val folder of {cfg.root}; check data.skip_list")
        val = val_folder
        notes.append(
            f"validation is the val folder of {cfg.root} ({len(val)} videos); "
            f"data.val_fraction ({cfg.val_fraction}) ignored"
        )
    else:
        train, val = split_train_val(train, cfg.val_fraction, seed=seed)
        if not val:
            raise VidkdError(
                f"no validation split can be held out of the {len(train)} training videos: they "
                f"are all of one group ({train[0].group}), which must not be split; list videos of "
                "more groups (for frame ranges: more folders), or set data.val_source=test_groups"
            )
    for note in notes:
        log.info(note)
    notes += warnings
    return DataSplits(train, val, test, list(train_index.classes), missing, skipped, notes)
