"""``train.compile``: a compiled run trains, resumes, evaluates and runs under DDP; the
bf16 warning on CPUs without native bf16; a clear error where compiling cannot work."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import torchrun_train
from safetensors.torch import load_file

from vidkd.config import config_from_dict
from vidkd.engine import hardware
from vidkd.engine.train import train
from vidkd.errors import VidkdError

SKD = {"name": "skd_srl", "projector_dim": 32, "predictor_hidden": 8,
       "augment": {"full": True}}  # the compiled augmentation pass runs too


def _epochs(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if json.loads(line)["kind"] == "epoch"]


def _step_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if json.loads(line)["kind"] == "step"]


@pytest.mark.timeout(900)
def test_compiled_run_trains_resumes_and_evaluates(tmp_path, synthetic_cache, tiny_config):
    """Under compile, resume is not promised to be bitwise; a compiled run resumed after
    epoch 1 ends within float32 tolerance of an unbroken compiled run. Against eager, only
    the first step's loss is equal (to 1e-5): the kernels round differently and training
    amplifies it."""
    def config(out: str, epochs: int, compiled: bool):
        return config_from_dict(tiny_config(synthetic_cache, tmp_path / out, method=SKD,
                                            train={"epochs": epochs, "compile": compiled}))

    summary = train(config("full", 2, True), progress=False)
    assert 0.0 <= summary["test"]["video_top1"] <= 100.0 and summary["test"]["num_videos"] == 6
    train(config("resumed", 1, True), progress=False)
    train(config("resumed", 2, True), resume=True, progress=False)
    train(config("eager", 2, False), progress=False)
    weights = {name: load_file(str(tmp_path / name / "tiny" / "student.safetensors"))
               for name in ("full", "resumed", "eager")}
    assert weights["resumed"].keys() == weights["full"].keys() == weights["eager"].keys()
    for key, value in weights["full"].items():
        torch.testing.assert_close(weights["resumed"][key], value, msg=key)
    losses = {name: _step_losses(tmp_path / name / "tiny") for name in ("full", "eager")}
    # the first step equals eager's; later steps drift as training amplifies the rounding
    assert losses["full"][0] == pytest.approx(losses["eager"][0], rel=1e-5)
    assert len(losses["full"]) == len(losses["eager"]) and all(map(math.isfinite, losses["full"]))
    assert _epochs(tmp_path / "resumed" / "tiny") == [1, 2]
    assert json.loads((tmp_path / "resumed" / "tiny" / "results.json").read_text())["test"]


def test_compile_is_free_to_change_on_resume(tmp_path, synthetic_cache, tiny_config):
    first = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(first, progress=False)
    again = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1,
                                                                            "compile": True}))
    train(again, resume=True, progress=False)  # nothing left to train; no --force needed


def test_compile_without_a_compiler_is_one_clear_error(tmp_path, synthetic_cache, tiny_config,
                                                       monkeypatch):
    monkeypatch.setattr(hardware, "compile_unavailable", lambda device: "no working C++ compiler")
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"compile": True}))
    with pytest.raises(VidkdError, match="train.compile=true cannot run on cpu: no working C"):
        train(cfg, progress=False)


@pytest.mark.parametrize("precision, warning", [("bf16", "without AVX512-BF16 or AMX"),
                                                ("fp16", "fp16 autocast is for GPUs")])
def test_a_slow_cpu_precision_warns_before_training(
    tmp_path, synthetic_cache, tiny_config, monkeypatch, caplog, precision, warning
):
    """The warning comes before any work. The run is stopped right after it, and the bf16
    probe is off: the tiny clips here (4 frames) crash oneDNN's bf16 stem gradient on some
    CPUs with native bf16 (torch 2.13), like this one; that refusal is tested below."""
    import vidkd.engine.train as train_module

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(train_module, "cpu_bf16_step_problem", lambda *shape: None)
    monkeypatch.setattr(train_module, "_train", stop)
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={
        "epochs": 1, "precision": precision}))
    with caplog.at_level(logging.INFO, logger="vidkd"), pytest.raises(Stop):
        train(cfg, progress=False)
    messages = [record.getMessage() for record in caplog.records]
    assert sum(warning in m for m in messages) == 1


def test_bf16_that_crashes_on_this_cpu_is_refused_before_anything_is_written(
    tmp_path, synthetic_cache, tiny_config, monkeypatch
):
    import vidkd.engine.train as train_module

    shapes = []

    def crashes(*shape):
        shapes.append(shape)
        return "one bf16 training step of this network on 4x32x32 clips crashed (test)"

    monkeypatch.setattr(train_module, "cpu_bf16_step_problem", crashes)
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={
        "epochs": 1, "precision": "bf16"}, model={"conv1_t_size": 3}))
    with pytest.raises(VidkdError, match="crashed.*train.precision=fp32"):
        train(cfg, progress=False)
    d, m = cfg.data, cfg.model
    # the config's own network (stem included) and clip shape
    assert shapes == [(m.depth, m.width_multiplier, d.clip_len, d.crop_size, 3, 1)]
    assert not (Path(cfg.train.out_dir) / cfg.name).exists()


@pytest.mark.timeout(120)
def test_bf16_probe_passes_a_shape_that_trains():
    """A real child process: an 8-frame clip trains in bf16 on every CPU (native or emulated);
    a probe script that breaks would report every shape as crashed."""
    assert hardware.cpu_bf16_step_problem(10, 0.125, 8, 32) is None
    assert hardware.cpu_bf16_step_problem(10, 0.125, 8, 32, 3, 2) is None  # the stem's settings


def test_bf16_probe_reports_a_crash_and_a_hang_without_dying(monkeypatch):
    monkeypatch.setattr(hardware, "_BF16_PROBE", "import os; os.abort()")
    assert "8x32x32 clips crashed" in hardware.cpu_bf16_step_problem(10, 0.125, 8, 32)
    monkeypatch.setattr(hardware, "_BF16_PROBE", "import time; time.sleep(60)")
    assert "hung for 2s" in hardware.cpu_bf16_step_problem(10, 0.125, 8, 32, timeout=2)


def test_slow_precision_warnings(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: True)
    assert hardware.precision_warning("bf16", cpu) is None
    assert "fp16 autocast is for GPUs" in hardware.precision_warning("fp16", cpu)
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: False)
    assert "AVX512-BF16" in hardware.precision_warning("bf16", cpu)
    assert hardware.precision_warning("fp32", cpu) is None
    assert all(hardware.precision_warning(p, cuda) is None for p in ("fp32", "bf16", "fp16"))


def test_native_bf16_detection_reads_cpu_flags(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "model name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert hardware.cpu_native_bf16() and hardware.cpu_model() == "X"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "flags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert hardware.cpu_native_bf16()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "flags\t\t: fpu avx2 fma\n")
    assert not hardware.cpu_native_bf16()


@pytest.mark.timeout(900)
def test_compiled_ddp_two_processes(tmp_path, tiny_config):
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "ddp", method=SKD,
                         train={"epochs": 1, "compile": True})
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(values))
    result = torchrun_train(config, 2, timeout=880)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    assert json.loads((run / "results.json").read_text())["test"]["num_videos"] == 6
    assert not any(key.startswith(("module.", "_orig_mod."))
                   for key in load_file(str(run / "student.safetensors")))
    assert _epochs(run) == [1]
