"""Every method trains from its shipped config on real UCF101 clips (../shared/data/ucf101-mini)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidkd.config import load_config
from vidkd.engine.train import train

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
    for method in ["baseline", "baseline_da", "kd", "self_kd", "skd_srl"]:
        overrides = TINY + out
        if method == "kd":
            overrides.append(f"method.teacher.checkpoint={tmp_path}/ucf101-mini-teacher_r34/"
                             "best_student.safetensors")
        summary = train(load_config(ROOT / f"configs/ucf101-mini/{method}.yaml", overrides),
                        progress=False)
        assert summary["method"] == method
        assert summary["test"]["num_videos"] == 63 and not summary["failed_videos"]
        assert (tmp_path / f"ucf101-mini-{method}" / "student.safetensors").is_file()
