"""Config loading: typed frozen dataclasses, strict keys with suggestions, --set overrides."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    ("model.conv1_t_size=0", "model.conv1_t_size"),
    ("model.conv1_t_stride=0", "model.conv1_t_stride"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.synthetic.num_classes=1", "data.synthetic.num_classes"),
    ("data.test_clips=0", "data.test_clips"),
    ("method.augment.p=1.5", "method.augment.p"),
    ("optim.plateau_factor=1", "optim.plateau_factor"),
    ("train.seed=-1", "train.seed"),  # numpy's traceback before
    ("train.seed=10000000000001", "train.seed"),  # 10^13 + 1: seed * 1000003 nears 2^64
    ("train.seed=99999999999999999999", "train.seed"),  # torch's overflow traceback before
    ("data.synthetic.seed=-1", "data.synthetic.seed"),
    # found by fuzzing (2026-11-30): each was accepted, then failed deep inside torch or hung
    ("model.width_multiplier=1e15", "model.width_multiplier"),  # storage size overflow
    ("train.threads=2147483648", "train.threads"),  # torch.set_num_threads overflow
    ("model.conv1_t_size=2147483648", "model.conv1_t_size"),
    ("model.conv1_t_stride=9223372036854775808", "model.conv1_t_stride"),
    ("method.projector_dim=2147483648", "method.projector_dim"),
    ("method.predictor_hidden=2147483648", "method.predictor_hidden"),
    ("data.synthetic.num_classes=13", "data.synthetic.num_classes"),  # the generator has 12
    ("train.batch_size=9223372036854775808", "train.batch_size"),  # islice's overflow
    ("eval.batch_size=9223372036854775808", "eval.batch_size"),
    ("data.test_clips=2147483648", "data.test_clips"),  # uniform_clips hung
    ("data.val_clips=2147483648", "data.val_clips"),
    ("eval.test_clips=2147483648", "eval.test_clips"),
    ("data.crop_size=3", "data.crop_size"),  # the 7x7 blur's reflect border
    ("optim.nesterov=true", "optim.nesterov"),  # with the default momentum of 0.9 it is fine...
    ("optim.lr=1e308", "optim.lr"),  # above float32: the first SGD step failed
    ("optim.weight_decay=1e308", "optim.weight_decay"),
])
def test_out_of_range_values_name_the_field(override, field):
    if field == "optim.nesterov":  # ...so this case sets momentum 0
        override = [override, "optim.momentum=0"]
    else:
        override = [override]
    with pytest.raises(VidkdError, match=rf"'{re.escape(field)}' is .*; it must be"):
        load_config(None, override)


def test_synthetic_class_bound_is_the_generator_s():
    from vidkd.config import SYNTHETIC_CLASSES
    from vidkd.data.synthetic import CLASSES

    assert SYNTHETIC_CLASSES == len(CLASSES)
    assert load_config(None, [f"data.synthetic.num_classes={len(CLASSES)}"])


@pytest.mark.parametrize("override, expect", [
    ("data.clip_len=!!timestamp x", "'data.clip_len' must be int"),  # PyYAML AttributeError
    ("data.same_clip=!!bool x", "'data.same_clip' must be bool"),  # PyYAML KeyError
    ("data.clip_len=!!int +", "'data.clip_len' must be int"),  # PyYAML IndexError
    ("optim.lr=!!float ''", "'optim.lr' must be float"),
    ("optim.lr=1" + "0" * 400, "'optim.lr' is 1000000000000000000000"),  # OverflowError
    ("data.clip_len=1:30", "'data.clip_len' must be int, got '1:30'"),  # YAML 1.1 read 90
    ('data.classes_file="a\\0b"', "holds a NUL character"),  # ValueError in open()
    ('name="\\ud800"', "a lone surrogate"),  # UnicodeEncodeError
])
def test_values_that_escaped_as_tracebacks_are_one_line(override, expect):
    with pytest.raises(VidkdError) as error:
        load_config(None, [override])
    message = str(error.value)
    assert expect in message and "\n" not in message and len(message) < 400, message


def test_hostile_yaml_tags_in_a_file_are_one_line(tmp_path):
    for text in ("data:\n  clip_len: !!int +\n", "data:\n  same_clip: !!bool x\n",
                 "name: !!timestamp x\n"):
        with pytest.raises(VidkdError, match="not valid YAML"):
            load_config(write(tmp_path, text))
    with pytest.raises(VidkdError, match="'data.clip_len' must be int, got '1:30'"):
        load_config(write(tmp_path, "data:\n  clip_len: 1:30\n"))  # text, as in YAML 1.2


def test_a_folder_name_that_is_not_utf8_is_a_value_like_any_other(tmp_path):
    """Linux hands Python a Latin-1 name such as caf\xe9 as a surrogate escape; it is a real
    folder, so the config takes it (a lone surrogate that is no escape is refused above)."""
    import os

    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    os.mkdir(os.fsencode(folder))
    assert load_config(None, ["data.dataset=folder", f"data.root={folder}"]).data.root == folder


def test_the_generator_s_class_bound_applies_to_the_synthetic_dataset_only():
    values = ["data.dataset=folder", "data.root=/data/ucf", "data.synthetic.num_classes=101"]
    assert load_config(None, values).data.synthetic.num_classes == 101  # unused there
    with pytest.raises(VidkdError, match="'data.synthetic.num_classes' is 101"):
        load_config(None, ["data.synthetic.num_classes=101"])


def test_a_long_bad_value_is_cut_in_the_message():
    with pytest.raises(VidkdError) as error:
        load_config(None, ["data.clip_len=" + "x" * 100_000])
    assert len(str(error.value)) < 200 and str(error.value).endswith("...")


def test_setting_a_whole_section_keeps_its_other_fields(tmp_path):
    path = write(tmp_path, "data:\n  short_side: 64\n  crop_size: 56\n  synthetic:\n    size: 48\n")
    cfg = load_config(path, ["data={clip_len: 4, synthetic: {seed: 3}}"])
    assert (cfg.data.clip_len, cfg.data.short_side, cfg.data.crop_size) == (4, 64, 56)
    assert (cfg.data.synthetic.seed, cfg.data.synthetic.size) == (3, 48)
    cfg = load_config(path, ["data.synthetic={}"])  # an empty mapping resets a section
    assert cfg.data.synthetic.size == 64 and cfg.data.short_side == 64  # default size; the rest kept
    values = {"data": {"short_side": 64, "crop_size": 56}}
    from vidkd.config import config_from_dict

    config_from_dict(values, overrides=["data.clip_len=4"])
    assert values == {"data": {"short_side": 64, "crop_size": 56}}  # the caller's dict is untouched


def test_largest_seed_is_accepted():
    """10^13: the engine's largest derived seed, 10^13 * 1000003 + epoch, fits torch's 2^64."""
    assert load_config(None, ["train.seed=10000000000000"]).train.seed == 10**13
    assert 10**13 * 1000003 + 10**6 < 2**64
    torch.Generator().manual_seed(10**13 * 1000003 + 10**6)


def test_checked_depths_are_the_model_family():
    from vidkd.config import _MODEL_DEPTHS
    from vidkd.models.resnet3d import DEPTHS

    assert _MODEL_DEPTHS == tuple(sorted(DEPTHS))


# --------------------------------------------------------------------------- hostile input


def test_duplicate_keys_name_the_key_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.1\n  momentum: 0.8\n  lr: 0.2\n")
    with pytest.raises(VidkdError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "'lr'" in message and "line 4" in message and "line 2" in message
    path = write(tmp_path, "data:\n  root: /a\nmodel:\n  depth: 18\ndata:\n  root: /b\n")
    with pytest.raises(VidkdError, match=r"line 5: key 'data' appears twice"):
        load_config(path)
    with pytest.raises(VidkdError, match=r"key 'p' is given twice"):
        load_config(None, ["method.augment={p: 0.1, p: 0.2}"])
    from vidkd.config import parse_yaml

    # a '<<' merge may be overridden by an explicit key: that is not a duplicate
    assert parse_yaml("a: &d {x: 1, y: 2}\nb:\n  <<: *d\n  x: 3\n")["b"] == {"x": 3, "y": 2}


def test_exponent_without_a_dot_is_a_float_where_the_field_is_one(tmp_path):
    cfg = load_config(write(tmp_path, "optim:\n  lr: 1e-3\n  weight_decay: 5E-4\nname: 1e-3\n"))
    assert cfg.optim.lr == 0.001 and cfg.optim.weight_decay == 0.0005
    assert cfg.name == "1e-3"  # a text field keeps the text
    cfg = load_config(None, ["optim.lr=1e-3", "paper.top1=7.5e+1"])
    assert cfg.optim.lr == 0.001 and cfg.paper.top1 == 75.0
    with pytest.raises(VidkdError, match="'train.epochs' must be int"):
        load_config(None, ["train.epochs=1e2"])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1e999"])
@pytest.mark.parametrize("field", ["optim.lr", "paper.top1"])  # float, float | None
def test_non_finite_floats_are_refused(tmp_path, value, field):
    with pytest.raises(VidkdError, match=rf"'{re.escape(field)}' is .*; it must be a finite number"):
        load_config(None, [f"{field}={value}"])
    section, key = field.split(".")
    with pytest.raises(VidkdError, match=rf"exp.yaml: '{re.escape(field)}' is .*finite"):
        load_config(write(tmp_path, f"{section}:\n  {key}: {value}\n"))


def test_impossible_yaml_values_are_one_line(tmp_path):
    with pytest.raises(VidkdError, match="not valid YAML"):
        load_config(write(tmp_path, "name: 2001-02-30\n"))  # PyYAML raises ValueError
    assert load_config(None, ["name=2001-02-30"]).name == "2001-02-30"  # --set keeps the text
    with pytest.raises(VidkdError, match="expected a mapping"):
        load_config(write(tmp_path, "0\n"))


# Pieces of real config text, so that generated files get past the YAML parser.
YAML_TOKENS = [
    "data:", "optim:", "model:", "method:", "train:", "name:", "  lr: ", "  root: ", "  depth: ",
    "  name: ", "  augment:", "    p: ", "  synthetic:", "    size: ", "\n", "1e-3", ".inf",
    ".nan", "-1", "0", "18", "1e999", "kd", "[", "]", "{", "}", "&a ", "*a", "<<: ", "- ", ": ",
    "? ", "'", '"', "\t", "2001-02-30", "0x1F", "~", "null", "true", "!!binary ", "!!str ",
    "!!python/object:os.system ", "#", ",", "\ufeff", "\x00", "é", "  ", "lr", '"a\\nb": ',
]
yaml_text = st.lists(st.sampled_from(YAML_TOKENS), max_size=24).map("".join)
SET_TOKENS = [
    "optim.lr", "data.root", "method.augment", "data.synthetic.size", "name", "model", ".", "=",
    "1e-3", "nan", ".inf", "{p: 1, p: 2}", "{p: 1}", "[1, 2", "x", "", " ", "2001-02-30", "\x00",
]
override = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(SET_TOKENS), max_size=5).map("".join))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), yaml_text.map(lambda text: text.encode("utf-8")),
                      st.text(max_size=200).map(lambda text: text.encode("utf-8"))),
       overrides=st.lists(override, max_size=3))
def test_config_loader_raises_nothing_but_vidkd_error(tmp_path, data, overrides):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    for source in (path, None):
        try:
            load_config(source, overrides)
        except VidkdError as error:
            assert "\n" not in str(error)


def test_data_backend_was_removed_with_a_clear_error(tmp_path):
    with pytest.raises(VidkdError, match=r"'data.backend' was removed: each video is decoded by what it is"):
        load_config(None, ["data.backend=frames"])
    # the value every earlier run wrote into its config.yaml still loads
    old_run = write(tmp_path, "data:\n  backend: video\n  clip_len: 8\n")
    assert load_config(old_run).data.clip_len == 8


def test_a_bad_value_names_where_it_came_from():
    """`vidkd eval RUN --set eval.test_clips=0` blamed RUN/config.yaml for the --set value."""
    from vidkd.config import config_from_dict
    from vidkd.errors import VidkdError

    with pytest.raises(VidkdError, match=r"^--set: 'eval.test_clips' is 0"):
        config_from_dict({}, source="runs/x/config.yaml", overrides=["eval.test_clips=0"])
    with pytest.raises(VidkdError, match=r"^--set: 'data.clip_len' is 0"):
        config_from_dict({}, source="runs/x/config.yaml", overrides=["data={clip_len: 0}"])
    with pytest.raises(VidkdError, match=r"^runs/x/config.yaml: 'eval.test_clips' is 0"):
        config_from_dict({"eval": {"test_clips": 0}}, source="runs/x/config.yaml",
                         overrides=["train.epochs=3"])
