"""The training loop end to end on tiny inputs: outputs, resume, refusal to overwrite."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vidkd.config import config_from_dict, load_config
from vidkd.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vidkd.engine.train import train
from vidkd.errors import VidkdError


def test_run_writes_every_output(tmp_path, synthetic_cache, tiny_config):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path))
    summary = train(cfg, progress=False)
    run = tmp_path / "tiny"
    assert load_config(run / "config.yaml") == cfg
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("epoch") == 2 and kinds[-1] == "test" and "step" in kinds
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all("val_video_top1" in r and r["train_loss"] > 0 for r in epochs)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert latest_checkpoint(run / "checkpoints").name == "epoch_0002"
    assert (run / "student.safetensors").is_file() and (run / "best_student.safetensors").is_file()
    saved = json.loads((run / "results.json").read_text())
    assert saved["test"]["protocol"] == "2 clips x 1 centre crop"
    assert saved["test"]["num_videos"] == 6  # 3 classes x 2 test videos
    assert 0.0 <= summary["test"]["video_top1"] <= 100.0


def test_existing_run_is_not_overwritten(tmp_path, synthetic_cache, tiny_config):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path, train={"epochs": 1}))
    train(cfg, progress=False)
    with pytest.raises(VidkdError, match="--resume"):
        train(cfg, progress=False)


def test_resume_continues_exactly(tmp_path, synthetic_cache, tiny_config):
    """A run killed after epoch 1 and resumed ends with the same weights as an unbroken run."""
    full = config_from_dict(tiny_config(synthetic_cache, tmp_path / "a", method={"name": "skd_srl",
                            "projector_dim": 32, "predictor_hidden": 8}))
    train(full, progress=False)
    first = config_from_dict(tiny_config(synthetic_cache, tmp_path / "b", train={"epochs": 1},
                             method={"name": "skd_srl", "projector_dim": 32, "predictor_hidden": 8}))
    train(first, progress=False)
    resumed = config_from_dict(tiny_config(synthetic_cache, tmp_path / "b", method={
        "name": "skd_srl", "projector_dim": 32, "predictor_hidden": 8}))
    train(resumed, resume=True, progress=False)
    a = load_file(str(tmp_path / "a" / "tiny" / "student.safetensors"))
    b = load_file(str(tmp_path / "b" / "tiny" / "student.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    batch = json.loads((tmp_path / "b" / "tiny" / "results.json").read_text())["batch"]
    assert (batch["videos_per_step"], batch["clips_per_step"]) == (4, 8)  # two views per video
    log = (tmp_path / "b" / "tiny" / "metrics.jsonl").read_text()
    assert [json.loads(line)["epoch"] for line in log.splitlines()
            if json.loads(line)["kind"] == "epoch"] == [1, 2]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, synthetic_cache, tiny_config):
    cfg = config_from_dict(tiny_config(synthetic_cache, tmp_path))
    with pytest.raises(VidkdError, match="--resume: there is no run in"):
        train(cfg, resume=True, progress=False)


def test_checkpoint_is_never_half_written(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, 1, {"w": torch.ones(3)}, {"epoch": 0})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(directory, 2, {"w": torch.zeros(3)}, {"epoch": 1})
    monkeypatch.undo()
    last = latest_checkpoint(directory)
    assert last.name == "epoch_0001"
    weights, state = load_checkpoint(last)
    assert torch.equal(weights["w"], torch.ones(3)) and state["epoch"] == 0
    save_checkpoint(directory, 2, {"w": torch.zeros(3)}, {"epoch": 1}, keep=1)
    assert latest_checkpoint(directory).name == "epoch_0002"
    assert sorted(p.name for p in directory.iterdir() if p.is_dir()) == ["epoch_0002"]


def test_one_video_batch_that_bn_cannot_normalise_is_one_line(tmp_path, synthetic_cache, tiny_config):
    """A batch of one 4x32x32 clip gives layer4's BatchNorm a 1x1x1 map: torch's ValueError
    was a traceback in the middle of training."""
    values = tiny_config(synthetic_cache, tmp_path)
    values["train"]["batch_size"] = 1
    with pytest.raises(VidkdError, match=r"a training batch of 1 video\(s\) of 4x32x32 clips leaves .*use train.batch_size=2"):
        train(config_from_dict(values), progress=False)


def test_last_batch_of_one_video_names_the_last_batch(tmp_path, synthetic_cache, tiny_config):
    """16 training videos at batch 15: the split is under two batches, so the last one (1
    video) is kept, and the message must not blame train.batch_size=15 alone."""
    values = tiny_config(synthetic_cache, tmp_path)
    values["train"]["batch_size"] = 15
    with pytest.raises(VidkdError, match=r"batch of 1 video\(s\) .* the last batch of an epoch, "
                                         r"short of train.batch_size=15"):
        train(config_from_dict(values), progress=False)


@pytest.mark.parametrize("wrapped", [False, True])
def test_batch_norm_explanation_takes_dynamo_wrapped_errors_only(wrapped):
    """Under train.compile, dynamo raises a RuntimeError quoting torch's ValueError; any
    other error goes through unchanged."""
    from vidkd.engine.train import one_value_batch_norm_explained

    cfg = load_config(None, ["train.batch_size=1"])
    message = "Expected more than 1 value per channel when training, got input size [1, 8, 1, 1, 1]"
    error = RuntimeError(f"Dynamo failed: got ValueError('{message}')") if wrapped else ValueError(message)
    with pytest.raises(VidkdError, match="a training batch of 1 video"):
        with one_value_batch_norm_explained(cfg, 1):
            raise error
    for other in (RuntimeError("out of memory"), ValueError("bad shape")):
        with pytest.raises(type(other), match=str(other)):
            with one_value_batch_norm_explained(cfg, 1):
                raise other
