"""Output paths (--json, --out, --report, --skip-list): written whole or not at all, and
never in place of a file the command did not write before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vidkd.cli import main
from vidkd.errors import VidkdError
from vidkd.files import atomic_write_text, check_output, json_written_by, text_starting_with

VICTIMS = {  # files a typo in an output option could name, each with its own bytes
    "results.json": b'{"video_top1": 81.46, "epochs": 16}\n',
    "config.yaml": b"name: demo\ntrain:\n  epochs: 16\n",
    "video.mp4": b"\x00\x00\x00\x18ftypmp42 not really a video",
    "student.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "trainlist.txt": b"c0/v0.mp4 1\nc1/v1.mp4 2\n",
}


def victim(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(VICTIMS[name])
    return path


@pytest.mark.parametrize("command, name", [
    ("eval --json", "results.json"), ("eval --json", "config.yaml"),
    ("predict --json", "video.mp4"), ("bench --json", "config.yaml"),
    ("export --out torchscript", "student.safetensors"), ("export --out onnx", "student.safetensors"),
    ("check --report", "trainlist.txt"), ("check --skip-list", "trainlist.txt"),
    ("prepare --report", "video.mp4"),
])
def test_an_output_never_replaces_a_file_it_did_not_write(tmp_path, capsys, command, name):
    target = victim(tmp_path, name)
    config = victim(tmp_path, "config.yaml") if name != "config.yaml" else target
    checkpoint = victim(tmp_path, "student.safetensors")
    videos = tmp_path / "videos"
    argv = {
        "eval --json": ["eval", "-c", str(config), "--checkpoint", str(checkpoint), "--json", str(target)],
        "predict --json": ["predict", str(checkpoint), str(target), "--json", str(target)],
        "bench --json": ["bench", str(config), "--json", str(target)],
        "export --out torchscript": ["export", str(checkpoint), "--format", "torchscript", "--out", str(target)],
        "export --out onnx": ["export", str(checkpoint), "--format", "onnx", "--out", str(target)],
        "check --report": ["check", str(videos), "--report", str(target)],
        "check --skip-list": ["check", str(videos), "--report", str(tmp_path / "r.tsv"),
                              "--skip-list", str(target)],
        "prepare --report": ["prepare", str(videos), str(tmp_path / "dst"), "--report", str(target)],
    }[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    out, err = capsys.readouterr()
    option = command.split()[1]
    assert err.count("\n") == 1 and "Traceback" not in err + out, err
    assert f"{option} {target} exists and is not" in err and "left alone" in err
    assert target.read_bytes() == VICTIMS[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing else written either


def test_own_earlier_outputs_are_replaced_and_nothing_else(tmp_path):
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"written_by": "vidkd eval", "video_top1": 1.0}))
    assert check_output(report, "--json", json_written_by("vidkd eval"), "x") == report
    with pytest.raises(VidkdError, match="not a bench report"):  # another command's JSON
        check_output(report, "--json", json_written_by("vidkd bench"), "a bench report")
    for text in ('["written_by", "vidkd eval"]', '{"written_by": "vidkd eval"', "{}",
                 '{"video_top1": 1.0}'):  # a list, truncated JSON, no written_by, too few keys
        report.write_text(text)
        with pytest.raises(VidkdError, match="left alone"):
            check_output(report, "--json", json_written_by("vidkd eval", frozenset({"video_top1", "protocol"})), "x")
    # a report from before the stamp: no written_by, but the command's keys
    report.write_text(json.dumps({"video_top1": 1.0, "protocol": "5 clips"}))
    assert check_output(report, "--json", json_written_by("vidkd eval", frozenset({"video_top1", "protocol"})), "x")
    report.write_text(json.dumps({"written_by": "vidkd bench", "video_top1": 1.0, "protocol": "x"}))
    with pytest.raises(VidkdError, match="left alone"):  # stamped by another command
        check_output(report, "--json", json_written_by("vidkd eval", frozenset({"video_top1", "protocol"})), "x")
    report.write_text("")  # an empty file has nothing to lose (an empty skip list, a touch)
    assert check_output(report, "--json", json_written_by("vidkd eval"), "x") == report
    tsv = tmp_path / "check.tsv"
    tsv.write_text("# vidkd check videos: 0 videos, 0 unreadable\n")
    assert check_output(tsv, "--report", text_starting_with("# vidkd check "), "x") == tsv
    tsv.write_text("#  vidkd check videos\n")
    with pytest.raises(VidkdError, match="left alone"):
        check_output(tsv, "--report", text_starting_with("# vidkd check "), "x")


@pytest.mark.parametrize("command, report", [
    ("eval", {"clip_top1": 1.0, "clip_top5": 1.0, "video_top1": 1.0, "video_top5": 1.0, "num_videos": 1,
              "protocol": "p", "top5_k": 5, "failed_videos": 0}),  # EvalResult.as_dict() before the stamp
    ("predict", {"checkpoint": "s", "protocol": "p", "clips": 5, "classes": [], "videos": [], "failed": 0}),
])
def test_reports_from_before_the_stamp_are_replaced(tmp_path, command, report):
    from vidkd.cli import EVAL_KEYS, PREDICT_KEYS

    path = tmp_path / "old.json"
    path.write_text(json.dumps(report))
    keys = {"eval": EVAL_KEYS, "predict": PREDICT_KEYS}[command]
    assert check_output(path, "--json", json_written_by(f"vidkd {command}", keys), "x") == path
    results = {"name": "run", "test": report, "epochs": 1}  # a run's results.json is not one
    path.write_text(json.dumps(results))
    with pytest.raises(VidkdError, match="left alone"):
        check_output(path, "--json", json_written_by(f"vidkd {command}", keys), "x")


def test_check_replaces_its_own_report_and_skip_list(tmp_path, capsys):
    (tmp_path / "videos" / "c0").mkdir(parents=True)
    (tmp_path / "videos" / "c0" / "bad.mp4").write_bytes(b"not a video")
    argv = ["check", str(tmp_path / "videos"), "--report", str(tmp_path / "r.tsv"),
            "--skip-list", str(tmp_path / "skip.txt"), "-q", "-j", "1"]
    assert main(argv) == 1
    first = (tmp_path / "skip.txt").read_text()
    (tmp_path / "videos" / "c0" / "bad2.mp4").write_bytes(b"not a video either")
    assert main(argv) == 1  # the second run replaces both files it wrote
    capsys.readouterr()
    skipped = [line for line in (tmp_path / "skip.txt").read_text().splitlines() if not line.startswith("#")]
    assert first.count("\n") == 2 and sorted(Path(p).name for p in skipped) == ["bad.mp4", "bad2.mp4"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out" / "report.json"
    atomic_write_text(path, "old")
    assert path.read_text() == "old"

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(path, "new" * 1000)
    assert path.read_text() == "old" and os.listdir(path.parent) == ["report.json"]


def test_a_replaced_file_keeps_its_mode_and_its_symbolic_link(tmp_path):
    """The temporary file is not mkstemp's private 0600: a new report gets the umask's
    default, as `open` gives it; a replaced one keeps its mode; a link keeps pointing."""
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json"
        atomic_write_text(fresh, "{}")
        assert fresh.stat().st_mode & 0o777 == 0o644
        private = tmp_path / "private.json"
        private.write_text("old")
        private.chmod(0o600)
        atomic_write_text(private, "new")
        assert private.stat().st_mode & 0o777 == 0o600 and private.read_text() == "new"
    finally:
        os.umask(umask)
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "eval.json"
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "reports")) == ["eval.json"]


def test_special_files_are_written_in_place_never_replaced(tmp_path, capsys):
    """A FIFO (as /dev/stdout piped, or /dev/null) stays what it is, and the check before
    the work does not open it (closing it would end the reader's stream); export refuses
    one (it reads its file back)."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    assert check_output(fifo, "--json", json_written_by("vidkd eval"), "x") == fifo
    atomic_write_text(tmp_path / "pipe", "report\n")
    reader.join(timeout=10)
    assert received == ["report\n"] and fifo.is_fifo() and os.listdir(tmp_path) == ["pipe"]
    assert main(["export", str(tmp_path / "s.safetensors"), "--format", "torchscript",
                 "--out", str(fifo)]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo()


def test_check_report_and_skip_list_are_two_files(tmp_path, capsys):
    same = tmp_path / "r.tsv"
    assert main(["check", str(tmp_path / "videos"), "--report", str(same), "--skip-list",
                 str(tmp_path / "." / "r.tsv")]) == 2
    assert "is the --report file too" in capsys.readouterr().err and not same.exists()


def test_a_skip_list_from_before_the_header_may_be_replaced(tmp_path):
    from vidkd.files import absolute_paths

    old = tmp_path / "skip.txt"
    old.write_text("/data/ucf/a.avi\n\n/data/ucf/b.avi\n")
    assert absolute_paths(old)
    for text in ("c0/v0.mp4 1\n", "/data/a.avi\t3\n", ""):  # a split file, a TSV, nothing
        old.write_text(text)
        assert not absolute_paths(old)


def test_a_write_that_fails_after_the_work_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import vidkd.data.check

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vidkd.data.check, "atomic_write_text", full)
    (tmp_path / "videos" / "c0").mkdir(parents=True)
    (tmp_path / "videos" / "c0" / "bad.mp4").write_bytes(b"not a video")
    assert main(["check", str(tmp_path / "videos"), "--report", str(tmp_path / "r.tsv"), "-q"]) == 2
    out, err = capsys.readouterr()
    assert err == (f"vidkd: error: --report {tmp_path / 'r.tsv'} could not be written (No space left "
                   "on device); the results are printed above\n") and "Traceback" not in out


def test_shipped_weights_get_the_umask_mode_not_safetensors_0600(tmp_path):
    import torch

    from vidkd.engine.checkpoint import save_checkpoint, save_student

    umask = os.umask(0o022)
    try:
        save_student(tmp_path / "student.safetensors", torch.nn.Linear(2, 2), {"depth": 10})
        save_checkpoint(tmp_path / "checkpoints", 1, {"w": torch.ones(2)}, {"epoch": 0})
    finally:
        os.umask(umask)
    for path in (tmp_path / "student.safetensors", tmp_path / "checkpoints" / "epoch_0001" / "model.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_home_relative_output_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = check_output("~/reports/eval.json", "--json", json_written_by("vidkd eval"), "x")
    assert path == tmp_path / "home" / "reports" / "eval.json"
    assert not (tmp_path / "home").exists()  # made when the report is written, not before
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"


def test_impossible_paths_are_one_line(tmp_path):
    """Found by fuzzing: names too long for the file system, a symbolic link loop as
    train.out_dir, a NUL in a path, and device types torch knows but vidkd does not run on."""
    from vidkd.engine.distributed import resolve_device
    from vidkd.engine.rundir import resolve_run_dir
    from vidkd.files import read_text, writable_dir

    with pytest.raises(VidkdError, match="not a usable path"):
        check_output(tmp_path / ("x" * 5000), "--report", text_starting_with("#"), "x")
    with pytest.raises(VidkdError, match="cannot be used"):
        resolve_run_dir(tmp_path, "n" * 300)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(VidkdError, match="cannot be used"):
        resolve_run_dir(tmp_path / "loop", "run")
    with pytest.raises(VidkdError, match="is not writable"):
        writable_dir(tmp_path / ("d" * 5000), "train.out_dir")
    with pytest.raises(VidkdError, match="is not a possible file name"):
        read_text("a\0b.yaml", "config file")
    for device in ("mps", "xpu", "meta", "vulkan"):
        with pytest.raises(VidkdError, match="is not a device vidkd runs on"):
            resolve_device(device)
    from vidkd.engine.predict import predict_videos

    with pytest.raises(VidkdError, match="pass 1 to 1000 clips"):  # uniform_clips hung before
        next(predict_videos(None, {}, [], 10**30, resolve_device("cpu")))


def test_a_text_input_larger_than_any_list_is_refused(tmp_path, monkeypatch):
    import vidkd.files
    from vidkd.files import read_text

    monkeypatch.setattr(vidkd.files, "MAX_TEXT_BYTES", 1 << 20)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(VidkdError, match=r"config file .*big.yaml is larger than 1 MiB"):
        read_text(big, "config file")
    big.write_bytes(b"#" * (1 << 20))
    assert len(read_text(big, "config file")) == 1 << 20
    with pytest.raises(VidkdError, match="larger than 1 MiB"):
        read_text("/dev/zero", "config file")  # read endlessly until MemoryError before
