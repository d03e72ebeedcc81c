"""``method.augment`` in a config decides which operators the training pass runs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from vidkd.config import load_config
from vidkd.engine.train import augment_config

FULL_SET = {"flip", "contrast", "brightness", "hue", "blur", "channel_split"}


def enabled(overrides: list[str], method_default: bool) -> set[str]:
    cfg = load_config(None, overrides)
    return set(augment_config(cfg, SimpleNamespace(full_augment=method_default)).enabled())


def test_method_default_decides_when_the_config_is_silent():
    assert enabled([], method_default=True) == FULL_SET
    assert enabled([], method_default=False) == {"flip"}


def test_full_switch_overrides_the_method_default():
    assert enabled(["method.augment.full=true"], method_default=False) == FULL_SET
    assert enabled(["method.augment.full=false"], method_default=True) == {"flip"}


def test_each_operator_of_the_full_set_can_be_switched_off():
    for name in sorted(FULL_SET):
        ops = enabled([f"method.augment.{name}=false"], method_default=True)
        assert ops == FULL_SET - {name}, name
    ops = enabled(["method.augment.blur=false", "method.augment.channel_split=false",
                   "method.augment.noise=true"], method_default=True)
    assert ops == FULL_SET - {"blur", "channel_split"} | {"noise"}


def test_operator_switches_do_not_turn_on_the_full_set():
    # crop + flip stays crop + flip: the switches only pick inside the full set
    assert enabled(["method.augment.full=false", "method.augment.noise=true"], True) == {"flip"}
    assert enabled(["method.augment.invert=true"], method_default=False) == {"flip"}
    assert enabled(["method.augment.flip=false"], method_default=False) == set()


def test_a_switch_without_the_full_set_warns(caplog):
    caplog.set_level(logging.WARNING, logger="vidkd")
    assert enabled(["method.augment.noise=true"], method_default=False) == {"flip"}
    assert "method.augment.noise has no effect" in caplog.text
    assert "method.augment.full=true" in caplog.text
    caplog.clear()
    assert enabled(["method.augment.blur=false"], method_default=True) == FULL_SET - {"blur"}
    assert enabled([], method_default=False) == {"flip"}
    assert caplog.text == ""
