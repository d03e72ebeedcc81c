"""Dataset trees as users really have them: cover images beside videos, macOS debris, frame
folders with upper-case or unpadded names, Matroska files with long audio, names that are
not UTF-8 or hold tabs, lists separated by tabs, splits that overlap, and ``vidkd prepare``
into a folder that already holds the user's files. Each case gives the right videos or one
clear line; expected values come from how the files were made."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidkd.data.build import _split_warnings, read_skip_list
from vidkd.data.check import check_directory, find_videos
from vidkd.data.decode import FrameFolderReader, VideoReader, _duration_tag, list_frame_files
from vidkd.data.index import folder_index, hmdb51_index, split_layout, ucf101_index
from vidkd.data.prepare import prepare_dataset
from vidkd.data.records import VideoRecord
from vidkd.data.synthetic import write_video
from vidkd.engine.predict import find_videos as predict_inputs
from vidkd.errors import VidkdError
from vidkd.files import escape_path, unescape_path


def video(path: Path, frames: int = 4) -> Path:
    """A real ``frames``-frame 32x32 video; frame i has brightness 20 * i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(frames)])
    write_video(path, images, 25)
    return path


def jpeg(path: Path, value: int = 128) -> Path:
    """One real 16x16 JPEG of brightness ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        image = np.full((16, 16, 3), value, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return path


def tree(root: Path, classes: str = "ab", per_class: int = 3) -> list[Path]:
    return [video(root / c / f"v_{c}_g{i:02d}_c01.mp4") for c in classes for i in range(per_class)]


# --------------------------------------------------------------------------- frame folders


def test_a_cover_image_beside_videos_does_not_hide_them(tmp_path: Path) -> None:
    """One stray ``cover.jpg`` made a class folder a "frame folder": its videos vanished from
    ``check`` and ``prepare``, and a split tree's classes became ``train`` and ``test``."""
    videos = tree(tmp_path / "ds")
    jpeg(tmp_path / "ds" / "a" / "cover.jpg")
    assert find_videos(tmp_path / "ds") == sorted(videos)
    index = folder_index(tmp_path / "ds")
    assert sorted(r.path for r in index.records) == sorted(videos)

    for split in ("train", "test"):
        tree(tmp_path / "split" / split)
        for c in "ab":
            jpeg(tmp_path / "split" / split / c / "Folder.jpg")
    assert set(split_layout(tmp_path / "split")) == {"train", "test"}


def test_frame_folder_names_upper_case_and_unpadded(tmp_path: Path) -> None:
    """``IMG_00001.JPG`` folders are frames, and ``img_2.jpg`` comes before ``img_10.jpg``."""
    upper = tmp_path / "upper"
    for i in range(1, 4):
        jpeg(upper / f"IMG_{i:05d}.JPG")
    assert [p.name for p in list_frame_files(upper)] == ["IMG_00001.JPG", "IMG_00002.JPG", "IMG_00003.JPG"]

    unpadded = tmp_path / "unpadded"
    for i in range(1, 13):
        jpeg(unpadded / f"img_{i}.jpg", value=20 * i)
    jpeg(unpadded / "._img_1.jpg")  # macOS resource fork: not a frame
    with FrameFolderReader(unpadded) as reader:
        means = [float(frame.mean()) for frame in reader.read_all()]
    assert len(means) == 12
    assert means == sorted(means)  # frame i was written with brightness 20 * i
    assert means[-1] - means[0] > 150


def test_hidden_files_and_folders_are_neither_videos_nor_classes(tmp_path: Path) -> None:
    videos = tree(tmp_path / "ds")
    (tmp_path / "ds" / "a" / "._v_a_g00_c01.mp4").write_bytes(b"\0\5\26\7Mac OS X")
    video(tmp_path / "ds" / ".ipynb_checkpoints" / "x.mp4")
    video(tmp_path / "ds" / "__MACOSX" / "a" / "y.mp4")
    index = folder_index(tmp_path / "ds")
    assert index.classes == ["a", "b"]
    assert sorted(r.path for r in index.records) == sorted(videos)
    assert find_videos(tmp_path / "ds") == sorted(videos)


# --------------------------------------------------------------------------- video length


