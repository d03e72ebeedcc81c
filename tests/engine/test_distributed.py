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
                         method={"name": "skd_srl", "projector_dim": 32, "predictor_hidden": 8})
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
