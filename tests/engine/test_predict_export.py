"""`vidkd predict` and `vidkd export` on a tiny student and tiny real video files."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from vidkd.cli import main
from vidkd.config import config_from_dict
from vidkd.data.dataset import ClipSpec, VideoClipDataset
from vidkd.data.records import VideoRecord
from vidkd.data.synthetic import SyntheticSpec, render_video, write_video
from vidkd.data.transforms import to_model_input
from vidkd.engine.checkpoint import load_student, save_student
from vidkd.engine.train import build_student, model_description
from vidkd.errors import VidkdError

CLASSES = ["wave", "spin", "jump"]


@pytest.fixture
def student_file(tmp_path, synthetic_cache, tiny_config):
    """An untrained tiny student shipped exactly as `vidkd train` ships one."""
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path / "runs"))
    torch.manual_seed(0)
    student = build_student(cfg, len(CLASSES))
    for module in student.modules():  # non-trivial BN statistics, so that eval mode matters
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "student.safetensors"
    save_student(path, student, model_description(cfg, CLASSES))
    return path


def make_video(path, seed: int, frames: int = 20, size: int = 40):
    spec = SyntheticSpec(num_classes=3, size=size, min_frames=frames, max_frames=frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, render_video(seed % 3, np.random.default_rng(seed), spec), spec.fps)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def expected_probabilities(student_path, video, clips: int) -> list[float]:
    """The `vidkd eval` test protocol on one video: uniform clips, centre crop, mean softmax."""
    model, description = load_student(student_path)
    model.eval()
    spec = ClipSpec(description["clip_len"], description["frame_stride"],
                    description["short_side"], description["crop_size"])
    item = VideoClipDataset([VideoRecord(video, 0)], spec, "test", num_clips=clips)[0]
    assert item["valid"]
    with torch.no_grad():
        logits = model(to_model_input(item["clips"], torch.device("cpu"), channels_last=False))
    return logits.softmax(dim=1).mean(dim=0).tolist()


def test_predict_good_and_corrupt_videos(tmp_path, student_file, capsys):
    videos = tmp_path / "videos"
    good = make_video(videos / "a_good.mp4", 1)
    nested = make_video(videos / "sub" / "b_good.mp4", 2, frames=30, size=48)
    truncated = videos / "c_truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:200])
    (videos / "d_garbage.avi").write_bytes(np.random.default_rng(0).bytes(4000))
    (videos / "notes.txt").write_text("not a video: ignored")
    missing = tmp_path / "missing.mp4"
    out_json = tmp_path / "out" / "predictions.json"

    code, out, err = run_cli(capsys, "predict", str(student_file), str(videos), str(missing),
                             "--clips", "3", "--json", str(out_json))
    assert code == 1, out + err  # some videos failed
    lines = out.splitlines()
    for bad in ("c_truncated.mp4", "d_garbage.avi", "missing.mp4"):
        named = [line for line in lines if bad in line]
        assert len(named) == 1 and "unreadable:" in named[0], out
    assert "notes.txt" not in out
    assert "2 predicted, 3 unreadable" in out

    report = json.loads(out_json.read_text())
    by_name = {entry["path"].rsplit("/", 1)[-1]: entry for entry in report["videos"]}
    assert [by_name[n]["ok"] for n in ("a_good.mp4", "b_good.mp4", "c_truncated.mp4",
                                       "d_garbage.avi", "missing.mp4")] == [True, True, False, False, False]
    assert by_name["missing.mp4"]["error"] == "file not found"
    for name, video in (("a_good.mp4", good), ("b_good.mp4", nested)):
        expected = expected_probabilities(student_file, video, 3)
        top = by_name[name]["top"]
        assert len(top) == 3  # three classes: top-5 shows all three
        order = sorted(range(3), key=lambda i: -expected[i])
        assert [entry["class"] for entry in top] == [CLASSES[i] for i in order]
        assert [entry["probability"] for entry in top] == pytest.approx(
            [expected[i] for i in order], abs=1e-6)
        assert sum(entry["probability"] for entry in top) == pytest.approx(1.0, abs=1e-5)
        first = CLASSES[order[0]]
        assert f"1. {first}" in out and f"{expected[order[0]] * 100:6.2f}%" in out

    code, out, _ = run_cli(capsys, "predict", str(student_file), str(good), "--clips", "2")
    assert code == 0 and "1 predicted, 0 unreadable" in out


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity_metadata_and_dynamic_batch(tmp_path, student_file, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        ort = pytest.importorskip("onnxruntime")
    video = make_video(tmp_path / "clip.mp4", 4)
    out_file = tmp_path / "exported" / f"student.{fmt}"
    code, out, err = run_cli(capsys, "export", str(student_file), "--format", fmt, "--out",
                             str(out_file), "--video", str(video), "--repeats", "2")
    assert code == 0, out + err
    assert f"a clip decoded from {video}, batch 1" in out
    assert "reproduces PyTorch's logits to 0.0001" in out
    latency = [line.split() for line in out.splitlines()
               if line.startswith(("  PyTorch eager", "  ONNX Runtime", "  TorchScript"))]
    assert len(latency) == 2, out
    assert all(float(cell) > 0 for line in latency for cell in line[-2:])
    assert "batch 1" in out and "batch 8" in out

    model, description = load_student(student_file)
    model.eval()
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(out_file)).metadata_props}
        protocol = json.loads(props["vidkd"])
        assert json.loads(props["classes"]) == CLASSES
        session = ort.InferenceSession(str(out_file), providers=["CPUExecutionProvider"])

        def run(x):
            return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    else:
        extra = {"vidkd.json": ""}
        module = torch.jit.load(str(out_file), _extra_files=extra)
        protocol = json.loads(extra["vidkd.json"])

        def run(x):
            with torch.no_grad():
                return module(x).numpy()
    assert protocol["classes"] == CLASSES
    assert (protocol["clip_len"], protocol["crop_size"]) == (description["clip_len"], description["crop_size"])
    assert protocol["input_range"] == [-1.0, 1.0]
    for batch in (1, 3):
        clips = torch.rand(batch, 3, description["clip_len"], description["crop_size"],
                           description["crop_size"]) * 2 - 1
        with torch.no_grad():
            expected = model(clips).numpy()
        got = run(clips)
        assert got.shape == (batch, len(CLASSES))
        assert np.abs(got - expected).max() < 1e-4


def test_export_onnx_without_onnx_says_what_to_install(tmp_path, student_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    out_file = tmp_path / "student.onnx"
    code, out, err = run_cli(capsys, "export", str(student_file), "--format", "onnx", "--out", str(out_file))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("vidkd: error:")]
    assert len(lines) == 1 and "pip install onnx onnxruntime" in lines[0] and "onnxruntime" in lines[0]
    assert not out_file.exists() and out == ""


@pytest.mark.parametrize("case", ["json_unwritable", "out_is_dir", "bad_checkpoint", "empty_folder",
                                  "bad_clips", "bad_video"])
def test_predict_export_bad_input_is_one_line(tmp_path, student_file, capsys, case):
    (tmp_path / "a_file").write_text("x")
    good = make_video(tmp_path / "good.mp4", 3)
    if case == "json_unwritable":
        argv = ["predict", str(student_file), str(good), "--json", str(tmp_path / "a_file" / "p.json")]
        expect = "--json"
    elif case == "out_is_dir":
        argv = ["export", str(student_file), "--format", "torchscript", "--out", str(tmp_path)]
        expect = "is a directory"
    elif case == "bad_checkpoint":
        argv = ["predict", str(tmp_path / "a_file"), str(good)]
        expect = "not a readable safetensors file"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        argv = ["predict", str(student_file), str(tmp_path / "empty")]
        expect = "holds no video files"
    elif case == "bad_clips":
        argv = ["predict", str(student_file), str(good), "--clips", "0"]
        expect = "--clips 0"
    else:
        argv = ["export", str(student_file), "--format", "torchscript", "--out",
                str(tmp_path / "s.pt"), "--video", str(tmp_path / "a_file")]
        expect = "--video"
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.startswith("vidkd: error:")]
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("atol", ["0", "-1e-4", "nan", "inf", "tiny"])
def test_export_tolerance_must_be_a_positive_number(atol, student_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["export", str(student_file), "--format", "torchscript", "--out", str(tmp_path / "s.pt"),
              "--atol", atol])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "vidkd export: error: argument --atol: ")
    assert not (tmp_path / "s.pt").exists()


def test_shipped_student_keeps_its_stem(tmp_path, synthetic_cache, tiny_config):
    """A student trained with model.conv1_t_size / conv1_t_stride is rebuilt with that stem
    (its (4, 3, 3, 7, 7) weights would not load into Hara's 7x7x7 one) and gives its logits."""
    values = tiny_config(synthetic_cache, tmp_path / "runs")
    values["model"].update(conv1_t_size=3, conv1_t_stride=2)
    cfg = config_from_dict(values)
    torch.manual_seed(0)
    student = build_student(cfg, len(CLASSES)).eval()
    path = tmp_path / "student.safetensors"
    save_student(path, student, model_description(cfg, CLASSES))
    model, _ = load_student(path)
    model.eval()
    assert model.conv1.weight.shape == (8, 3, 3, 7, 7)
    assert model.conv1.stride == (2, 2, 2)
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(clips), student(clips))


