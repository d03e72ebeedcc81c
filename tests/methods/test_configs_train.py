"""Every method trains from its shipped configs: the embedded default (configs/demo) and real
UCF101 clips (configs/ucf101-mini, on ../shared/data/ucf101-mini)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import tiny_demo_overrides

import vidkd.engine.train as engine
from vidkd.config import load_config
from vidkd.engine.checkpoint import load_student
from vidkd.engine.train import evaluate_student, train
from vidkd.methods import Method
from vidkd.models import AttentionResNet3D

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.width_multiplier=0.125", "model.depth=10", "train.epochs=1", "data.clip_len=4",
        "data.short_side=32", "data.crop_size=32", "data.test_clips=1", "data.num_workers=1",
        "method.projector_dim=64", "method.predictor_hidden=16"]


@pytest.mark.timeout(600)
def test_every_method_trains_from_its_ucf101_mini_config(tmp_path, monkeypatch, shared):
    monkeypatch.chdir(ROOT)  # the configs name ../shared/data relative to the repository root
    out = [f"train.out_dir={tmp_path}"]
    teacher = train(load_config(ROOT / "configs/ucf101-mini/teacher_r34.yaml",
                                TINY + out + ["model.depth=18"]), progress=False)
    assert teacher["test"]["num_videos"] == 63  # split 1 test videos present in ucf101-mini
    for method in ["baseline", "baseline_da", "kd", "self_kd", "skd_srl", "frskd"]:
        overrides = TINY + out
        if method == "kd":
            overrides.append(f"method.teacher.checkpoint={tmp_path}/ucf101-mini-teacher_r34/"
                             "best_student.safetensors")
        summary = train(load_config(ROOT / f"configs/ucf101-mini/{method}.yaml", overrides),
                        progress=False)
        assert summary["method"] == method
        assert summary["test"]["num_videos"] == 63 and not summary["failed_videos"]
        assert (tmp_path / f"ucf101-mini-{method}" / "student.safetensors").is_file()

    # generative feature KD: phase 1 (a wider teacher, so the student needs its adapter),
    # then phase 2 from the phase-1 file
    phase_one = train(load_config(ROOT / "configs/ucf101-mini/generative_kd_teacher.yaml",
                                  TINY + out + ["model.width_multiplier=0.25"]), progress=False)
    assert phase_one["method"] == "generative_kd_teacher" and not phase_one["failed_videos"]
    phase_two = train(load_config(ROOT / "configs/ucf101-mini/generative_kd.yaml", TINY + out + [
        f"method.teacher.checkpoint={tmp_path}/ucf101-mini-generative_kd_teacher/"
        "best_student.safetensors"]), progress=False)
    assert phase_two["method"] == "generative_kd" and phase_two["test"]["num_videos"] == 63
    assert (tmp_path / "ucf101-mini-generative_kd" / "student.safetensors").is_file()


@pytest.mark.timeout(600)
def test_every_method_trains_from_its_demo_config(tmp_path, synthetic_cache, monkeypatch):
    """configs/demo/*.yaml as shipped, on a smaller draw of the same generated dataset."""
    monkeypatch.chdir(ROOT)
    small = tiny_demo_overrides(tmp_path, synthetic_cache)
    built: list[Method] = []
    real_build = engine.build_method

    def keep(cfg, num_classes):
        built.append(real_build(cfg, num_classes))
        return built[-1]

    monkeypatch.setattr(engine, "build_method", keep)
    teacher_cfg = load_config(ROOT / "configs/demo/generative_kd_teacher.yaml",
                              small + ["model.width_multiplier=0.25"])  # twice the student's
    phase_one = train(teacher_cfg, progress=False)
    assert phase_one["method"] == "generative_kd_teacher" and phase_one["test"]["num_videos"] == 6
    teacher_file = tmp_path / "demo-generative_kd_teacher" / phase_one["tested_student"]
    result, description = evaluate_student(teacher_cfg, teacher_file, progress=False)
    assert result.num_videos == 6 and description["cvae"] is True
    assert result.video_top1 == pytest.approx(phase_one["test"]["video_top1"])

    config = load_config(ROOT / "configs/demo/generative_kd.yaml",
                         small + [f"method.teacher.checkpoint={teacher_file}"])
    assert (config.train.seed, config.train.epochs) == (0, 1)
    phase_two = train(config, progress=False)
    assert phase_two["method"] == "generative_kd" and phase_two["test"]["num_videos"] == 6
    method = built[-1]
    student, meta = load_student(tmp_path / "demo-generative_kd" / "student.safetensors")
    assert isinstance(student, AttentionResNet3D) and student.cvae is None
    assert meta["channels"] == 128 and not isinstance(student.adapter, torch.nn.Identity)
    clips = torch.randn(3, 3, 4, 32, 32)
    method.student.eval()
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(student(clips), method.student(clips.contiguous(
            memory_format=torch.channels_last_3d)))


def test_demo_rows_share_data_schedule_and_seed():
    """The demo compares methods, so every row differs from demo-baseline only in its method,
    and skd_srl in its lr: half the baseline's, as Eq. 5 sums one cross-entropy per view."""
    base = load_config(ROOT / "configs/demo/baseline.yaml")
    for method in ["baseline_da", "kd", "self_kd", "skd_srl", "frskd", "generative_kd"]:
        row = load_config(ROOT / f"configs/demo/{method}.yaml")
        optim = base.optim
        if method == "skd_srl":
            optim = dataclasses.replace(base.optim, lr=base.optim.lr / 2)
        assert (row.data, row.optim, row.train, row.model, row.eval) == (
            base.data, optim, base.train, base.model, base.eval), method
        assert row.method.name == method
    # the teachers differ in their network only
    for teacher, method in [("teacher", "baseline"),
                            ("generative_kd_teacher", "generative_kd_teacher")]:
        row = load_config(ROOT / f"configs/demo/{teacher}.yaml")
        assert (row.data, row.optim, row.train, row.eval) == (
            base.data, base.optim, base.train, base.eval), teacher
        assert row.method.name == method


def test_generative_kd_configs_name_their_phase_one_config_first():
    for phase_two in ROOT.glob("configs/*/*generative_kd.yaml"):
        first_line = phase_two.read_text().splitlines()[0]
        named = first_line.split("Teacher: ", 1)[1].split()[0]
        assert (ROOT / named).is_file(), phase_two
        phase_one = load_config(ROOT / named)
        assert phase_one.method.name == "generative_kd_teacher", phase_two
        row = load_config(phase_two)
        tested = "best_student" if phase_one.eval.student == "best" else "student"  # what it tests
        assert row.method.teacher.checkpoint == f"runs/{phase_one.name}/{tested}.safetensors"
        assert row.data == phase_one.data
