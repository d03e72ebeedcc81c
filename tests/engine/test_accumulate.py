"""Gradient accumulation: ``accumulate_steps`` batches of b videos make the same optimiser
step as one batch of k * b videos, once BatchNorm's batch statistics are taken out of the
comparison (BN held in eval mode)."""

from __future__ import annotations

import pytest
import torch
from conftest import set_single_process_group_env
from safetensors.torch import load_file
from torch import nn

from vidkd.config import config_from_dict
from vidkd.engine.train import train
from vidkd.errors import VidkdError
from vidkd.methods.baseline import Baseline


def bn_frozen_train(self: Baseline, mode: bool = True) -> Baseline:
    nn.Module.train(self, mode)
    for module in self.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eval()  # running statistics, not the batch's: the step no longer depends on b
    return self


def run(tiny_config, cache, out, batch: int, accumulate: int) -> dict[str, torch.Tensor]:
    values = tiny_config(cache, out, f"b{batch}-a{accumulate}",
                         method={"name": "baseline", "augment": {"full": False, "flip": False}})
    values["train"].update({"epochs": 1, "batch_size": batch, "accumulate_steps": accumulate})
    train(config_from_dict(values), progress=False)
    return load_file(str(out / f"b{batch}-a{accumulate}" / "student.safetensors"))


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor],
                        unlike: dict[str, torch.Tensor]) -> None:
    """``got`` equals ``want`` to float tolerance, and ``unlike`` does not (so the check can fail)."""
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.allclose(unlike[k], want[k], rtol=1e-4, atol=1e-6) for k in want)


def test_accumulated_steps_equal_the_large_batch(tmp_path, synthetic_cache, tiny_config, monkeypatch):
    monkeypatch.setattr(Baseline, "train", bn_frozen_train)
    large = run(tiny_config, synthetic_cache, tmp_path, batch=8, accumulate=1)
    accumulated = run(tiny_config, synthetic_cache, tmp_path, batch=4, accumulate=2)
    small = run(tiny_config, synthetic_cache, tmp_path, batch=4, accumulate=1)
    # the comparison can fail: four steps of 4 videos land elsewhere than two steps of 8
    assert_same_weights(accumulated, large, unlike=small)


def test_checkpoint_interval_must_fit_the_accumulation(tmp_path, synthetic_cache, tiny_config):
    values = tiny_config(synthetic_cache, tmp_path)
    values["train"].update({"accumulate_steps": 2, "checkpoint_every_steps": 3})
    with pytest.raises(VidkdError, match="multiple of train.accumulate_steps"):
        config_from_dict(values)


def test_sync_bn_on_cpu_processes_is_one_line(tmp_path, synthetic_cache, tiny_config, monkeypatch):
    """SyncBatchNorm has no CPU kernel: under torchrun on CPU, say so before anything runs."""

    from vidkd.engine import distributed

    set_single_process_group_env(monkeypatch)
    values = tiny_config(synthetic_cache, tmp_path)
    values["model"]["sync_bn"] = True
    values["train"]["device"] = "cpu"
    try:
        with pytest.raises(VidkdError, match="model.sync_bn needs GPUs"):
            train(config_from_dict(values), progress=False)
    finally:
        distributed.cleanup()
    assert not (tmp_path / "tiny").exists()


def test_accumulate_steps_zero_is_one_line_not_a_division(tmp_path, synthetic_cache, tiny_config):
    values = tiny_config(synthetic_cache, tmp_path)
    values["train"]["accumulate_steps"] = 0  # checkpoint_every_steps % 0 was a ZeroDivisionError
    with pytest.raises(VidkdError, match="'train.accumulate_steps' is 0; it must be at least 1"):
        config_from_dict(values)


def test_more_accumulate_steps_than_batches_is_refused(tmp_path, synthetic_cache, tiny_config):
    """16 training videos at batch 4 are 4 batches an epoch: a group of 5 would never step
    (it trained nothing and wrote a 'nan' loss before)."""
    values = tiny_config(synthetic_cache, tmp_path)
    values["data"]["synthetic"]["train_per_class"] = 6  # 18 videos, 16 after the val slice
    values["train"].update({"batch_size": 4, "accumulate_steps": 5})
    with pytest.raises(VidkdError, match=r"accumulate_steps=5 is more than the 4 batches"):
        train(config_from_dict(values), progress=False)
    assert not (tmp_path / "tiny" / "student.safetensors").exists()



def test_sync_bn_in_one_process_warns_it_does_nothing(tmp_path, synthetic_cache, tiny_config, caplog):
    values = tiny_config(synthetic_cache, tmp_path)
    values["model"]["sync_bn"] = True
    values["train"]["epochs"] = 1
    with caplog.at_level("WARNING", logger="vidkd"):
        train(config_from_dict(values), progress=False)
    assert any("model.sync_bn has no effect in a single process" in r.getMessage()
               for r in caplog.records)


def test_a_short_last_group_steps_once_scaled_by_its_own_length(
    tmp_path, synthetic_cache, tiny_config, monkeypatch
):
    """16 training videos in batches of 12 (fewer than two batches: the last, of 4, is
    kept): with accumulate_steps=3 the epoch is one group of 2 batches, so it must make the
    step accumulate_steps=2 makes (each loss / 2), not none and not one scaled by 1/3."""
    monkeypatch.setattr(Baseline, "train", bn_frozen_train)
    three = run(tiny_config, synthetic_cache, tmp_path, batch=12, accumulate=3)
    two = run(tiny_config, synthetic_cache, tmp_path, batch=12, accumulate=2)
    one = run(tiny_config, synthetic_cache, tmp_path, batch=12, accumulate=1)
    assert_same_weights(three, two, unlike=one)


@pytest.mark.parametrize("accumulate, steps", [(3, 1), (4, 1), (2, 2)])
def test_optimizer_steps_per_epoch(tmp_path, synthetic_cache, tiny_config, monkeypatch,
                                   accumulate, steps):
    """16 videos in 4 full batches of 4: a trailing group short of accumulate_steps is left
    out (3 -> one step), a group may take every batch of the epoch (4 -> one step)."""
    calls = []
    real_step = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted)
    run(tiny_config, synthetic_cache, tmp_path, batch=4, accumulate=accumulate)
    assert len(calls) == steps
