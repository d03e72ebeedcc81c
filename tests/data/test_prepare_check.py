"""Tests for ``vidkd check`` and ``vidkd prepare`` on tiny generated videos (good and
corrupt) and on the real samples in ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from vidkd.cli import main
from vidkd.config import config_from_dict
from vidkd.data.build import build_splits, read_skip_list
from vidkd.data.check import (
    VideoCheck,
    check_directory,
    check_paths,
    check_video,
    find_videos,
    map_videos,
)
from vidkd.data.decode import VideoReader
from vidkd.data.index import folder_index, frame_list_index, ucf101_index
from vidkd.data.prepare import prepare_dataset
from vidkd.data.synthetic import SyntheticSpec, render_video, write_video
from vidkd.errors import VidkdError

# --------------------------------------------------------------------------- tiny files


def good_video(path: Path, frames: int = 20, size: int = 48, seed: int = 0) -> Path:
    """A real H.264 clip of ``frames`` frames (width 1.5 x height)."""
    spec = SyntheticSpec(size=size, min_frames=frames, max_frames=frames)
    video = render_video(seed % 12, np.random.default_rng(seed), spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.ascontiguousarray(np.concatenate([video, video[:, :, : size // 2]], 2)), 25)
    return path


def faststart_video(path: Path, frames: int = 40) -> Path:
    """An mp4 whose index (moov) comes first, so a cut-off copy still opens."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def truncated(source: Path, path: Path, keep: float = 0.3) -> Path:
    """The first ``keep`` of ``source``'s bytes."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def audio_only(path: Path) -> Path:
    """An mp4 holding one AAC audio track and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_corrupt(directory: Path, scratch: Path) -> dict[str, Path]:
    """One file of each corrupt kind in ``directory`` (whole sources go to ``scratch``)."""
    directory.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    zero = directory / "zero_bytes.mp4"
    zero.touch()
    text = directory / "not_a_video.mp4"
    text.write_text("this is a text file, not a video\n")
    return {
        "truncated": truncated(
            good_video(scratch / "whole.mp4", frames=30, seed=7), directory / "truncated.mp4"
        ),
        "zero_bytes": zero,
        "not_a_video": text,
        "audio_only": audio_only(directory / "audio_only.mp4"),
        "truncated_faststart": truncated(
            faststart_video(scratch / "faststart.mp4"), directory / "truncated_faststart.mp4"
        ),
    }


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, set[str]]:
    """``root/<class>/<video>``: 4 good videos in two classes, 5 corrupt ones in ``broken``."""
    root = tmp_path / "videos"
    for index in range(4):
        good_video(root / f"class_{index % 2}" / f"v_{index}.mp4", seed=index)
    corrupt = make_corrupt(root / "broken", tmp_path / "scratch")
    return root, {str(path) for path in corrupt.values()}


# --------------------------------------------------------------------------- check


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("truncated", "cannot open"),  # the mp4 index (moov) is at the end and was cut off
        ("zero_bytes", "cannot open"),
        ("not_a_video", "cannot open"),
        ("audio_only", "no video stream"),
        ("truncated_faststart", "decode error after"),  # opens, then runs out of data
    ],
)
def test_check_video_names_each_kind_of_corruption(
    tmp_path: Path, kind: str, problem: str
) -> None:
    corrupt = make_corrupt(tmp_path / "broken", tmp_path / "scratch")
    result = check_video(corrupt[kind])
    assert result.problem is not None and result.problem.startswith(problem), result
    assert "\n" not in result.problem and "[Errno" not in result.problem


def test_check_video_counts_every_frame_of_a_good_video(tmp_path: Path) -> None:
    result = check_video(good_video(tmp_path / "ok.mp4", frames=23))
    assert result == VideoCheck(str(tmp_path / "ok.mp4"), 23, 23, 72, 48, None)


def test_check_video_flags_a_missing_file_and_an_empty_frame_folder(tmp_path: Path) -> None:
    assert check_video(tmp_path / "gone.mp4").problem == "file not found"
    (tmp_path / "frames").mkdir()
    assert "holds no" in check_video(tmp_path / "frames").problem


