"""Fuzzing the list readers: whatever bytes a split list, annotation file, classes file
or skip list holds, reading it returns an index or raises :class:`VidkdError`, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidkd.data.build import read_skip_list
from vidkd.data.index import (
    folder_index,
    frame_list_index,
    hmdb51_index,
    kinetics_index,
    read_classes_file,
    ucf101_index,
)
from vidkd.errors import VidkdError

# Pieces of real list lines, so that generated files reach past the first parse error.
TOKENS = [
    "c0/a.mp4", "c0/a.avi", "c1/b", "c0", "c1", "a", "b", "f", "c0/f", "0", "1", "2", "3", "-1",
    "99999999999999999999", "1" * 5000, " ", "  ", "\t", "\n", "\r\n", "\r", "/", "\\", "..",
    ".", "#", ",", '"', "\ufeff", "\x00", "é", "٣", "id,name", "id", "name",
    "label,youtube_id,time_start,time_end,split", "label,youtube_id,time_start,time_end",
    "train", "test", "nan", "inf", "1e5", "-5", "img_00001.jpg", "0.5", "train/c0/a.mp4",
    "test/c1", "val", "17",
]
lines = st.lists(st.sampled_from(TOKENS), max_size=16).map("".join)
contents = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
    lines.map(lambda text: text.encode("utf-8")),
    lines.map(lambda text: ("\ufeff" + text).encode("utf-8")),
    lines.map(lambda text: text.encode("latin-1", "replace")),
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``videos/c0/a.mp4``, ``videos/c1/b.mp4``, a frame folder ``videos/c0/f``; list dirs;
    ``split/{train,test}/<class>/...``, a split-folder tree."""
    base = tmp_path_factory.mktemp("fuzz")
    for name in ("videos/c0/a.mp4", "videos/c1/b.mp4", "videos/c0/f/img_00001.jpg",
                 "videos/c0/a_000001_000002.mp4", "split/train/c0/a.mp4",
                 "split/test/c1/b.mp4", "split/test/c1/f/img_00001.jpg"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(b"")
    for folder in ("ucf", "hmdb", "mmaction", "lists"):
        (base / folder).mkdir()
    return base


def _ucf(base: Path, data: bytes, fuzzed: str) -> None:
    files = {"classInd.txt": b"1 c0\n2 c1\n", "trainlist01.txt": b"c0/a.avi 1\n",
             "testlist01.txt": b"c1/b.avi\n"}
    files[fuzzed] = data
    for name, content in files.items():
        (base / "ucf" / name).write_bytes(content)
    ucf101_index(base / "videos", base / "ucf", 1, "train")
    ucf101_index(base / "videos", base / "ucf", 1, "test")


def _write(base: Path, name: str, data: bytes) -> Path:
    path = base / "lists" / name
    path.write_bytes(data)
    return path


READERS: dict[str, Callable[[Path, bytes], object]] = {
    "ucf_classes": lambda base, data: _ucf(base, data, "classInd.txt"),
    "ucf_train": lambda base, data: _ucf(base, data, "trainlist01.txt"),
    "ucf_test": lambda base, data: _ucf(base, data, "testlist01.txt"),
    "hmdb_official": lambda base, data: (
        (base / "hmdb" / "c0_test_split1.txt").write_bytes(data),
        hmdb51_index(base / "videos", base / "hmdb", 1, "train"),
    ),
    "hmdb_mmaction": lambda base, data: (
        (base / "mmaction" / "hmdb51_val_split_1_videos.txt").write_bytes(data),
        hmdb51_index(base / "videos", base / "mmaction", 1, "test"),
    ),
    "folder_list": lambda base, data: folder_index(base / "videos", _write(base, "l.txt", data)),
    "folder_list_split": lambda base, data: folder_index(
        base / "split", _write(base, "s.txt", data)
    ),
    "folder_classes_file": lambda base, data: folder_index(
        base / "videos", _write(base, "n.txt", b"c0/a.mp4 0\nc1/b.mp4 1\n"),
        read_classes_file(_write(base, "names.txt", data)),
    ),
    "frame_list": lambda base, data: frame_list_index(base / "videos", _write(base, "f.txt", data)),
    "kinetics_csv": lambda base, data: kinetics_index(
        base / "videos", _write(base, "train.csv", data), "train"
    ),
    "classes_file": lambda base, data: kinetics_index(
        base / "videos",
        _write(base, "k.csv", b"label,youtube_id,time_start,time_end\nc0,a,1,2\n"),
        "train",
        _write(base, "classes.txt", data),
    ),
    "skip_list": lambda base, data: read_skip_list(_write(base, "skip.txt", data)),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=contents)
def test_list_readers_raise_nothing_but_vidkd_error(tree: Path, reader: str, data: bytes) -> None:
    try:
        READERS[reader](tree, data)
    except VidkdError as error:
        assert "\n" not in str(error)