def _matroska_with_long_audio(path: Path, frames: int) -> None:
    """``frames`` video frames at 25 fps (2 s for 50), and 10 s of silence in AAC."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        for i in range(frames):
            image = np.full((32, 32, 3), 5 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
        for i in range(470):  # 470 x 1024 samples: 10 s
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                                 layout="mono")
            samples.sample_rate, samples.pts = 48000, i * 1024
            out.mux(audio.encode(samples))
        out.mux(audio.encode())


def test_matroska_length_is_the_video_streams_not_the_audios(tmp_path: Path) -> None:
    """Matroska has no stream duration; the container's 10 s (the audio) made 250 frames of a
    50-frame video, and 4 of 5 clips silently fell back to the first."""
    path = tmp_path / "long_audio.mkv"
    _matroska_with_long_audio(path, 50)
    with VideoReader(path) as reader:
        assert reader.info.num_frames == 50
        last = reader.read(40, 4)
    assert abs(float(last[0].mean()) - 5 * 40) < 8  # frame 40, not frame 0


@pytest.mark.parametrize("tag, seconds", [
    ({"DURATION": "00:00:02.000000000"}, 2.0),
    ({"DURATION-eng": "01:02:03.5"}, 3723.5),
    ({"duration": "0:00:07"}, 7.0),
    ({"DURATION": "N/A"}, None),
    ({"title": "x"}, None),
])
def test_duration_tag(tag: dict[str, str], seconds: float | None) -> None:
    assert _duration_tag(tag) == seconds


# --------------------------------------------------------------------------- reports


@given(st.text(min_size=1, max_size=30))
def test_escape_path_round_trips_and_stays_one_field(name: str) -> None:
    escaped = escape_path(name)
    assert unescape_path(escaped) == name
    assert not {"\t", "\n", "\r"} & set(escaped)


@given(st.binary(min_size=1, max_size=20))
def test_escape_path_round_trips_names_that_are_not_utf8(raw: bytes) -> None:
    name = os.fsdecode(raw)
    escaped = escape_path(name)
    escaped.encode("utf-8")  # a report line is UTF-8
    assert os.fsencode(unescape_path(escaped)) == raw


def test_check_report_skips_names_with_tabs_newlines_and_bad_bytes(tmp_path: Path) -> None:
    """Such names crashed the report (not UTF-8) or split its lines (tab, newline), and the
    skip list then skipped nothing."""
    root = tmp_path / "ds"
    tree(root)
    bad = [root / "a" / "bad\ttab.mp4", root / "b" / "bad\nnewline.mp4",
           Path(os.fsdecode(bytes(root / "a") + b"/bad\xff.mp4"))]
    for path in bad:
        path.write_bytes(b"not a video")
    report = check_directory(root, workers=1, progress=False)
    assert sorted(report.problems) == sorted(str(p) for p in bad)
    report.write(tmp_path / "report.tsv")
    report.write_skip_list(tmp_path / "skip.txt")
    expected = {os.path.abspath(p) for p in bad}
    assert read_skip_list(tmp_path / "report.tsv") == expected
    assert read_skip_list(tmp_path / "skip.txt") == expected


def test_check_names_a_folder_it_cannot_list_and_checks_a_single_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    tree(root)
    locked = root / "b"
    real_scandir = os.scandir

    def scandir(path=".") -> object:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = check_directory(root, workers=1, progress=False)
    assert report.problems == {str(locked): "cannot list folder (Permission denied)"}
    assert report.checked == 3  # the videos of class a
    with pytest.raises(VidkdError, match=r"ds/b: cannot list folder \(Permission denied\)"):
        predict_inputs([root])
    monkeypatch.undo()

    one = check_directory(root / "a" / "v_a_g00_c01.mp4", workers=1, progress=False)
    assert one.checked == 1 and one.ok


# --------------------------------------------------------------------------- lists and splits


def test_official_lists_separated_by_tabs(tmp_path: Path) -> None:
    root = tmp_path / "ucf"
    videos = [video(root / "Archery" / "v_Archery_g01_c01.mp4"),
              video(root / "Basketball" / "v_Basketball_g01_c01.mp4")]
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1\tArchery\n2  Basketball\n")
    (splits / "trainlist01.txt").write_text(
        "Archery/v_Archery_g01_c01.avi\t1\nBasketball/v_Basketball_g01_c01.avi 2\n")
    index = ucf101_index(root, splits, 1, "train")
    assert index.classes == ["Archery", "Basketball"]
    assert sorted(r.path for r in index.records) == sorted(videos)
    assert [r.label for r in sorted(index.records, key=lambda r: r.path)] == [0, 1]

    hmdb = tmp_path / "hmdb"
    clip = video(hmdb / "jump" / "a_jump_f_cm_np1_ri_med_0.mp4")
    lists = tmp_path / "hmdb_splits"
    lists.mkdir()
    (lists / "jump_test_split1.txt").write_text("a_jump_f_cm_np1_ri_med_0.avi\t1 \n")
    assert [r.path for r in hmdb51_index(hmdb, lists, 1, "train").records] == [clip]


def test_split_warnings_name_duplicates_overlap_and_untrained_classes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = (tmp_path / f"{n}.mp4" for n in "abc")
    train = [VideoRecord(a, 0), VideoRecord(a, 0), VideoRecord(b, 1)]
    test = [VideoRecord(b, 1), VideoRecord(c, 1)]
    with caplog.at_level(logging.WARNING, logger="vidkd"):
        warnings = _split_warnings(train, test, ["x", "y", "empty"])
    assert len(warnings) == 3
    assert warnings[0].startswith("1 training videos are listed more than once")
    assert warnings[1].startswith("1 of 2 test videos are training videos too")
    assert str(b) in warnings[1] and str(c) not in warnings[1]
    assert warnings[2].startswith("1 of 3 classes have no training video (empty)")
    assert all(w in caplog.text for w in warnings)
    assert _split_warnings([VideoRecord(a, 0), VideoRecord(b, 1)], [VideoRecord(c, 0)], ["x", "y"]) == []


# --------------------------------------------------------------------------- prepare


def test_prepare_never_replaces_what_it_did_not_write(tmp_path: Path) -> None:
    """``prepare SRC DST`` into a folder holding the user's files deleted a frame folder's
    notes, replaced a video of the same name and overwrote an edited split list."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    video(src / "a" / "v1.mp4")
    video(src / "b" / "v2.mp4")
    for i in range(1, 4):
        jpeg(src / "a" / "clip9" / f"img_{i:05d}.jpg")
    (src / "trainlist01.txt").write_text("a/v1.mp4\n")
    os.utime(src / "trainlist01.txt", (1_000_000_000, 1_000_000_000))

    (dst / "a" / "clip9").mkdir(parents=True)
    (dst / "a" / "clip9" / "notes.md").write_text("my notes")
    (dst / "b").mkdir()
    (dst / "b" / "v2.mp4").write_bytes(b"the user's own file")
    (dst / "trainlist01.txt").write_text("MY EDITED SPLIT\n")  # newer than the source's

    report = prepare_dataset(src, dst, short_side=16, workers=1, progress=False)
    assert report.transcoded == 1  # a/v1.mp4 only
    assert set(report.failed) == {str(src / "a" / "clip9"), str(src / "b" / "v2.mp4")}
    assert all("was not written by vidkd prepare" in p for p in report.failed.values())
    assert (dst / "a" / "clip9" / "notes.md").read_text() == "my notes"
    assert (dst / "b" / "v2.mp4").read_bytes() == b"the user's own file"
    assert (dst / "trainlist01.txt").read_text() == "MY EDITED SPLIT\n"

    # its own outputs it does replace: another short side re-encodes v1 and the frame folder
    (dst / "a" / "clip9" / "notes.md").unlink()
    (dst / "b" / "v2.mp4").unlink()
    first = prepare_dataset(src, dst, short_side=16, workers=1, progress=False)
    assert first.ok and first.transcoded == 2 and first.skipped == 1
    again = prepare_dataset(src, dst, short_side=8, workers=1, progress=False)
    assert again.ok and again.transcoded == 3
    with VideoReader(dst / "a" / "v1.mp4") as reader:
        assert min(reader.info.width, reader.info.height) == 8
