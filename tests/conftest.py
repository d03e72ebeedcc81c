"""Fixtures shared by the whole suite: the real sample data and tiny run configurations."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class FakeGlibc:
    """Records ``mallopt`` and ``malloc_trim`` instead of changing this process's allocator."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int] | tuple[str, int]] = []
        self.refuse: set[int] = set()  # mallopt parameters it answers 0 (refused) for

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 0 if parameter in self.refuse else 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture(autouse=True)
def fake_glibc(monkeypatch) -> FakeGlibc:
    """glibc's allocator settings belong to the whole process: tests that train record them
    here, so that no test changes how later ones allocate (subprocesses get the real glibc)."""
    from vidkd.engine import hardware

    fake = FakeGlibc()
    monkeypatch.setattr(hardware, "_glibc", lambda: fake)
    monkeypatch.setattr(hardware, "_reusing", False)
    monkeypatch.setattr(hardware, "_allocator_chosen_by_environment", lambda: None)
    return fake


@pytest.fixture
def shared() -> Path:
    """The real sample data (``../shared/data``): skipped when absent, required under CI."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is required under CI (real dataset samples)")
        pytest.skip(f"{SHARED} is absent: the real dataset samples are not in this session")
    return SHARED


def _tiny_config(cache: Path, out_dir: Path, name: str = "tiny", **sections: Any) -> dict[str, Any]:
    """A run on a 3-class generated dataset with a depth-10 network at 1/8 width."""
    values: dict[str, Any] = {
        "name": name,
        "data": {
            "dataset": "synthetic",
            "synthetic": {"num_classes": 3, "train_per_class": 6, "test_per_class": 2, "size": 32,
                          "cache_dir": str(cache)},
            "clip_len": 4, "short_side": 32, "crop_size": 32, "test_clips": 2, "val_clips": 1,
            "num_workers": 0,
        },
        "model": {"depth": 10, "width_multiplier": 0.125},
        "method": {"name": "baseline"},
        "train": {"epochs": 2, "batch_size": 4, "out_dir": str(out_dir), "log_every": 1},
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return values


@pytest.fixture
def tiny_config() -> Callable[..., dict[str, Any]]:
    """``tiny_config(cache, out_dir, name, **sections)`` -> a config dict for a tiny run."""
    return _tiny_config


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vidkd-cache")


def sgd_steps(method: nn.Module, clips: Tensor, labels: Tensor, steps: int = 1,
              lr: float = 0.05) -> list[dict[str, float]]:
    """``steps`` SGD steps on one fixed batch, as the engine does them; the loss terms seen."""
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr,
                                momentum=0.9)
    method.train()
    history = []
    for _ in range(steps):
        losses = method(clips, labels)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return history


def tiny_bench(tmp_path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """``vidkd bench`` of the config ``values``: one fp32 baseline step on 2x16x16 clips, no
    loader batches; the JSON report."""
    import yaml

    from vidkd.cli import main

    config, out = tmp_path / "bench.yaml", tmp_path / "bench.json"
    config.write_text(yaml.safe_dump(values))
    assert main(["bench", str(config), "--steps", "1", "--warmup", "0", "--size", "16",
                 "--frames", "2", "--batch", "2", "--methods", "baseline", "--precisions", "fp32",
                 "--loader-batches", "0", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def tiny_demo_overrides(out_dir: Path, cache: Path) -> list[str]:
    """``--set`` values that shrink a configs/demo row to a seconds-long CPU run."""
    return [f"train.out_dir={out_dir}", f"data.synthetic.cache_dir={cache}",
            "data.synthetic.num_classes=3", "data.synthetic.train_per_class=6",
            "data.synthetic.test_per_class=2", "data.synthetic.size=32", "data.short_side=32",
            "data.crop_size=32", "data.clip_len=4", "data.test_clips=2", "data.val_clips=1",
            "data.num_workers=0", "train.epochs=1", "model.width_multiplier=0.125"]


def torchrun_train(config: Path, processes: int, timeout: int) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m vidkd.cli train -c CONFIG -q``, 1 thread each."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", str(processes), "-m", "vidkd.cli",
         "train", "-c", str(config), "-q"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout,
    )


def set_single_process_group_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment torchrun gives one process (rank 0 of 1, a free local port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)


def png_frames(folder: Path, count: int, size: int = 32) -> None:
    """A lossless frame folder ``img_00001.png`` ... whose frame ``n`` is grey level ``10 n``."""
    import av
    import numpy as np

    folder.mkdir(parents=True)
    for number in range(1, count + 1):
        with av.open(str(folder / f"img_{number:05d}.png"), mode="w", format="image2") as out:
            stream = out.add_stream("png", rate=1)
            stream.width, stream.height, stream.pix_fmt = size, size, "rgb24"
            image = np.full((size, size, 3), 10 * number, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
