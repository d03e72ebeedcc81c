"""``evaluate()``: video level averages the softmax of every clip, clip level counts clips.

A fake model reads a clip's id from its pixels and returns that clip's logits from a
table; the right answers are computed here from the same table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vidkd.engine.evaluate import evaluate
from vidkd.errors import VidkdError

# video -> (label, logits of its 3 clips) over 3 classes. Softmax averaging gets all but D
# right; averaging logits, or scoring any one clip position alone, gets fewer right.
VIDEOS = {
    "A": (1, [[10, 0, 0], [0, 2, 0], [0, 2, 0]]),  # first clip alone is wrong, logit mean too
    "B": (2, [[0, 0, 2], [0, 0, 2], [0, 10, 0]]),  # last clip alone is wrong, logit mean too
    "C": (0, [[2, 0, 0], [0, 10, 0], [2, 0, 0]]),  # middle clip alone is wrong, logit mean too
    "D": (0, [[0, 3, 0], [0, 3, 0], [0, 3, 0]]),  # wrong every way
    "E": (1, [[1.2, 0, 1], [0, 5, 0], [1, 0, 1.2]]),  # only the middle clip is right
}
TABLE = torch.tensor([clip for _, clips in VIDEOS.values() for clip in clips], dtype=torch.float32)


class ClipIdModel(nn.Module):
    """Logits ``TABLE[id]`` for a clip whose pixels all hold the grey level ``10 * id``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x.flatten(1).mean(dim=1) + 1.0) * 255.0 / 2.0  # undo to_model_input
        return TABLE[torch.round(grey / 10).long()]


def batch(names: list[str], valid: list[bool] | None = None) -> dict:
    clips = torch.zeros(len(names), 3, 2, 4, 4, 3, dtype=torch.uint8)  # (B, N, T, H, W, C)
    for row, name in enumerate(names):
        first = list(VIDEOS).index(name) * 3
        for clip in range(3):
            clips[row, clip] = 10 * (first + clip)
    return {
        "clips": clips, "label": torch.tensor([VIDEOS[name][0] for name in names]),
        "valid": torch.tensor(valid or [True] * len(names)), "failed": [],
    }


def expected() -> dict[str, float]:
    """Video top-1 under the right and two wrong scorings, and clip top-1, from the table."""
    labels = np.array([label for label, _ in VIDEOS.values()])
    logits = np.array([clips for _, clips in VIDEOS.values()], dtype=np.float64)  # (V, N, K)
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    clip_right = probs.argmax(axis=2) == labels[:, None]
    return {
        "softmax_mean": 100 * float(np.mean(probs.mean(axis=1).argmax(axis=1) == labels)),
        "logit_mean": 100 * float(np.mean(logits.mean(axis=1).argmax(axis=1) == labels)),
        "single_clip": [100 * float(np.mean(clip_right[:, i])) for i in range(3)],  # by position
        "clip": 100 * float(clip_right.mean()),
    }


def test_video_level_averages_softmax_over_all_clips():
    want = expected()
    assert want["softmax_mean"] == 80.0
    # the data tell the right scoring from the usual wrong ones
    assert want["logit_mean"] < 80.0 and max(want["single_clip"]) < 80.0
    loader = [batch(["A", "B"]), batch(["C", "D", "E"])]
    result = evaluate(ClipIdModel(), loader, 3, torch.device("cpu"), channels_last=False)
    assert result.video_top1 == pytest.approx(want["softmax_mean"])
    assert result.num_videos == 5 and result.num_clips == 3


def test_clip_level_counts_clips_not_videos():
    want = expected()
    assert want["clip"] == pytest.approx(100 * 7 / 15)  # 2 + 2 + 2 + 0 + 1 right clips of 15
    # neither one clip per video nor counting videos gives that number
    assert all(v != pytest.approx(want["clip"]) for v in [*want["single_clip"], want["softmax_mean"]])
    loader = [batch(["A", "B", "C"]), batch(["D", "E"])]
    result = evaluate(ClipIdModel(), loader, 3, torch.device("cpu"), channels_last=False)
    assert result.clip_top1 == pytest.approx(want["clip"])
    assert result.video_top1 == pytest.approx(want["softmax_mean"])


def test_unreadable_videos_are_left_out_of_both_levels():
    loader = [batch(["A", "D", "B"], valid=[True, False, True])]
    result = evaluate(ClipIdModel(), loader, 3, torch.device("cpu"), channels_last=False)
    assert result.num_videos == 2
    assert result.video_top1 == pytest.approx(100.0)  # A and B right; D skipped
    assert result.clip_top1 == pytest.approx(100 * 4 / 6)


def test_unreadable_counts_and_a_split_with_nothing_readable():
    """Failed videos are counted; when none was readable there is no score (it printed 0.00%
    and exited 0), only one line naming the first failure."""
    first = batch(["A", "D"], valid=[True, False])
    first["failed"] = ["d.mp4: cannot open"]
    result = evaluate(ClipIdModel(), [first], 3, torch.device("cpu"), channels_last=False)
    assert (result.num_videos, result.num_failed, result.as_dict()["failed_videos"]) == (1, 1, 1)
    nothing = batch(["A", "B"], valid=[False, False])
    nothing["failed"] = ["a.mp4: cannot open", "b.mp4: cannot open"]
    with pytest.raises(VidkdError, match=r"none of the videos of the test split .*first: a.mp4"):
        evaluate(ClipIdModel(), [nothing], 3, torch.device("cpu"), channels_last=False,
                 description="test")


def test_top5_is_reported_and_means_top3_with_three_classes():
    loader = [batch(["A", "B", "C", "D", "E"])]
    result = evaluate(ClipIdModel(), loader, 3, torch.device("cpu"), channels_last=False)
    assert result.top_k == 3 and result.video_top5 == 100.0 and result.clip_top5 == 100.0


class FixedLogits(nn.Module):
    """Seven classes: the clips of the first video rank class 0 sixth, of the second fifth."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x.flatten(1).mean(dim=1) + 1.0) * 255.0 / 2.0
        sixth = torch.tensor([2.0, 7, 6, 5, 4, 3, 1])
        fifth = torch.tensor([3.0, 7, 6, 5, 4, 2, 1])
        return torch.stack([sixth if g < 5 else fifth for g in grey])


def test_top5_counts_the_fifth_class_and_not_the_sixth():
    clips = torch.zeros(2, 2, 2, 4, 4, 3, dtype=torch.uint8)  # 2 videos x 2 clips
    clips[1] = 10
    loader = [{"clips": clips, "label": torch.tensor([0, 0]), "valid": torch.tensor([True, True]),
               "failed": []}]
    result = evaluate(FixedLogits(), loader, 7, torch.device("cpu"), channels_last=False)
    assert result.top_k == 5 and result.video_top1 == 0.0
    assert result.video_top5 == 50.0 and result.clip_top5 == 50.0
