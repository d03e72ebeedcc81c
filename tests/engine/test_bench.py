"""``vidkd bench`` on a tiny config: every JSON field, with sane values."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_bench

from vidkd.cli import main
from vidkd.engine import bench, hardware
from vidkd.methods import METHODS


@pytest.mark.timeout(600)
def test_bench_writes_every_field(tmp_path, tiny_config, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "cpu_bf16_step_problem", lambda *shape: None)
    # bf16 runs for real here: without oneDNN, whose bf16 stem gradient crashes on some CPUs
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "bench",
                         method={"name": "skd_srl", "projector_dim": 32, "predictor_hidden": 8})
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(values))
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--steps", "1", "--warmup", "0", "--size", "24",
                 "--frames", "4", "--batch", "2", "--loader-batches", "1",
                 "--set", "train.threads=1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    runnable = [name for name, cls in METHODS.items() if not cls.needs_teacher]
    assert list(report["methods"]) == runnable
    assert set(report["skipped_methods"]) == set(METHODS) - set(runnable)
    assert report["clip"] == [4, 24, 24] and report["batch_videos"] == 2
    assert report["precisions"] == ["fp32", "bf16"] and isinstance(report["native_bf16"], bool)
    assert report["peak_gflops"]["fp32"] > 0 and report["peak_gflops"]["bf16"] > 0
    for name, entry in report["methods"].items():
        assert entry["gflop_per_step"] > 0 and entry["bf16_speedup"] > 0
        for precision in ("fp32", "bf16"):
            e = entry[precision]
            assert e["step_s"] > 0 and e["clips_per_s"] > 0 and e["gflops"] > 0
            # oneDNN is off in this test, which makes the bf16 matmul peak meaningless
            assert 0 < e["fraction_of_peak"] and (precision == "bf16" or e["fraction_of_peak"] < 1.5), name
            assert e["cost_vs_baseline"] > 0 and e["cost_vs_baseline_da"] > 0
            assert e["clips_per_s"] == pytest.approx(e["videos_per_s"] * entry["num_views"])
    assert report["methods"]["baseline"]["fp32"]["cost_vs_baseline"] == 1.0
    assert report["methods"]["baseline_da"]["fp32"]["cost_vs_baseline_da"] == 1.0
    skd = report["methods"]["skd_srl"]
    assert skd["num_views"] == 2
    assert skd["gflop_per_step"] > 1.5 * report["methods"]["baseline"]["gflop_per_step"]
    loader = report["loader"]  # the tiny generated dataset is on disk: measured
    assert loader["skipped"] is False and loader["clips_per_s_per_worker"] > 0
    assert loader["workers_needed"] >= 1 and loader["train_videos"] > 0
    # in the training process each step also waits for its clips: step rate / loader rate
    cost = loader["step_clips_per_s"] / loader["clips_per_s_per_worker"]
    assert loader["in_process_step_cost"] == pytest.approx(cost)
    assert f"(data.num_workers=0) adds {cost:.0%} to a step" in printed
    projection = report["projection"]
    assert projection["method"] == "skd_srl" and projection["epochs"] == 2
    expected = 2 * loader["train_videos"] / skd["fp32"]["videos_per_s"]
    assert projection["seconds"] == pytest.approx(expected)
    assert "baseline_da" in printed and "projected schedule" in printed


@pytest.mark.timeout(600)
def test_bench_without_dataset_skips_the_loader(tmp_path, monkeypatch, capsys):
    """The shipped UCF101 config, its videos absent, shrunk: step figures, loader skipped."""
    problem = "one bf16 training step of this network crashed (test)"
    monkeypatch.setattr(hardware, "cpu_bf16_step_problem", lambda *shape: problem)
    out = tmp_path / "bench.json"
    assert main(["bench", "configs/ucf101/r18_skd_srl.yaml", "--steps", "1", "--warmup", "0",
                 "--size", "16", "--frames", "2", "--batch", "2", "--methods", "baseline,skd_srl",
                 "--set", "model.width_multiplier=0.125", "train.threads=1",
                 "data.root=/nonexistent/UCF-101", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["loader"]["skipped"] and "loader" in capsys.readouterr().out
    assert report["precisions"] == ["fp32"] and problem in report["notes"][0]  # bf16 dropped
    assert report["methods"]["skd_srl"]["fp32"]["cost_vs_baseline_da"] is None
    assert report["projection"]["train_videos"] == round(9537 * 0.9)
    assert report["projection"]["hours"] > 0


def test_bench_times_the_compiled_step_under_train_compile(tmp_path, monkeypatch):
    """``train.compile=true`` compiles the method's step, as ``vidkd train`` does; the bench
    once compiled only the augmentation pass while its header said "compiled"."""
    compiled, forwards = [], []

    class Compiled(torch.nn.Module):  # stands in for torch.compile: counts what it runs
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args):
            forwards.append(type(self.module).__name__)
            return self.module(*args)

    def fake_compile(module, device):
        compiled.append(type(module).__name__)
        return Compiled(module)

    monkeypatch.setattr(hardware, "compile_module", fake_compile)
    out = tmp_path / "bench.json"
    assert main(["bench", "configs/ucf101/r18_skd_srl.yaml", "--steps", "2", "--warmup", "1",
                 "--size", "16", "--frames", "2", "--batch", "2", "--methods", "baseline,skd_srl",
                 "--precisions", "fp32", "--loader-batches", "0",
                 "--set", "model.width_multiplier=0.125", "train.threads=1", "train.compile=true",
                 "data.root=/nonexistent/UCF-101", "--json", str(out)]) == 0
    assert sorted(compiled) == ["Baseline", "SKDSRL"]
    assert sorted(forwards) == ["Baseline"] * 3 + ["SKDSRL"] * 3  # warm-up + 2 timed steps each
    assert json.loads(out.read_text())["compile"] is True


@pytest.mark.parametrize("argument", [["--steps", "0"], ["--steps", "two"], ["--warmup", "-1"],
                                      ["--loader-batches", "-1"], ["--batch", "0"]])
def test_bad_counts_are_one_line_each(argument, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "configs/demo/baseline.yaml", *argument])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"vidkd bench: error: argument {argument[0]}: ")
    assert "below" in error or "whole number" in error


def test_no_loader_batches_still_projects_the_schedule(tmp_path, tiny_config, capsys):
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "bench", train={"epochs": 3})
    report = tiny_bench(tmp_path, values)
    assert report["loader"]["skipped"] and "--loader-batches 0" in report["loader"]["note"]
    # the tiny generated dataset: 3 classes x 6 training videos, 10% of them held out for validation
    videos = report["projection"]["train_videos"]
    assert 0 < videos < 18
    rate = report["methods"]["baseline"]["fp32"]["videos_per_s"]
    assert report["projection"]["seconds"] == pytest.approx(3 * videos / rate)
    seconds = f"{report['projection']['seconds']:.1f} s ("  # under a minute: not "0.0 h"
    assert seconds in capsys.readouterr().out


@pytest.mark.parametrize(("seconds", "printed"), [(0.04, "0.0 s"), (59.9, "59.9 s"),
                                                  (59.96, "1.0 min"), (60, "1.0 min"),
                                                  (3590, "59.8 min"), (3599, "1.0 h"),
                                                  (3600, "1.0 h"), (86400 * 3, "72.0 h")])
def test_projected_durations_keep_their_digits(seconds, printed):
    assert bench._duration(seconds) == printed


@pytest.mark.parametrize(("argument", "expect"), [
    (["--precisions", "fp32,fp64"], "--precisions 'fp32,fp64': unknown fp64; pass some of fp32,bf16,fp16"),
    (["--precisions", ","], "--precisions ',': names nothing"),
    (["--methods", "baseline,skd-srl"], "--methods 'baseline,skd-srl': unknown skd-srl; pass some of baseline,"),
    (["--json", "DIR"], "is a directory: pass a writable file path to --json"),
])
def test_bad_names_and_paths_fail_before_any_step(argument, expect, tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the bench started before its arguments were checked")

    monkeypatch.setattr(bench, "run_bench", no_work)
    argument = [str(tmp_path) if a == "DIR" else a for a in argument]
    assert main(["bench", "configs/demo/baseline.yaml", *argument]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("vidkd: error: ") and expect in error


def test_one_video_batch_that_bn_cannot_normalise_is_one_line(tmp_path, tiny_config, capsys):
    """One 2x16x16 clip leaves layer4's BatchNorm a 1x1x1 map: torch's ValueError was a
    traceback."""
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "bench")
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["bench", str(config), "--steps", "1", "--warmup", "0", "--size", "16",
                 "--frames", "2", "--batch", "1", "--methods", "baseline", "--precisions", "fp32",
                 "--loader-batches", "0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "a training batch of 1 video(s) of 2x16x16 clips leaves a BatchNorm layer" in error
    assert "use train.batch_size=2 or more" in error


def test_fp16_on_a_cpu_is_one_line_before_any_work(monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the bench indexed data or timed a step before refusing fp16")

    monkeypatch.setattr(bench, "_num_classes_and_videos", no_work)
    assert main(["bench", "configs/demo/baseline.yaml", "--precisions", "fp32,fp16",
                 "--set", "train.device=cpu"]) == 2
    error = capsys.readouterr().err
    assert error == ("vidkd: error: vidkd bench --precisions fp16: fp16 autocast is for GPUs; "
                     "on a CPU pass --precisions fp32,bf16\n")


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_loader_is_timed_as_training_reads_it(cache, tmp_path, tiny_config, monkeypatch):
    """Under ``data.cache: memory`` training cuts clips from RAM, so the bench must time that,
    not decoding (which once told the demo to start 3 worker processes it had no use for)."""
    from vidkd.config import config_from_dict
    from vidkd.data import cache as cache_module
    from vidkd.data.decode import open_clip_reader

    opened, cache_opened = [], []  # file opens by the bench's dataset, and by the cache

    def counting_open(log):
        def open_file(path, short_side=None):
            log.append(str(path))
            return open_clip_reader(path, short_side)
        return open_file

    monkeypatch.setattr(bench, "open_clip_reader", counting_open(opened))
    monkeypatch.setattr(cache_module, "open_clip_reader", counting_open(cache_opened))
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "bench")
    values["data"]["cache"] = cache
    loader = bench._loader_rate(config_from_dict(values), num_views=1, batches=2)
    assert loader["skipped"] is False and loader["clips_per_s_per_worker"] > 0
    clips = loader["clips_decoded"]
    assert clips == 2 * values["train"]["batch_size"]
    if cache == "memory":  # the sampled videos were decoded once, before the clock, and no
        # clip came from a file after that (the cache falls back to the files on a miss)
        assert opened == [] and "cut from RAM" in loader["note"]
        assert len(cache_opened) == len(set(cache_opened)) == clips
    else:  # the warm-up clip, then one file open per timed clip
        assert len(opened) == clips + 1 and "decoded from the files" in loader["note"]



def test_loader_note_counts_videos_the_memory_cache_could_not_hold(tmp_path, tiny_config,
                                                                     monkeypatch):
    """A sampled video that fails to decode into the cache is read from its file while the
    clock runs: the note must not say that every clip was cut from RAM."""
    from vidkd.config import config_from_dict
    from vidkd.data.cache import MemoryCache

    decode = MemoryCache._decode
    refused: list[str] = []

    def first_fails(self, path):
        if not refused:
            refused.append(path)
            return None
        return decode(self, path)

    monkeypatch.setattr(MemoryCache, "_decode", first_fails)
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "bench")
    values["data"]["cache"] = "memory"
    loader = bench._loader_rate(config_from_dict(values), num_views=1, batches=2)
    assert loader["skipped"] is False and len(refused) == 1
    assert "1 of them failed to decode into it and was read from its file" in loader["note"]


def test_loader_over_the_cache_budget_is_skipped_with_the_reason(tmp_path, tiny_config):
    from vidkd.config import config_from_dict

    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "bench")
    values["data"].update(cache="memory", cache_budget_mb=1)
    loader = bench._loader_rate(config_from_dict(values), num_views=1, batches=10)
    assert loader["skipped"] is True and "data.cache_budget_mb=1" in loader["note"]
    sampled = min(loader["train_videos"], 10 * values["train"]["batch_size"])
    assert f"the {sampled} training videos it samples already overflow the cache" in loader["note"]
    assert loader["train_videos"] > 0  # the schedule can still be projected


def test_gpu_fp32_peak_is_timed_in_the_convolutions_math_mode(monkeypatch):
    """cuDNN runs fp32 convolutions as TF32 by default, while fp32 matmuls default to strict
    fp32: timed that way, an H200's ResNet-18 step read 121% of "peak". The peak's matmul
    must use the convolutions' mode, and leave the global switch as it found it."""
    seen: list[bool] = []

    def fake_peak(device, dtype, seconds):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return 1.0

    monkeypatch.setattr(bench, "_matmul_peak", fake_peak)
    before = torch.backends.cuda.matmul.allow_tf32  # a module property: no monkeypatch
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _check_peak_math(monkeypatch, seen)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _check_peak_math(monkeypatch, seen: list[bool]) -> None:
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    for cudnn_tf32 in (True, False):
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", cudnn_tf32)
        bench.matmul_peak(gpu, torch.float32)
        assert seen.pop() is cudnn_tf32
        assert bench.fp32_math(gpu) == ("tf32" if cudnn_tf32 else "fp32")
        assert torch.backends.cuda.matmul.allow_tf32 is False  # restored
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    bench.matmul_peak(gpu, torch.bfloat16)
    bench.matmul_peak(cpu, torch.float32)
    assert seen == [False, False] and bench.fp32_math(cpu) == "fp32"
    report = {"fp32_math": "tf32", "peak_gflops": {"fp32": 1.0}}
    assert "TF32" in bench._math_label(report, "fp32") and bench._math_label(report, "bf16") == "bf16"
