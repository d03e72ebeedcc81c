"""Training over a folder where 10 % of the videos are corrupt: it completes, logs and
reports exactly those videos, and stops with a clear error past data.max_failed_fraction."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vidkd.config import config_from_dict
from vidkd.data.build import build_splits
from vidkd.data.dataset import ClipSpec, VideoClipDataset, collate
from vidkd.data.records import VideoRecord
from vidkd.data.synthetic import SyntheticSpec, render_video, write_video
from vidkd.engine.train import train
from vidkd.errors import VidkdError

CLASSES = ("move_left", "move_right")


def _data_section(root: Path, max_failed: float) -> dict[str, Any]:
    return {
        "dataset": "folder", "root": str(root / "videos"),
        "annotations": str(root / "train.txt"), "test_annotations": str(root / "test.txt"),
        "clip_len": 4, "short_side": 32, "crop_size": 32, "num_workers": 2,
        "val_clips": 1, "test_clips": 1, "max_failed_fraction": max_failed,
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``videos/<class>/*.mp4`` with lists: 20 train-list videos, of which 2 (10 %) are
    corrupt (one lands in training, one in the validation slice), and 4 test videos."""
    root = tmp_path_factory.mktemp("corrupt_folder")
    spec = SyntheticSpec(num_classes=2, size=32, min_frames=10, max_frames=12)
    train_lines, test_lines = [], []
    for number in range(24):
        label = number % 2
        name = f"{CLASSES[label]}/clip_{number:02d}.mp4"
        path = root / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, render_video(label, np.random.default_rng((3, number)), spec), 25)
        (train_lines if number < 20 else test_lines).append(f"{name} {label}")
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "test.txt").write_text("\n".join(test_lines) + "\n")

    splits = build_splits(config_from_dict({"data": _data_section(root, 0.2)}).data, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 4)
    truncated, empty = splits.train[3].path, splits.val[0].path
    data = truncated.read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.3)])
    empty.write_bytes(b"")
    return {"root": root, "corrupt": {str(truncated), str(empty)}}


def _config(dataset: dict[str, Any], out_dir: Path, max_failed: float) -> Any:
    return config_from_dict({
        "name": f"corrupt-{max_failed}",
        "data": _data_section(dataset["root"], max_failed),
        "model": {"depth": 10, "width_multiplier": 0.125},
        "method": {"name": "baseline"},
        "train": {
            "epochs": 2, "batch_size": 16, "device": "cpu", "out_dir": str(out_dir),
            "threads": 1, "channels_last": False,
        },
        "eval": {"batch_size": 8},
    })


def _paths(failures: list[str]) -> list[str]:
    """The path part of ``"<path>: <reason>"`` entries."""
    return [failure.split(": ", 1)[0] for failure in failures]


@pytest.mark.timeout(120)
def test_training_completes_and_reports_exactly_the_corrupt_videos(
    dataset: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vidkd"):
        summary = train(_config(dataset, tmp_path, 0.2), progress=False)
    failed = _paths(summary["failed_videos"])
    assert sorted(failed) == sorted(dataset["corrupt"])  # each once, nothing else
    assert all(reason.split(": ", 1)[1] for reason in summary["failed_videos"])
    logged = [r.getMessage() for r in caplog.records if "unreadable video" in r.getMessage()]
    assert sorted(_paths([m.split("skipped: ", 1)[1] for m in logged])) == sorted(failed)
    assert summary["test"]["num_videos"] == 4
    epochs = [
        line for line in (tmp_path / summary["name"] / "metrics.jsonl").read_text().splitlines()
        if '"kind": "epoch"' in line
    ]
    assert len(epochs) == 2 and all('"failed_videos": 2' in line for line in epochs)


@pytest.mark.timeout(120)
def test_training_stops_when_more_than_the_allowed_fraction_fails(
    dataset: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(VidkdError, match=r"2 of 20 videos .*failed to decode .*max_failed_fraction=0.05"):
        train(_config(dataset, tmp_path, 0.05), progress=False)


@pytest.mark.timeout(60)
def test_loader_with_workers_never_hangs_on_corrupt_videos(dataset: dict[str, Any]) -> None:
    videos = dataset["root"] / "videos"
    records = [VideoRecord(path, 0) for path in sorted(videos.rglob("*.mp4"))]
    train_set = VideoClipDataset(records, ClipSpec(4, 1, 32, 32), "train")
    failed: list[str] = []
    seen = 0
    loader = DataLoader(train_set, batch_size=5, num_workers=2, collate_fn=collate)
    for batch in loader:
        assert batch["clips"].shape[1:] == (1, 4, 32, 32, 3)
        assert batch["clips"].dtype == torch.uint8
        failed += _paths(batch["failed"])
        seen += len(batch["label"])
    assert seen == len(records)
    assert set(failed) == dataset["corrupt"]  # both hit: every index is drawn once

    test_set = VideoClipDataset(records, ClipSpec(4, 1, 32, 32), "test", num_clips=2)
    batches = list(DataLoader(test_set, batch_size=6, num_workers=2, collate_fn=collate))
    valid = torch.cat([batch["valid"] for batch in batches])
    invalid = {str(records[i].path) for i in torch.nonzero(~valid).flatten().tolist()}
    assert invalid == dataset["corrupt"]
