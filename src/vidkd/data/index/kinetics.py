"""Kinetics from its annotation CSV and label list."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from vidkd.data.index.common import (
    _finish,
    _read_lines,
    _require_dir,
    _Resolver,
)
from vidkd.data.records import DatasetIndex, VideoRecord
from vidkd.errors import VidkdError
from vidkd.files import read_text

logger = logging.getLogger("vidkd")


def _csv_rows(path: Path, fix: str) -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of a CSV file; columns stripped, a short row's gaps are ``""``."""
    text = read_text(path, "annotation file", fix)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [name.strip() for name in next(reader, [])]
        rows = [
            dict(zip(header, [*row, *[""] * (len(header) - len(row))], strict=False))
            for row in reader
            if row
        ]
    except csv.Error as error:
        raise VidkdError(f"{path}: not a readable CSV file ({error}): fix the file") from None
    return header, rows


def read_classes_file(classes_file: Path) -> list[str]:
    """Class names, in label order, from ``data.classes_file``.

    Kinetics' ``id,name`` CSV (sorted by id) or a text file with one name a line (MMAction2's
    ``label_map`` files): line ``i`` names label ``i``. A name listed twice (compared
    case-insensitively, as folders are matched) is a :class:`VidkdError`.
    """
    names = _class_names(classes_file)
    seen: dict[str, str] = {}
    for name in names:
        if not name:
            raise VidkdError(f"{classes_file}: a class name is empty: fix the file")
        if name.lower() in seen:
            raise VidkdError(
                f"{classes_file}: class {name!r} is listed twice"
                + (f" (as {seen[name.lower()]!r})" if seen[name.lower()] != name else "")
                + ": fix the file"
            )
        seen[name.lower()] = name
    return names


def _class_names(classes_file: Path) -> list[str]:
    classes_file = Path(classes_file)
    lines = _read_lines(classes_file, "check data.classes_file")
    if not lines:
        raise VidkdError(f"classes file {classes_file} is empty: check data.classes_file")
    if lines[0].replace('"', "").lower().startswith("id,name"):
        header, rows = _csv_rows(classes_file, "check data.classes_file")
        if not {"id", "name"} <= set(header):
            raise VidkdError(
                f"{classes_file}: header {header} lacks an 'id' and a 'name' column: fix the file"
            )
        numbered = []
        for row in rows:
            try:
                numbered.append((int(row["id"]), row["name"].strip()))
            except ValueError:
                raise VidkdError(
                    f"{classes_file}: expected 'id,name' rows with an integer id, got "
                    f"{row['id']!r}: fix the file"
                ) from None
        return [name for _, name in sorted(numbered)]
    return [line.strip().strip('"') for line in lines]


def kinetics_index(
    video_root: Path,
    annotation_csv: Path,
    subset_name: str,
    classes_file: Path | None = None,
    trimmed: bool = True,
    *,
    setting: str = "data.annotations",
) -> DatasetIndex:
    """Index Kinetics from its CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Rows whose ``split`` column equals ``subset_name`` are kept. Files are
    ``<youtube_id>_<start:06d>_<end:06d>.<any ext>`` under ``video_root/<label>/`` (label as
    written or with ``_`` for spaces) or flat in ``video_root``. Downloads are usually
    trimmed to the 10 s segment, so ``start_sec``/``end_sec`` are set only when
    ``trimmed=False``. ``group`` is the YouTube id. Rows without a label are skipped (logged).
    ``setting`` is the config key that named ``annotation_csv`` (for messages).
    """
    video_root, annotation_csv = _require_dir(video_root), Path(annotation_csv)
    columns, rows = _csv_rows(annotation_csv, f"check {setting}")
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
                "the split is the CSV's file name (train.csv holds split 'train'): rename it"
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
        classes = read_classes_file(Path(classes_file))
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
                "set data.classes_file to the label list of the same Kinetics version"
            )
        try:
            start, end = float(row["time_start"]), float(row["time_end"])
            if not (math.isfinite(start) and math.isfinite(end)):
                raise ValueError
        except ValueError:
            raise VidkdError(
                f"{annotation_csv}: time_start/time_end of {row['youtube_id']!r} are not numbers "
                f"({row['time_start']!r}, {row['time_end']!r}): fix the file"
            ) from None
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
