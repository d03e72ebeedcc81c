"""Config loading: typed frozen dataclasses, strict keys with suggestions, --set overrides."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from vidkd.config import ExperimentConfig, config_from_dict, dump_config, load_config
from vidkd.errors import VidkdError


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_spec():
    cfg = load_config(None)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.01, 0.9, 5e-4)
    assert (cfg.optim.plateau_patience, cfg.optim.plateau_factor) == (10, 0.1)
    assert (cfg.method.tau, cfg.method.alpha, cfg.method.beta) == (10.0, 0.1, 1.0)
    assert (cfg.data.clip_len, cfg.data.short_side, cfg.data.crop_size) == (16, 128, 112)
    assert cfg.train.batch_size == 32 and cfg.train.epochs == 200


def test_yaml_maps_onto_frozen_dataclasses(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\noptim:\n  lr: 1\nmodel:\n  depth: 50\n"))
    assert cfg.name == "x" and cfg.model.depth == 50
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 0.5  # type: ignore[misc]


def test_unknown_key_names_key_file_and_closest(tmp_path):
    path = write(tmp_path, "optim:\n  learning_rat: 0.1\n")
    with pytest.raises(VidkdError) as error:
        load_config(path)
    message = str(error.value)
    assert "optim.learning_rat" in message and str(path) in message
    path = write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(VidkdError, match="did you mean 'optim.lr'"):
        load_config(path)
    path = write(tmp_path, "methd:\n  name: kd\n")
    with pytest.raises(VidkdError, match="did you mean 'method'"):
        load_config(path)


def test_set_overrides_any_field(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.1\n")
    cfg = load_config(path, ["optim.lr=0.5", "data.root=/videos", "method.augment.full=false",
                             "name=other", "data.synthetic.num_classes=4"])
    assert cfg.optim.lr == 0.5 and cfg.data.root == "/videos" and cfg.name == "other"
    assert cfg.method.augment.full is False and cfg.data.synthetic.num_classes == 4
    with pytest.raises(VidkdError, match="did you mean 'optim.momentum'"):
        load_config(path, ["optim.momentun=0.8"])
    with pytest.raises(VidkdError, match="section.key=value"):
        load_config(path, ["optim.lr"])


def test_bad_values_are_named(tmp_path):
    with pytest.raises(VidkdError, match="method.name"):
        config_from_dict({"method": {"name": "skd"}})
    with pytest.raises(VidkdError, match="train.epochs. must be int"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(VidkdError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(VidkdError, match="not valid YAML"):
        load_config(write(tmp_path, "optim: [1, 2\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=0.3", "model.depth=34"])
    dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == 0.3
    assert isinstance(again, ExperimentConfig)


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert configs, "configs/ is empty"
    for path in configs:
        load_config(path)


@pytest.mark.parametrize("override, field", [
    ("model.depth=19", "model.depth"),
    ("train.batch_size=0", "train.batch_size"),
    ("data.clip_len=0", "data.clip_len"),
    ("data.crop_size=200", "data.crop_size"),
    ("train.epochs=-1", "train.epochs"),
    ("optim.lr=-1", "optim.lr"),
    ("model.width_multiplier=0", "model.width_multiplier"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.synthetic.num_classes=1", "data.synthetic.num_classes"),
    ("data.test_clips=0", "data.test_clips"),
    ("method.augment.p=1.5", "method.augment.p"),
    ("optim.plateau_factor=1", "optim.plateau_factor"),
])
def test_out_of_range_values_name_the_field(override, field):
    with pytest.raises(VidkdError, match=rf"'{re.escape(field)}' is .*; it must be"):
        load_config(None, [override])


def test_checked_depths_are_the_model_family():
    from vidkd.config import _MODEL_DEPTHS
    from vidkd.models.resnet3d import DEPTHS

    assert _MODEL_DEPTHS == tuple(sorted(DEPTHS))


def test_data_backend_was_removed_with_a_clear_error(tmp_path):
    with pytest.raises(VidkdError, match=r"'data.backend' was removed: each video is decoded by what it is"):
        load_config(None, ["data.backend=frames"])
    # the value every earlier run wrote into its config.yaml still loads
    old_run = write(tmp_path, "data:\n  backend: video\n  clip_len: 8\n")
    assert load_config(old_run).data.clip_len == 8
