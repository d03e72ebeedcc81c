"""Hostile or malformed dataset input: symlink loops, byte-order marks, text that is not
UTF-8, relative skip lists, bad output paths and odd arguments, and ``vidkd prepare``
killed mid-way. Each case ends in a correct result or one :class:`VidkdError` line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

import vidkd
from vidkd.cli import main
from vidkd.config import config_from_dict, load_config
from vidkd.data.build import build_splits, read_skip_list
from vidkd.data.check import check_directory, find_videos
from vidkd.data.index import (
    folder_index,
    frame_list_index,
    hmdb51_index,
    kinetics_index,
    ucf101_index,
)
from vidkd.data.prepare import prepare_dataset
from vidkd.data.synthetic import write_video
from vidkd.errors import VidkdError

BOM = "\ufeff"


# --------------------------------------------------------------------------- tiny files


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 4-frame 32x32 video, encoded once per module and copied where needed."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    write_video(path, frames, 25)
    return path.read_bytes()


def write_jpeg(path: Path) -> Path:
    """One real 16x16 JPEG frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        image = np.full((16, 16, 3), 128, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return path


def put(path: Path, content: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def dataset(root: Path, clip: bytes) -> set[Path]:
    """``root/c0``, ``root/c1``: two real videos each and one frame folder in ``c0``."""
    videos = {put(root / f"c{c}" / f"v_c{c}_g0{i}_c01.mp4", clip) for c in (0, 1) for i in (1, 2)}
    write_jpeg(root / "c0" / "frames" / "img_00001.jpg")
    write_jpeg(root / "c0" / "frames" / "img_00002.jpg")
    return videos | {root / "c0" / "frames"}


def one_error_line(error: pytest.ExceptionInfo[VidkdError]) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


# --------------------------------------------------------------------------- symlink loops

LOOPS = {  # link -> target, relative to the dataset root
    "c0/loop": "..",  # back to the dataset root
    "c1/self": "self",  # a link to itself: ELOOP on every stat
    "c1/again": ".",  # c1 inside c1
}


@pytest.mark.parametrize("links", [1, 3])
def test_symlink_loops_are_walked_once_and_named(
    tmp_path: Path, clip_bytes: bytes, caplog: pytest.LogCaptureFixture, links: int
) -> None:
    root = tmp_path / "videos"
    real = dataset(root, clip_bytes)
    loops = dict(list(LOOPS.items())[:links])
    for link, target in loops.items():
        os.symlink(target, root / link)

    found: list[list[Path]] = []
    walk = threading.Thread(target=lambda: found.append(find_videos(root)), daemon=True)
    started = time.perf_counter()
    walk.start()
    walk.join(timeout=20)
    assert found, "find_videos did not finish within 20 s"
    assert set(found[0]) == real and len(found[0]) == len(real)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vidkd"):
        index = folder_index(root)
    assert {record.path for record in index.records} == real and len(index.records) == 5
    assert index.classes == ["c0", "c1"]
    warnings = [r.getMessage() for r in caplog.records if "symlink loop" in r.getMessage()]
    assert len(warnings) == 1 and all(str(root / link) in warnings[0] for link in loops)

    report = check_directory(root, workers=1, progress=False)
    assert report.checked == 5 and report.ok
    assert time.perf_counter() - started < 60


# --------------------------------------------------------------------------- byte-order mark


def with_bom(path: Path, text: str) -> Path:
    return put(path, (BOM + text).encode("utf-8"))


def test_byte_order_mark_is_stripped_from_every_list(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for name in ("Grow/v_Grow_g01_c01.avi", "Grow/v_Grow_g02_c01.avi", "Swim/v_Swim_g01_c01.avi"):
        put(root / name)
    splits = tmp_path / "ucf"
    with_bom(splits / "classInd.txt", "1 Grow\r\n2 Swim\r\n")
    with_bom(splits / "trainlist01.txt", "Grow/v_Grow_g01_c01.avi 1\nSwim/v_Swim_g01_c01.avi 2\n")
    with_bom(splits / "testlist01.txt", "Grow/v_Grow_g02_c01.avi\n")
    train = ucf101_index(root, splits, 1, "train")
    assert train.classes == ["Grow", "Swim"] and len(train.records) == 2 and not train.missing
    test = ucf101_index(root, splits, 1, "test")  # an unlabelled first entry names its folder
    assert [r.path.name for r in test.records] == ["v_Grow_g02_c01.avi"]

    official = tmp_path / "hmdb"
    with_bom(official / "Grow_test_split1.txt", "v_Grow_g01_c01.avi 1\nv_Grow_g02_c01.avi 2\n")
    with_bom(official / "Swim_test_split1.txt", "v_Swim_g01_c01.avi 1\n")
    assert len(hmdb51_index(root, official, 1, "train").records) == 2
    mmaction = tmp_path / "mmaction"
    with_bom(mmaction / "hmdb51_train_split_1_videos.txt",
             "Grow/v_Grow_g01_c01.avi 0\nSwim/v_Swim_g01_c01.avi 1\n")
    index = hmdb51_index(root, mmaction, 1, "train")
    assert index.classes == ["Grow", "Swim"] and len(index.records) == 2

    unlabelled = with_bom(tmp_path / "list.txt", "Grow/v_Grow_g01_c01.avi\nSwim/v_Swim_g01_c01.avi\n")
    assert len(folder_index(root, unlabelled).records) == 2
    labelled = with_bom(tmp_path / "labelled.txt", "Grow/v_Grow_g01_c01.avi 0\n")
    assert len(folder_index(root, labelled).records) == 1

    kinetics = tmp_path / "kinetics"
    put(kinetics / "grow" / "abc_000001_000011.mp4")
    csv = with_bom(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                   "grow,abc,1,11,train\n")
    classes = with_bom(tmp_path / "classes.csv", "id,name\n0,grow\n1,swim\n")
    index = kinetics_index(kinetics, csv, "train", classes)
    assert index.classes == ["grow", "swim"] and len(index.records) == 1
    plain = with_bom(tmp_path / "classes.txt", "grow\nswim\n")
    assert kinetics_index(kinetics, csv, "train", plain).classes == ["grow", "swim"]

    frames = tmp_path / "frames"
    put(frames / "grow" / "a" / "img_00001.jpg")
    put(frames / "grow" / "a" / "img_00002.jpg")
    annotation = with_bom(tmp_path / "annotation.txt", "grow/a 1 2 0\n")
    assert frame_list_index(frames, annotation).classes == ["grow"]

    skip = with_bom(tmp_path / "skip.txt", f"{root}/Grow/v_Grow_g01_c01.avi\n")
    assert read_skip_list(skip) == {f"{root}/Grow/v_Grow_g01_c01.avi"}
    config = with_bom(tmp_path / "exp.yaml", "optim:\n  lr: 0.5\n")
    assert load_config(config).optim.lr == 0.5


# --------------------------------------------------------------------------- not UTF-8

LATIN1 = b"first line\n caf\xe9\n"  # byte 15 (Latin-1 e-acute) is not UTF-8


@pytest.mark.parametrize("kind", ["config", "class_list", "list", "csv", "classes", "skip_list"])
def test_text_that_is_not_utf8_is_one_line_with_the_byte_offset(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "videos"
    put(root / "c0" / "a.mp4")
    bad = put(tmp_path / f"{kind}.txt", LATIN1)
    with pytest.raises(VidkdError) as error:
        if kind == "config":
            load_config(bad)
        elif kind == "class_list":
            os.replace(bad, tmp_path / "classInd.txt")
            bad = tmp_path / "classInd.txt"
            ucf101_index(root, tmp_path, 1, "train")
        elif kind == "list":
            folder_index(root, bad)
        elif kind == "csv":
            kinetics_index(root, bad, "train")
        elif kind == "classes":
            csv = put(tmp_path / "k.csv", b"label,youtube_id,time_start,time_end\nc0,a,0,1\n")
            kinetics_index(root, csv, "train", bad)
        else:
            read_skip_list(bad)
    text = one_error_line(error)
    assert str(bad) in text and "byte 15" in text and "UTF-8" in text


# --------------------------------------------------------------------------- skip lists


def test_skip_list_paths_work_from_any_directory(
    tmp_path: Path, clip_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    root = work / "videos"
    for index in range(6):
        put(root / f"c{index % 2}" / f"v{index}.mp4", clip_bytes)
    bad = put(root / "c0" / "broken.mp4", b"not a video")
    monkeypatch.chdir(work)  # `vidkd check videos` from the dataset's parent
    assert main(["check", "videos", "--report", "reports/check.tsv", "--skip-list",
                 "reports/skip.txt", "-q", "-j", "1"]) == 1
    reports = work / "reports"
    written = [line.split("\t")[0] for line in (reports / "check.tsv").read_text().splitlines()
               if not line.startswith("#")]
    skip_lines = (reports / "skip.txt").read_text().splitlines()
    assert written == [str(bad)] and skip_lines[1:] == [str(bad)] and skip_lines[0].startswith("# ")
    put(reports / "by_hand.txt", b"# relative to this file\n../videos/c0/broken.mp4\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # train from another directory
    for name in ("check.tsv", "skip.txt", "by_hand.txt"):
        data = {"dataset": "folder", "root": str(root), "skip_list": str(reports / name)}
        splits = build_splits(config_from_dict({"data": data}).data)
        kept = {r.path for r in splits.train + splits.val + splits.test}
        assert splits.skipped == 1 and bad not in kept and len(kept) == 6, name


# --------------------------------------------------------------------------- arguments


def test_config_keys_are_named_in_index_errors(tmp_path: Path) -> None:
    data = {"dataset": "folder", "root": str(tmp_path / "nowhere")}
    with pytest.raises(VidkdError) as error:
        build_splits(config_from_dict({"data": data}).data)
    assert "data.root" in one_error_line(error) and "video_root" not in str(error.value)

    put(tmp_path / "videos" / "c0" / "a_000000_000001.mp4")
    put(tmp_path / "train.csv", b"label,youtube_id,time_start,time_end,split\nc0,a,0,1,train\n")
    data = {"dataset": "kinetics400", "root": str(tmp_path / "videos"),
            "annotations": str(tmp_path / "train.csv"), "test_annotations": str(tmp_path / "val.csv")}
    with pytest.raises(VidkdError) as error:
        build_splits(config_from_dict({"data": data}).data)
    assert "data.test_annotations" in one_error_line(error) and "annotation_csv" not in str(error.value)


def test_prepare_refuses_an_unknown_codec_once_up_front(tmp_path: Path) -> None:
    put(tmp_path / "src" / "c0" / "a.mp4")
    with pytest.raises(VidkdError) as error:
        prepare_dataset(tmp_path / "src", tmp_path / "dst", 32, workers=1, progress=False,
                        codec="nosuchcodec")
    text = one_error_line(error)
    assert "nosuchcodec" in text and ("libx264" in text or "mpeg4" in text)
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("command", ["check", "prepare"])
@pytest.mark.parametrize("workers", ["-3", "0"])
def test_workers_must_be_at_least_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, workers: str
) -> None:
    put(tmp_path / "src" / "c0" / "a.mp4")
    argv = [command, str(tmp_path / "src")] + ([str(tmp_path / "dst")] if command == "prepare" else [])
    assert main([*argv, "-j", workers, "--report", str(tmp_path / "r.tsv"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers/-j must be at least 1" in err and workers in err
    assert not (tmp_path / "dst").exists() and not (tmp_path / "r.tsv").exists()


# --------------------------------------------------------------------------- prepare killed


def test_prepare_removes_leftovers_that_index_and_check_never_count(
    tmp_path: Path, clip_bytes: bytes
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    dataset(src, clip_bytes)
    dead = 2**22 + 12345  # above Linux's largest pid: no such process
    # what a killed run leaves: a half-written video and a half-scaled frame folder
    put(dst / "c0" / f"v_c0_g01_c01.mp4.{dead}.partial", clip_bytes[: len(clip_bytes) // 3])
    write_jpeg(dst / "c0" / f"frames.{dead}.partial" / "img_00001.jpg")
    put(dst / "c1" / f"v_c1_g01_c01.mp4.{dead}.partial", clip_bytes)
    put(dst / f"list.txt.{dead}.partial", b"c0/v_c0_g01_c01.mp4 0\n")
    keep = put(dst / "notes.partial.txt", b"not ours")  # not a name prepare makes

    assert find_videos(dst) == []  # a partial output is never a video
    with pytest.raises(VidkdError, match="no videos found"):
        folder_index(dst)

    report = prepare_dataset(src, dst, 32, workers=1, progress=False)
    assert report.ok and report.transcoded == 5
    assert not list(dst.rglob("*.partial")) and keep.is_file()
    assert len(folder_index(dst).records) == 5 and len(find_videos(dst)) == 5
    assert check_directory(dst, workers=1, progress=False).checked == 5


def _children(pid: int) -> dict[int, str]:
    """``{child pid: command line}`` of ``pid``'s live children, from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            children[int(entry.name)] = cmdline
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is pending


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_prepare_workers_exit_when_the_main_process_is_killed(
    tmp_path: Path, clip_bytes: bytes
) -> None:
    src = tmp_path / "src"
    for index in range(40):
        put(src / "c0" / f"v{index:02d}.mp4", clip_bytes)
    env = {**os.environ, "PYTHONPATH": str(Path(vidkd.__file__).parents[1])}
    main_process = subprocess.Popen(
        [sys.executable, "-m", "vidkd.cli", "prepare", str(src), str(tmp_path / "dst"),
         "--short-side", "16", "-j", "2", "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    workers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and main_process.poll() is None:
            workers = {pid: cmd for pid, cmd in _children(main_process.pid).items()
                       if "spawn_main" in cmd}
            if len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2, "prepare finished or stalled before both workers started"
        time.sleep(0.5)
        main_process.send_signal(signal.SIGKILL)
        main_process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their parent"
    finally:
        if main_process.poll() is None:
            main_process.kill()
            main_process.wait()
        for pid in workers:  # only the processes this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    # the rerun finishes the job and leaves no partial output behind
    report = prepare_dataset(src, tmp_path / "dst", 16, workers=1, progress=False)
    assert report.ok and report.transcoded + report.skipped == 40
    assert not list((tmp_path / "dst").rglob("*.partial"))