def test_check_directory_lists_exactly_the_corrupt_files(mixed: tuple[Path, set[str]]) -> None:
    root, corrupt = mixed
    report = check_directory(root, workers=2, progress=False)
    assert report.checked == 9
    assert set(report.problems) == corrupt
    assert report.frames == 4 * 20
    assert not report.ok


def test_check_report_is_a_skip_list_that_training_applies(
    mixed: tuple[Path, set[str]], tmp_path: Path
) -> None:
    root, corrupt = mixed
    report = check_directory(root, workers=1, progress=False)
    report.write(tmp_path / "check.tsv")
    report.write_skip_list(tmp_path / "skip.txt")
    lines = (tmp_path / "check.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert {row[0] for row in rows} == corrupt and all(len(row) == 2 for row in rows)
    assert read_skip_list(tmp_path / "check.tsv") == corrupt
    assert read_skip_list(tmp_path / "skip.txt") == corrupt

    data = {"dataset": "folder", "root": str(root), "skip_list": str(tmp_path / "check.tsv")}
    splits = build_splits(config_from_dict({"data": data}).data)
    kept = {str(r.path) for r in splits.train + splits.val + splits.test}
    assert splits.skipped == 5 and not kept & corrupt and len(kept) == 4


def test_check_config_uses_the_paths_the_index_uses(
    mixed: tuple[Path, set[str]], tmp_path: Path
) -> None:
    root, corrupt = mixed
    relative = os.path.relpath(root)  # a root spelled relative to the working directory
    config = tmp_path / "folder.yaml"
    config.write_text(f"data:\n  dataset: folder\n  root: {relative}\n")
    report_path = tmp_path / "report.tsv"
    code = main(["check", "--config", str(config), "--report", str(report_path), "-q"])
    assert code == 1
    listed = read_skip_list(report_path)
    assert listed == {os.path.abspath(os.path.join(relative, os.path.relpath(p, root))) for p in corrupt}
    data = {"dataset": "folder", "root": relative, "skip_list": str(report_path)}
    assert build_splits(config_from_dict({"data": data}).data).skipped == 5


def test_cli_check_exit_codes(
    mixed: tuple[Path, set[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, corrupt = mixed
    report = tmp_path / "report.tsv"
    assert main(["check", str(root), "--report", str(report), "-q", "-j", "2"]) == 1
    out = capsys.readouterr().out
    assert "9 videos decoded" in out and "5 unreadable" in out
    assert all(path in out for path in corrupt)
    clean = tmp_path / "clean"
    good_video(clean / "a" / "x.mp4")
    assert main(["check", str(clean), "--report", str(report), "-q"]) == 0
    assert read_skip_list(report) == set()
    assert main(["check", str(tmp_path / "nowhere"), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err


def _exit_on_three(number: int) -> int:
    """A job function whose worker process dies (like a decoder crash) on job 3."""
    if number == 3:
        os._exit(70)
    return number * 10


def test_map_videos_survives_a_worker_that_dies() -> None:
    results = dict(map_videos(_exit_on_three, list(range(8)), 2, lambda n: -n, progress=False))
    assert results == {index: -3 if index == 3 else index * 10 for index in range(8)}


def test_check_paths_in_parallel_counts_every_frame(tmp_path: Path) -> None:
    paths = [good_video(tmp_path / f"{i}.mp4", frames=5, seed=i) for i in range(3)]
    report = check_paths(paths, workers=2, progress=False)
    assert report.ok and report.checked == 3 and report.frames == 15


# --------------------------------------------------------------------------- prepare


def _stream(path: Path) -> tuple[int, int, int, int, list[str]]:
    """(frames, width, height, key frames, other stream types) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = sum(packet.is_keyframe for packet in container.demux(stream) if packet.size)
        others = [s.type for s in container.streams if s.type != "video"]
    result = check_video(path)
    return result.frames, result.width, result.height, keys, others


def test_prepare_transcodes_mirrors_and_reports_corrupt_sources(
    mixed: tuple[Path, set[str]], tmp_path: Path
) -> None:
    root, corrupt = mixed
    (root / "trainlist.txt").write_text("class_0/v_0.mp4 0\n")
    dst = tmp_path / "prepared"
    report = prepare_dataset(root, dst, short_side=32, workers=2, progress=False, gop=8)
    assert set(report.failed) == corrupt
    assert report.failed[str(root / "broken" / "audio_only.mp4")] == "no video stream"
    assert (report.transcoded, report.skipped, report.copied, report.frames) == (4, 0, 1, 80)
    assert (dst / "trainlist.txt").read_text() == "class_0/v_0.mp4 0\n"
    outputs = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert outputs == ["class_0/v_0.mp4", "class_0/v_2.mp4", "class_1/v_1.mp4",
                       "class_1/v_3.mp4", "trainlist.txt"]  # no partial, no corrupt output
    frames, width, height, keys, _ = _stream(dst / "class_0" / "v_0.mp4")
    assert (frames, width, height) == (20, 48, 32)  # 72x48 -> shorter side 32, aspect kept
    assert keys >= 20 // 8  # a key frame at least every gop frames


def test_prepare_resumes_and_redoes_bad_or_changed_outputs(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for index in range(3):
        good_video(src / "a" / f"v{index}.mp4", frames=12, seed=index)
    first = prepare_dataset(src, dst, short_side=32, workers=1, progress=False)
    assert (first.transcoded, first.skipped) == (3, 0)
    stamp = (dst / "a" / "v0.mp4").stat().st_mtime_ns

    truncated(dst / "a" / "v1.mp4", dst / "a" / "v1.mp4", keep=0.5)  # a damaged output
    (dst / "a" / "v2.mp4.999.partial").write_bytes(b"left by a killed run")
    refused = prepare_dataset(src, dst, short_side=32, workers=1, progress=False)
    # a file it cannot read as its own output is never replaced: reported, left as it is
    assert (refused.transcoded, refused.skipped) == (0, 2)
    assert list(refused.failed) == [str(src / "a" / "v1.mp4")]
    assert "not written by vidkd prepare (or is damaged)" in refused.failed[str(src / "a" / "v1.mp4")]
    (dst / "a" / "v1.mp4").unlink()  # as the report says
    second = prepare_dataset(src, dst, short_side=32, workers=1, progress=False)
    assert (second.transcoded, second.skipped, second.failed) == (1, 2, {})
    assert (dst / "a" / "v0.mp4").stat().st_mtime_ns == stamp  # finished: untouched
    assert check_video(dst / "a" / "v1.mp4").problem is None
    assert find_videos(dst) == [dst / "a" / f"v{index}.mp4" for index in range(3)]

    third = prepare_dataset(src, dst, short_side=24, workers=1, progress=False)
    assert (third.transcoded, third.skipped) == (3, 0)  # another size: all re-encoded
    assert _stream(dst / "a" / "v0.mp4")[2] == 24


def test_prepare_mpeg4_fallback_codec(tmp_path: Path) -> None:
    good_video(tmp_path / "src" / "a" / "v.mp4", frames=10)
    report = prepare_dataset(
        tmp_path / "src", tmp_path / "dst", 32, workers=1, progress=False, codec="mpeg4"
    )
    assert report.ok and report.transcoded == 1
    with av.open(str(tmp_path / "dst" / "a" / "v.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert check_video(tmp_path / "dst" / "a" / "v.mp4").frames == 10


def test_prepare_refuses_bad_arguments(tmp_path: Path) -> None:
    good_video(tmp_path / "src" / "a" / "v.mp4", frames=5)
    with pytest.raises(VidkdError, match="does not exist"):
        prepare_dataset(tmp_path / "missing", tmp_path / "dst", progress=False)
    with pytest.raises(VidkdError, match="inside the source"):
        prepare_dataset(tmp_path / "src", tmp_path / "src" / "small", progress=False)
    with pytest.raises(VidkdError, match="even"):
        prepare_dataset(tmp_path / "src", tmp_path / "dst", short_side=127, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidkdError, match="no videos"):
        prepare_dataset(tmp_path / "empty", tmp_path / "dst", progress=False)


def test_prepare_reports_two_sources_with_one_output_name(tmp_path: Path) -> None:
    good_video(tmp_path / "src" / "a" / "v.mp4", frames=5)
    (tmp_path / "src" / "a" / "v.mkv").write_bytes((tmp_path / "src" / "a" / "v.mp4").read_bytes())
    report = prepare_dataset(tmp_path / "src", tmp_path / "dst", 32, workers=1, progress=False)
    assert report.transcoded == 1  # v.mkv -> v.mp4; v.mp4 would overwrite it
    assert list(report.failed) == [str(tmp_path / "src" / "a" / "v.mp4")]
    assert "same output" in report.failed[str(tmp_path / "src" / "a" / "v.mp4")]


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good_video(tmp_path / "src" / "a" / "v.mp4", frames=6)
    (tmp_path / "src" / "a" / "bad.mp4").write_text("nope")
    code = main(["prepare", str(tmp_path / "src"), str(tmp_path / "dst"), "--short-side", "32",
                 "-q", "-j", "1"])
    out = capsys.readouterr().out
    assert code == 1 and "1 videos transcoded" in out and "1 failed" in out
    assert read_skip_list(tmp_path / "dst" / "prepare-report.tsv") == {
        str(tmp_path / "src" / "a" / "bad.mp4")
    }
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "dst")]) == 2


# --------------------------------------------------------------------------- real data


def _link_subset(shared: Path, target: Path) -> Path:
    """ucf101-mini classes (3), original xvid .avi files, KTH clips and frame folders."""
    for name in ("ApplyEyeMakeup", "Archery", "HandstandPushups"):
        for video in sorted((shared / "ucf101-mini" / name).iterdir())[:2]:
            (target / name).mkdir(parents=True, exist_ok=True)
            (target / name / video.name).symlink_to(video)
    (target / "avi").mkdir()
    for video in sorted((shared / "formats").glob("*/*.avi"))[:3]:
        (target / "avi" / video.name).symlink_to(video)
    (target / "kth").mkdir()
    (target / "kth" / "boxing.mp4").symlink_to(
        shared / "formats" / "kth_tejaswinisoni13" / "person04_boxing_d1_uncomp.mp4"
    )
    (target / "frames").symlink_to(shared / "formats" / "RaivoKoot_frames" / "demo_dataset")
    return target


def test_check_real_samples_are_all_readable(shared: Path, tmp_path: Path) -> None:
    root = _link_subset(shared, tmp_path / "subset")
    report = check_directory(root, workers=2, progress=False)
    assert report.ok, report.problems
    assert report.checked == 6 + 3 + 1 + 4  # 4 frame folders count as videos


def test_prepare_real_samples(shared: Path, tmp_path: Path) -> None:
    root = _link_subset(shared, tmp_path / "subset")
    dst = tmp_path / "prepared"
    report = prepare_dataset(root, dst, short_side=128, workers=2, progress=False)
    assert report.ok, report.failed
    assert report.transcoded == 14
    for source in find_videos(root):
        output = dst / source.relative_to(root)
        if source.is_file():
            output = output.with_suffix(".mp4")
        before, after = check_video(source), check_video(output)
        assert after.problem is None and after.frames == before.frames, (source, after)
        assert min(after.width, after.height) == 128
        if source.is_file():
            ratio = (after.width / after.height) / (before.width / before.height)
            assert abs(ratio - 1) < 0.02
            assert _stream(output)[4] == []  # the UCF101 audio track is dropped

    # the official lists name .avi files: resolved to the prepared .mp4 by stem
    ucf = ucf101_index(dst, shared / "ucf101-splits", 1, "test")  # groups 1-7: all six
    assert len(ucf.records) == 6 and all(r.path.suffix == ".mp4" for r in ucf.records)
    # frame folders keep their frame numbers, so the frame list annotation still applies
    frames = frame_list_index(dst / "frames", dst / "frames" / "annotations.txt")
    assert len(frames.records) == 4
    # what the training loader reads from a prepared file
    with VideoReader(dst / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.mp4", 128) as reader:
        assert reader.read(40, 16).shape == (16, 128, 170, 3)
    assert len(folder_index(dst).records) >= 6
