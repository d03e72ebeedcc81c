"""Fixtures shared by the whole suite: the real sample data and tiny run configurations."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
