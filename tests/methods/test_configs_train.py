"""Every method trains from its shipped configs: the embedded default (configs/demo) and real
UCF101 clips (configs/ucf101-mini, on ../shared/data/ucf101-mini)."""

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


@pytest.mark.timeout(600)
def test_every_method_trains_from_its_demo_config(tmp_path, synthetic_cache, monkeypatch):
    """configs/demo/*.yaml as shipped, on a smaller draw of the same generated dataset."""
    monkeypatch.chdir(ROOT)
    small = [f"train.out_dir={tmp_path}", f"data.synthetic.cache_dir={synthetic_cache}",
             "data.synthetic.num_classes=3", "data.synthetic.train_per_class=6",
             "data.synthetic.test_per_class=2", "data.synthetic.size=32", "data.short_side=32",
             "data.crop_size=32", "data.clip_len=4", "data.test_clips=2", "data.val_clips=1",
             "data.num_workers=0", "train.epochs=1", "model.width_multiplier=0.125",
             "method.projector_dim=64", "method.predictor_hidden=16"]
    teacher = train(load_config(ROOT / "configs/demo/teacher.yaml", small), progress=False)
    assert teacher["method"] == "baseline"
    for method in ["baseline", "baseline_da", "kd", "self_kd", "skd_srl", "frskd"]:
        config = load_config(ROOT / f"configs/demo/{method}.yaml", small + (
            [f"method.teacher.checkpoint={tmp_path}/demo-teacher/best_student.safetensors"]
            if method == "kd" else []))
        assert (config.train.seed, config.train.epochs) == (0, 1)  # same seed for every row
        summary = train(config, progress=False)
        assert summary["method"] == method and summary["test"]["num_videos"] == 6
        assert (tmp_path / f"demo-{method}" / "student.safetensors").is_file()


def test_demo_rows_share_data_schedule_and_seed():
    """The demo compares methods, so every row differs from demo-baseline only in its method."""
    base = load_config(ROOT / "configs/demo/baseline.yaml")
    for method in ["baseline_da", "kd", "self_kd", "skd_srl", "frskd"]:
        row = load_config(ROOT / f"configs/demo/{method}.yaml")
        assert (row.data, row.optim, row.train, row.model) == (
            base.data, base.optim, base.train, base.model), method
        assert row.method.name == method
