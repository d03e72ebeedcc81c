"""DDP is the large batch: two Gloo processes, each fed half of a batch, end a few SGD steps
with the same parameters as one process fed the whole batch (BatchNorm held in eval mode,
since its batch statistics are per process by design; see model.sync_bn)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

WORKER = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from vidkd.engine import distributed
    sys.path.insert(0, sys.argv[2])
    from test_ddp_equivalence import STEPS, batch, build, sgd

    info = distributed.init_distributed(torch.device("cpu"))
    method = build()
    model = DistributedDataParallel(method)
    optimizer = sgd(method)
    for step in range(STEPS):
        clips, labels = batch(step)
        views = method.num_views
        # this rank's videos, both views of each video together (as DistributedSampler gives)
        videos = torch.arange(labels.shape[0])[info.rank::info.world_size]
        rows = (videos[:, None] * views + torch.arange(views)).flatten()
        loss = model(clips[rows], labels[videos])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if info.is_main:
        torch.save(method.state_dict(), sys.argv[1])
    distributed.cleanup()
''')

STEPS = 3
VIDEOS = 8


def build() -> nn.Module:
    """An SKD-SRL method on a tiny student, identical in every process; BN frozen."""
    from vidkd.methods import SKDSRL
    from vidkd.models.resnet3d import resnet3d

    torch.manual_seed(0)
    method = SKDSRL(resnet3d(10, 4, width_multiplier=0.125), projector_dim=32, predictor_hidden=8)
    original_train = method.train

    def train(mode: bool = True):
        original_train(mode)
        for module in method.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return method

    method.train = train  # type: ignore[method-assign]
    return method.train()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    clips = torch.randn(VIDEOS * 2, 3, 4, 32, 32, generator=generator)
    return clips, torch.arange(VIDEOS) % 4


def sgd(method: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


@pytest.mark.timeout(240)
def test_two_gloo_processes_equal_one_process_on_the_combined_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ddp.pt"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(out),
         str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, timeout=220,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    method = build()
    optimizer = sgd(method)
    start = {k: v.clone() for k, v in method.state_dict().items()}
    for step in range(STEPS):
        clips, labels = batch(step)
        loss = method(clips, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    single = method.state_dict()
    moved = [k for k in single if not torch.equal(single[k], start[k])]
    assert any(k.startswith("student.conv1") for k in moved) and any("predictor" in k for k in moved)
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