def test_results_name_a_stem_other_than_haras():
    from vidkd.config import ModelConfig
    from vidkd.engine.train import describe_model

    assert describe_model(ModelConfig(depth=18)) == "3D ResNet-18 (width x1.0)"
    assert (describe_model(ModelConfig(depth=10, width_multiplier=0.25, conv1_t_size=3))
            == "3D ResNet-10 (width x0.25, 3x7x7 stem)")
    assert (describe_model(ModelConfig(depth=10, conv1_t_stride=2))
            == "3D ResNet-10 (width x1.0, 7x7x7 stem of temporal stride 2)")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_export_keeps_a_non_hara_stem(tmp_path, synthetic_cache, tiny_config, capsys, fmt):
    """A (3, 2) stem exports and reproduces PyTorch's logits (export checks parity itself)."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    values = tiny_config(synthetic_cache, tmp_path / "runs")
    values["model"].update(conv1_t_size=3, conv1_t_stride=2)
    cfg = config_from_dict(values)
    torch.manual_seed(0)
    path = tmp_path / "student.safetensors"
    save_student(path, build_student(cfg, len(CLASSES)), model_description(cfg, CLASSES))
    code, out, err = run_cli(capsys, "export", str(path), "--format", fmt,
                             "--out", str(tmp_path / f"student.{fmt}"), "--repeats", "1")
    assert code == 0, out + err
    assert "reproduces PyTorch's logits to 0.0001" in out


@pytest.mark.parametrize("stem", [{"conv1_t_size": 10**9}, {"width_multiplier": 1e9}])
def test_a_description_too_large_to_build_is_one_line(tmp_path, student_file, stem):
    """A hand-edited description asking for a network no memory holds: a VidkdError naming
    the file, not the allocator's RuntimeError."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(student_file), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    key = next(k for k, v in metadata.items() if v.lstrip().startswith("{") and "depth" in v)
    description = {**json.loads(metadata[key]), **stem}
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata={**metadata, key: json.dumps(description)})
    with pytest.raises(VidkdError, match="edited.safetensors: its model description is impossible"):
        load_student(edited)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_replaces_its_own_file_whole_or_not_at_all(tmp_path, student_file, monkeypatch, fmt):
    """A second export to the same --out replaces the first; an export that fails half-way
    keeps the first file and leaves no temporary beside it."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
    from vidkd.engine import export

    student, description = load_student(student_file)
    out_file = tmp_path / "shipped" / f"student.{fmt}"
    export.export_student(student, description, fmt, out_file)
    assert export.is_export(out_file, fmt) and not export.is_export(student_file, fmt)
    first = out_file.read_bytes()
    real_writer = export.export_onnx if fmt == "onnx" else export.export_torchscript

    def dies_half_way(model, desc, path):
        real_writer(model, desc, path)
        with open(path, "r+b") as handle:  # as if killed while writing: a truncated file
            handle.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, f"export_{fmt}", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        export.export_student(student, description, fmt, out_file)
    assert out_file.read_bytes() == first and os.listdir(out_file.parent) == [out_file.name]
    monkeypatch.setattr(export, f"export_{fmt}", real_writer)
    description["classes"] = ["a", "b", "c"]  # a different protocol, so the bytes change
    export.export_student(student, description, fmt, out_file)
    assert export.read_metadata(out_file, fmt)["classes"] == ["a", "b", "c"]


def test_export_to_a_full_disk_is_refused_before_writing(tmp_path, student_file, monkeypatch):
    """torch.jit.save aborts the whole process on a full disk, so the space is checked first."""
    from vidkd.engine import export

    student, description = load_student(student_file)
    weights = sum(t.numel() * t.element_size() for t in student.state_dict().values())

    class Usage:
        free = weights // 2

    monkeypatch.setattr(export.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(VidkdError, match=r"the export needs about [0-9.]+ MiB and [0-9.]+ MiB are free"):
        export.export_student(student, description, "torchscript", tmp_path / "out" / "s.pt")
    assert not (tmp_path / "out").exists()  # nothing written, not even its folder


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_that_fails_its_check_is_not_written(tmp_path, student_file, capsys, fmt,
                                                       monkeypatch):
    """Two ways a file must not ship: it differs from PyTorch beyond --atol (it replaced the
    user's good export all the same), and NaN logits (max(0.0, nan) is 0.0: every line said
    TOO LARGE, then "reproduces PyTorch's logits", exit 0)."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from safetensors.torch import load_file, save_file

    out = tmp_path / f"student.{fmt}"
    base = ["export", str(student_file), "--format", fmt, "--out", str(out), "--repeats", "1"]
    assert main(base) == 0
    good = out.read_bytes()
    capsys.readouterr()
    from vidkd.engine import export

    real_difference = export.max_difference
    monkeypatch.setattr(export, "max_difference", lambda *a: real_difference(*a) + 0.5)
    assert main(base) == 1  # (TorchScript matches exactly: no tolerance would fail it)
    err = capsys.readouterr().err
    assert "differs from PyTorch by 5.00e-01" in err and "(the earlier file is kept)" in err
    assert out.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == sorted([out.name, student_file.name])  # no temporary
    monkeypatch.undo()

    from safetensors import safe_open

    with safe_open(str(student_file), "pt") as handle:
        metadata = handle.metadata()
    weights = load_file(str(student_file))
    weights["fc.bias"][1] = float("nan")
    damaged = tmp_path / "damaged.safetensors"
    save_file(weights, str(damaged), metadata=metadata)
    fresh = tmp_path / f"fresh.{fmt}"
    assert main(["export", str(damaged), "--format", fmt, "--out", str(fresh), "--repeats", "1"]) == 1
    out_text = capsys.readouterr()
    assert "reproduces" not in out_text.out and "not finite" in out_text.err
    assert not fresh.exists() and not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def _edited_student(student_file, tmp_path, name, edit_description=None, edit_weights=None):
    """A copy of the student with its stored description or weights changed by hand."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(student_file), "pt") as handle:
        description = json.loads(handle.metadata()["vidkd"])
    weights = load_file(str(student_file))
    if edit_description:
        edit_description(description)
    if edit_weights:
        edit_weights(weights)
    path = tmp_path / f"{name}.safetensors"
    save_file(weights, str(path), metadata={"vidkd": json.dumps(description)})
    return path


@pytest.mark.parametrize("case, expect", [
    ("few_classes", "lists 2 class names for 3 outputs"),
    ("classes_text", "lists no class names for 3 outputs"),
    ("stride_0", "frame_stride=0, outside 1..1024"),
    ("clip_len_0", "clip_len=0, outside"),
    ("crop_negative", "crop_size=-5, outside 4.."),
    ("clip_len_huge", "clip_len=100000, outside"),
    ("nan_weights", "outputs are not finite"),
])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_damaged_student_is_one_line(tmp_path, student_file, capsys, case, expect, command):
    """Each was a traceback (IndexError, ZeroDivisionError, a negative tensor size), an
    out-of-memory kill, or, for export, a file with 3 logits and 2 class names."""
    edits = {
        "few_classes": ({"classes": ["a", "b"]}, None),
        "classes_text": ({"classes": "abc"}, None),
        "stride_0": ({"frame_stride": 0}, None),
        "clip_len_0": ({"clip_len": 0}, None),
        "crop_negative": ({"crop_size": -5}, None),
        "clip_len_huge": ({"clip_len": 100000}, None),
        "nan_weights": ({}, lambda w: w["fc.bias"].__setitem__(0, float("nan"))),
    }
    changes, weights = edits[case]
    path = _edited_student(student_file, tmp_path, case, lambda d: d.update(changes), weights)
    video = make_video(tmp_path / "v.mp4", 1)
    out_file = tmp_path / "s.pt"
    argv = (["predict", str(path), str(video)] if command == "predict" else
            ["export", str(path), "--format", "torchscript", "--out", str(out_file), "--repeats", "1"])
    code, out, err = run_cli(capsys, *argv)
    if case == "nan_weights" and command == "export":
        assert code == 1 and "not finite" in err and not out_file.exists()
        return
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.startswith("vidkd: error:")]
    assert len(lines) == 1 and expect in lines[0] and str(path) in lines[0], err
    assert "Traceback" not in err and not out_file.exists()


def test_predict_names_odd_files_on_one_line_and_never_waits_on_a_fifo(tmp_path, student_file, capsys):
    """A FIFO given as a video hung predict for ever; a newline in a name split its line; a
    name that is not UTF-8 went into the JSON as lone surrogates that strict readers refuse;
    duplicate class names all got index 0."""
    named = _edited_student(student_file, tmp_path, "dup", lambda d: d.update(classes=["x", "x", "y"]))
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "odd\nname.mp4", 1)
    make_video(videos / os.fsdecode(b"bad\xffname.mp4"), 2)
    frames = videos / "frames"  # a frame folder whose bad frame's name is not UTF-8
    frames.mkdir()
    (frames / os.fsdecode(b"img_00001\xff.jpg")).write_bytes(b"junk")
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    (videos / "empty.mp4").write_bytes(b"")
    out_json = tmp_path / "p.json"
    code, out, err = run_cli(capsys, "predict", str(named), str(fifo), str(videos), "--json",
                             str(out_json), "--top", "3")
    assert code == 1, out + err
    assert f"{fifo}: unreadable: not a regular file" in out
    assert "odd\\nname.mp4" in out and "bad\\xffname.mp4" in out
    assert "empty.mp4: unreadable: empty file (0 bytes)" in out
    report = json.loads(out_json.read_text(encoding="utf-8"), parse_constant=float)
    paths = [entry["path"] for entry in report["videos"]]
    assert any(p.endswith("odd\nname.mp4") for p in paths)  # JSON holds a newline as it is
    assert any(p.endswith("bad\\xffname.mp4") for p in paths)
    errors = [entry["error"] for entry in report["videos"] if not entry["ok"]]
    assert all(error.encode("utf-8") for error in errors)  # no lone surrogate in the report
    assert "\udcff" not in out and "img_00001\\xff.jpg" in out
    for entry in report["videos"]:
        if entry["ok"]:
            assert sorted(item["index"] for item in entry["top"]) == [0, 1, 2]


def test_predict_many_clips_in_chunks_equals_one_batch(student_file, tmp_path):
    """--clips up to 1000 went through the network in one batch (24 GB for a ResNet-18)."""
    from vidkd.engine import predict

    model, _ = load_student(student_file)
    model.eval()
    clips = torch.randint(0, 256, (19, 4, 32, 32, 3), dtype=torch.uint8)  # 8 + 8 + 3
    with torch.no_grad():
        logits = model(to_model_input(clips, torch.device("cpu"), channels_last=False))
    expected = logits.softmax(dim=1).mean(dim=0)
    got = predict.video_probabilities(model, clips, torch.device("cpu"))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case, expect", [
    ("run_folder", "is a folder; pass the student file a run ships"),
    ("training_checkpoint", "is a training checkpoint, not a student file"),
    ("cpu_1", "--device='cpu:1' is not a device"),
    ("clips_first", "--clips 0"),
    ("video_folder", "is a folder of videos, not one video"),
    ("broken_onnxruntime", "onnxruntime is installed but does not import"),
])
def test_messages_name_the_real_problem(tmp_path, student_file, capsys, monkeypatch, case, expect):
    video = make_video(tmp_path / "v.mp4", 1)
    argv = ["predict", str(student_file), str(video)]
    if case == "run_folder":
        argv[1] = str(tmp_path)
    elif case == "training_checkpoint":
        checkpoint = tmp_path / "checkpoints" / "epoch_0001"
        checkpoint.mkdir(parents=True)
        (checkpoint / "state.pt").write_bytes(b"x")
        from safetensors.torch import load_file, save_file

        save_file(load_file(str(student_file)), str(checkpoint / "model.safetensors"))
        argv[1] = str(checkpoint / "model.safetensors")
    elif case == "cpu_1":
        argv += ["--device", "cpu:1"]
    elif case == "clips_first":
        argv = ["predict", str(tmp_path / "missing.safetensors"), str(video), "--clips", "0"]
    elif case == "video_folder":
        argv = ["export", str(student_file), "--format", "torchscript", "--out", str(tmp_path / "s.pt"),
                "--video", str(tmp_path)]
    else:
        pytest.importorskip("onnxruntime")
        fake = tmp_path / "fake" / "onnxruntime"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text('raise ImportError("libonnxruntime.so.1: cannot open")\n')
        monkeypatch.syspath_prepend(str(tmp_path / "fake"))
        monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
        argv = ["export", str(student_file), "--format", "onnx", "--out", str(tmp_path / "s.onnx")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.startswith("vidkd: error:")]
    assert len(lines) == 1 and expect in lines[0], err


def test_a_terminated_export_leaves_no_temporary(tmp_path, student_file):
    """SIGTERM (a scheduler's stop, `kill`) while the file was written left an 84 MB hidden
    temporary beside --out; Ctrl-C did not. Both unwind alike now (exit 128 + 15)."""
    import subprocess

    out = tmp_path / "shipped" / "s.pt"
    script = f"""
import os, signal, sys, time
from vidkd.cli import main
from vidkd.engine import export
real = export.export_torchscript
def killed_while_writing(model, description, path):
    real(model, description, path)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
export.export_torchscript = killed_while_writing
sys.argv = ["vidkd", "export", {str(student_file)!r}, "--format", "torchscript", "--out", {str(out)!r}]
sys.exit(main())
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 143, done.stderr[-2000:]
    assert "vidkd: interrupted" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(out.parent) == []


def test_an_empty_json_name_is_refused_not_ignored(tmp_path, student_file, capsys):
    video = make_video(tmp_path / "v.mp4", 1)
    code, _, err = run_cli(capsys, "predict", str(student_file), str(video), "--json", "")
    assert code == 2 and "--json ''" in err


def test_a_command_that_fails_leaves_no_folders_it_made_for_its_outputs(tmp_path, student_file, capsys):
    """A truncated checkpoint with --out in new folders: the error came after the folders
    for --out (and --json) were made, and they stayed."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(student_file.read_bytes()[:1000])
    video = make_video(tmp_path / "v.mp4", 1)
    code, _, _ = run_cli(capsys, "export", str(broken), "--format", "torchscript", "--out",
                         str(tmp_path / "new" / "deeper" / "s.pt"))
    assert code == 2 and not (tmp_path / "new").exists()
    code, _, _ = run_cli(capsys, "predict", str(broken), str(video), "--json",
                         str(tmp_path / "reports" / "p.json"))
    assert code == 2 and not (tmp_path / "reports").exists()
    code, _, _ = run_cli(capsys, "predict", str(student_file), str(video), "--json",
                         str(tmp_path / "reports" / "p.json"))
    assert code == 0 and json.loads((tmp_path / "reports" / "p.json").read_text())["failed"] == 0
