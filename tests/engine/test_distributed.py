"""DDP through torchrun: two CPU processes (Gloo) train, validate and agree on the result."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import set_single_process_group_env, torchrun_train
from safetensors.torch import load_file


@pytest.mark.timeout(300)
def test_torchrun_two_processes(tmp_path, tiny_config):
    values = tiny_config(tmp_path / "cache", tmp_path / "runs", "ddp",
                         method={"name": "skd_srl", "projector_dim": 32, "predictor_hidden": 8},
                         eval={"student": "last"})
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(values))
    result = torchrun_train(config, 2, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    from vidkd.config import load_config
    from vidkd.data.build import build_splits

    splits = build_splits(load_config(config).data, progress=False)
    summary = json.loads((run / "results.json").read_text())
    # evaluation is sharded without padding and summed over ranks: every test video once
    assert summary["test"]["num_videos"] == len(splits.test)
    # and every rank scored rank 0's last student (its BatchNorm statistics too, which DDP
    # leaves different on each rank): the shipped file scores the same in one process
    from vidkd.engine.train import evaluate_student

    alone, _ = evaluate_student(load_config(config), run / "student.safetensors", progress=False)
    assert summary["tested_student"] == "student.safetensors"
    assert (alone.video_top1, alone.clip_top1) == pytest.approx(
        (summary["test"]["video_top1"], summary["test"]["clip_top1"]))
    weights = load_file(str(run / "student.safetensors"))
    assert not any(key.startswith("module.") for key in weights)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert len(epochs) == 2  # rank 0 alone writes the log


def test_single_process_under_torchrun_joins_the_group(monkeypatch):
    """``torchrun --nproc-per-node 1`` runs the DDP path too (how a user checks NCCL on one GPU)."""

    import torch
    import torch.distributed as dist

    from vidkd.engine import distributed

    assert not distributed.init_distributed(torch.device("cpu")).enabled  # plain process
    set_single_process_group_env(monkeypatch)
    try:
        info = distributed.init_distributed(torch.device("cpu"))
        assert info.enabled and info.world_size == 1 and info.is_main
        assert dist.get_backend() == "gloo"
        assert distributed.all_reduce_sum(torch.tensor([3.0])).item() == 3.0
    finally:
        distributed.cleanup()
    assert not dist.is_initialized()


BROADCAST_WORKER = '''
import sys
import torch
from vidkd.engine import distributed

info = distributed.init_distributed(torch.device("cpu"))
module = torch.nn.BatchNorm1d(3)
with torch.no_grad():
    module.weight.fill_(info.rank + 1.0)
module.running_mean.fill_(10.0 * (info.rank + 1))
module.num_batches_tracked.fill_(info.rank + 7)
distributed.broadcast_module(module)
torch.save(module.state_dict(), f"{sys.argv[1]}/rank{info.rank}.pt")
distributed.cleanup()
'''


@pytest.mark.timeout(120)
def test_broadcast_module_gives_every_rank_rank_zeros_weights(tmp_path):
    """The test split is scored by every rank with the best student that rank 0 read: a node
    that cannot see rank 0's run directory must not score its own last weights instead."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    script = tmp_path / "worker.py"
    script.write_text(BROADCAST_WORKER)
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=110,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        state = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(state["weight"], torch.ones(3))  # rank 0 filled 1.0, rank 1 2.0
        assert torch.equal(state["running_mean"], torch.full((3,), 10.0))
        assert int(state["num_batches_tracked"]) == 7


def test_nccl_group_is_bound_to_this_process_gpu(monkeypatch):
    """Under torchrun on GPUs, NCCL is told which GPU the rank owns (``device_id``); without
    it, NCCL guesses from the global rank and warns that this can hang (seen on an H200)."""
    import torch
    import torch.distributed as dist

    from vidkd.engine import distributed

    calls: list[tuple[tuple, dict]] = []
    chosen: list[torch.device] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    gpu = torch.device("cuda", 1)
    info = distributed.init_distributed(gpu)
    assert info.rank == 5 and info.local_rank == 1
    assert chosen == [gpu]
    assert calls == [(("nccl",), {"device_id": gpu})]
    calls.clear()
    distributed.init_distributed(torch.device("cpu"))
    assert calls == [(("gloo",), {})]  # gloo takes no device
