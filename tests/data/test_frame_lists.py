"""VideoFrameDataset lists (``<folder> <start> <end> <label>``): ranges of frame folders,
from the list to the clips, and reachable from a config (``dataset: folder``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import png_frames

from vidkd.config import DataConfig
from vidkd.data.build import build_splits
from vidkd.data.dataset import ClipSpec, VideoClipDataset
from vidkd.data.index import frame_list_index
from vidkd.errors import VidkdError


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """``rec/a``: 30 frames, frame n grey level 10 n (lossless PNG); ``rec/b``: 12 frames."""
    root = tmp_path_factory.mktemp("frames")
    png_frames(root / "rec" / "a", 24, size=16)
    png_frames(root / "rec" / "b", 12, size=16)
    png_frames(root / "rec" / "gap", 6, size=16)
    (root / "rec" / "gap" / "img_00004.png").unlink()  # frames 1, 2, 3, 5, 6
    png_frames(root / "rec" / "disorder", 2, size=16)  # read in name order: 2 comes before 1
    for old, new in [("img_00001.png", "c1_0002.png"), ("img_00002.png", "c2_0001.png")]:
        (root / "rec" / "disorder" / old).rename(root / "rec" / "disorder" / new)
    return root


def frame_numbers_of(clips: np.ndarray) -> list[list[int]]:
    """The frame number each frame of each clip shows (its grey level / 10)."""
    return [[int(round(frame.mean())) // 10 for frame in clip] for clip in clips]


def test_ranges_of_one_folder_are_videos_of_one_group(recording: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("rec/a 1 10 0\nrec/a 11 24 1\nrec/b 1 12 1\n")
    index = frame_list_index(recording, listing, ["walk", "run"])
    assert [(r.path.name, r.label, r.start_frame, r.end_frame) for r in index.records] == [
        ("a", 0, 0, 10), ("a", 1, 10, 24), ("b", 1, None, None),  # b: the whole folder
    ]
    groups = [r.group for r in index.records]
    assert groups[0] == groups[1] != groups[2]
    # recordings holding several actions: no folder names a class, so the labels do
    listing.write_text("rec/a 1 10 0\nrec/a 11 24 1\nrec/b 1 6 0\nrec/b 7 12 1\n")
    assert frame_list_index(recording, listing).classes == ["0", "1"]
    listing.write_text(f"{recording / 'rec' / 'b'} 1 6 0\n")  # an absolute folder
    assert [r.path for r in frame_list_index(recording, listing).records] == [recording / "rec" / "b"]


@pytest.mark.parametrize("line, problem", [
    ("rec/a 0 10 0", r"names frames 0\.\.10, but .*a holds frames 1\.\.24: fix the line"),
    ("rec/a 5 25 0", r"names frames 5\.\.25, but .*a holds frames 1\.\.24"),
    ("rec/a 9 4 0", r"start frame 9 is after end frame 4 in line 'rec/a 9 4 0'"),
    ("rec/a 4 0", r"expected '<path> <start> <end> <label>' \(one label\), got 'rec/a 4 0'"),
    ("rec/gap 4 4 0", r"names frames 4\.\.4, but .*gap has none of them \(its numbering skips them\)"),
    ("rec/disorder 1 2 0", r"disorder numbers its frames out of order"),
])
def test_a_range_outside_its_folder_is_named(recording: Path, tmp_path: Path, line: str,
                                             problem: str) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"rec/b 1 12 0\n{line}\n")
    with pytest.raises(VidkdError, match=problem):
        frame_list_index(recording, listing, ["walk"])


def test_clips_never_leave_their_range(recording: Path, tmp_path: Path) -> None:
    """Frames 11..14 of a: every training and test clip shows only those; a clip longer
    than the range repeats its frames (loop padding) instead of reading frames 15, 16..."""
    listing = tmp_path / "list.txt"
    listing.write_text("rec/a 11 14 0\n")
    records = frame_list_index(recording, listing, ["walk"]).records
    spec = ClipSpec(clip_len=6, frame_stride=1, short_side=16, crop_size=16)
    test = VideoClipDataset(records, spec, "test", num_clips=3)
    assert frame_numbers_of(test[0]["clips"].numpy()) == [[11, 12, 13, 14, 11, 12]] * 3
    spec = ClipSpec(clip_len=2, frame_stride=2, short_side=16, crop_size=16)
    train = VideoClipDataset(records * 8, spec, "train", seed=3)
    seen = set()
    for item in range(8):
        (numbers,) = frame_numbers_of(train[item]["clips"].numpy())
        assert numbers in ([11, 13], [12, 14]), numbers
        seen.add(tuple(numbers))
    assert seen == {(11, 13), (12, 14)}  # both positions the range allows are drawn


def test_a_config_reaches_frame_lists(recording: Path, tmp_path: Path) -> None:
    """``dataset: folder`` with four-field lists: ranges, a validation split that keeps a
    folder's ranges together, no 'listed twice' warning for two ranges of a folder, and a
    warning for a test range that overlaps a training one."""
    train_list, test_list = tmp_path / "train.txt", tmp_path / "test.txt"
    lines = [f"rec/a {1 + 3 * i} {3 + 3 * i} {i % 2}" for i in range(8)]  # 8 ranges of a
    train_list.write_text("\n".join(lines + ["rec/b 1 6 0", "rec/b 7 12 1"]) + "\n")
    test_list.write_text("rec/b 1 12 1\n")
    cfg = DataConfig(dataset="folder", root=str(recording), annotations=str(train_list),
                     test_annotations=str(test_list), val_fraction=0.2)
    splits = build_splits(cfg, seed=0, progress=False)
    assert len(splits.train) + len(splits.val) == 10 and len(splits.test) == 1
    assert {r.path.name for r in splits.val} in ({"a"}, {"b"})  # a folder's ranges stay together
    assert {r.path.name for r in splits.train}.isdisjoint({r.path.name for r in splits.val})
    assert not any("more than once" in note for note in splits.notes)
    assert (splits.test[0].start_frame, splits.test[0].end_frame) == (None, None)
    assert any("1 of 1 test videos are training videos too" in note for note in splits.notes)

    train_list.write_text("\n".join(lines[:4] + lines[:1] + ["rec/b 1 6 0"]) + "\n")  # one twice
    test_list.write_text("rec/a 13 24 1\n")  # frames 13..24: after every training range
    splits = build_splits(cfg, seed=0, progress=False)
    assert not any("training videos too" in note for note in splits.notes)
    assert any("1 training videos are listed more than once" in note and "(its frames 1..3, counted from 1)"
               in note for note in splits.notes)

    train_list.write_text("rec/a 1 12 0\nrec/a 13 24 1\n")  # one recording: no group to hold out
    with pytest.raises(VidkdError, match=r"no validation split can be held out of the 2 training "
                                         r"videos: they are all of one group .*list videos of more "
                                         r"groups \(for frame ranges: more folders\)"):
        build_splits(cfg, seed=0, progress=False)
    test_list.unlink()
    with pytest.raises(VidkdError, match="test.txt not found: check data.test_annotations"):
        build_splits(cfg, seed=0, progress=False)

    test_list.write_text("rec/b 12 1\n")  # MMAction2's `<folder> <total_frames> <label>`
    with pytest.raises(VidkdError, match=r"train\.txt is a '<folder> <start> <end> <label>' list "
                                         r"and .*test\.txt is not: write data\.annotations and "
                                         r"data\.test_annotations in one format"):
        build_splits(cfg, seed=0, progress=False)
