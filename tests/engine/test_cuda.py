"""The CUDA path: augmentation on the GPU, AMP training (bf16, fp16 + GradScaler), GPU eval.

Skipped where there is no GPU (CI has none); run on a GPU machine with
``python -m pytest tests/engine/test_cuda.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

from vidkd.config import config_from_dict
from vidkd.data.augment import AugmentConfig, ClipAugment
from vidkd.engine.train import evaluate_student, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("compiled", [False, True])  # training compiles it on a GPU
def test_augment_on_gpu_matches_cpu(compiled):
    augment = ClipAugment(AugmentConfig(), compiled=compiled)  # all but the (off) noise
    generator = torch.Generator().manual_seed(0)
    clips = torch.rand(16, 3, 4, 24, 24, generator=generator) * 2 - 1
    params = augment.sample_params(16, generator=generator)
    on_cpu = augment.apply(clips, params)
    on_gpu = augment.apply(clips.cuda(), {k: v.cuda() for k, v in params.items()})
    assert on_gpu.device.type == "cuda"
    assert "noise" not in params and params["blur"].any() and params["hue"].any()
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision, method", [("bf16", "skd_srl"), ("fp16", "baseline_da"),
                                               ("fp32", "baseline")])
def test_training_on_gpu(tmp_path, synthetic_cache, tiny_config, precision, method):
    extra = {"projector_dim": 32, "predictor_hidden": 8} if method == "skd_srl" else {}
    cfg = config_from_dict(tiny_config(
        synthetic_cache, tmp_path, f"gpu-{precision}",
        method={"name": method, **extra}, train={"device": "cuda", "precision": precision},
    ))
    summary = train(cfg, progress=False)
    run = tmp_path / f"gpu-{precision}"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["kind"] == "epoch"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    # the shipped student scores the same on the GPU as in the run that trained it
    result, description = evaluate_student(cfg, run / "best_student.safetensors", progress=False)
    assert description["depth"] == 10
    assert result.video_top1 == pytest.approx(summary["test"]["video_top1"], abs=1e-6)
