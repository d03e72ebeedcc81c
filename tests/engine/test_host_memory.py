"""``train.reuse_host_memory``: freed CPU tensors stay in glibc's heap for the next step."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch
import yaml

from vidkd.cli import main
from vidkd.config import config_from_dict
from vidkd.engine import hardware
from vidkd.engine.train import evaluate_student, train

# A 64 MB tensor made and freed 30 times: the page faults of the last 5, on stdout.
_REALLOCATE = """
import resource, sys, torch
from vidkd.engine.hardware import reuse_host_memory
if sys.argv[1] == "reuse":
    assert reuse_host_memory() is None
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensor = torch.empty(16 * 2**20)
    tensor.fill_(1.0)
    del tensor
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-5:]))
"""


def _late_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _REALLOCATE, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_tensors_are_not_faulted_in_again():
    # glibc unmaps a freed 64 MB block, so the next one faults in every page again: 16384 4-KiB
    # pages a tensor, or at least 32 where the kernel backs it with 2-MiB pages
    refaulted = _late_faults("system")
    assert refaulted >= 5 * 32
    # kept in the heap, the same pages are reused; a few may fault while the heap settles
    assert _late_faults("reuse") < refaulted / 10


def test_not_applied_when_off_or_on_a_gpu(monkeypatch):
    def must_not_run():
        raise AssertionError("mallopt called")

    monkeypatch.setattr(hardware, "reuse_host_memory", must_not_run)
    assert hardware.apply_reuse_host_memory(False, torch.device("cpu")) == (False, None)
    assert hardware.apply_reuse_host_memory(True, torch.device("cuda")) == (False, None)


def test_another_c_library_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert hardware.reuse_host_memory() == "the C library is not glibc (Linux musl)"
    applied, problem = hardware.apply_reuse_host_memory(True, torch.device("cpu"))
    assert not applied
    assert problem.startswith("train.reuse_host_memory: the C library is not glibc")
    assert "train.reuse_host_memory=false" in problem and "\n" not in problem


@pytest.mark.parametrize("enabled", [True, False])
def test_train_eval_and_bench_apply_the_key(enabled, tmp_path, synthetic_cache, tiny_config,
                                       monkeypatch, capsys):
    calls: list[str] = []
    monkeypatch.setattr(hardware, "reuse_host_memory", lambda: calls.append("mallopt"))
    values = tiny_config(synthetic_cache, tmp_path, train={"epochs": 1, "reuse_host_memory": enabled})
    cfg = config_from_dict(values)
    train(cfg, progress=False)
    assert calls == (["mallopt"] if enabled else [])
    calls.clear()
    evaluate_student(cfg, tmp_path / "tiny" / "student.safetensors", progress=False)  # vidkd eval
    assert calls == (["mallopt"] if enabled else [])

    calls.clear()
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(values))
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--steps", "1", "--warmup", "0", "--size", "16",
                 "--frames", "2", "--batch", "2", "--methods", "baseline", "--precisions", "fp32",
                 "--loader-batches", "0", "--json", str(out)]) == 0
    assert calls == (["mallopt"] if enabled else [])
    assert json.loads(out.read_text())["host_memory_reused"] is enabled
    assert ("freed host memory reused" in capsys.readouterr().out) is enabled
