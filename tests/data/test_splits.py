"""Train / validation / test records: validation comes from training, group-disjoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vidkd.config import DataConfig
from vidkd.data.build import build_splits
from vidkd.data.index import split_train_val


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def ucf_like(tmp_path: Path) -> tuple[Path, Path, list[str], list[str]]:
    """Two classes, 12 training groups of 1-4 clips each, two test groups."""
    root, splits = tmp_path / "videos", tmp_path / "splits"
    classes = ["Jump", "Run"]
    train, test = [], []
    for label, name in enumerate(classes):
        for group in range(1, 15):
            for clip in range(1, 1 + (group % 4) + 1):
                relative = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
                touch(root / relative)
                (test if group > 12 else train).append(f"{relative} {label + 1}")
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Jump\n2 Run\n")
    (splits / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(line.split()[0] for line in test) + "\n")
    return root, splits, train, test


def group_of(path: Path) -> str:
    return re.search(r"_(g\d\d)_", path.name).group(1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_validation_is_from_training_and_group_disjoint(tmp_path, seed):
    root, splits, train_lines, test_lines = ucf_like(tmp_path)
    cfg = DataConfig(dataset="ucf101", root=str(root), annotations=str(splits), val_fraction=0.2)
    data = build_splits(cfg, seed=seed, progress=False)
    train = {r.path.relative_to(root).as_posix() for r in data.train}
    val = {r.path.relative_to(root).as_posix() for r in data.val}
    test = {r.path.relative_to(root).as_posix() for r in data.test}
    assert val and not val & test and not val & train
    assert train | val == {line.split()[0] for line in train_lines}  # nothing lost, nothing added
    assert test == {line.split()[0] for line in test_lines}
    # the gXX of the file name, worked out here, never on both sides
    groups = lambda records: {group_of(r.path) for r in records}  # noqa: E731
    assert not groups(data.train) & groups(data.val)
    assert 0.1 <= len(val) / len(train_lines) <= 0.3


def test_hmdb51_validation_keeps_clips_of_one_source_video_together(shared, tmp_path):
    """On the real MMAction2 list: ``<source video>_<N>.avi`` clips share one group."""
    list_file = shared / "hmdb51-splits" / "hmdb51_train_split_1_videos.txt"
    names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    for relative in names:
        touch(tmp_path / "hmdb51" / relative)
    test_list = shared / "hmdb51-splits" / "hmdb51_val_split_1_videos.txt"
    touch(tmp_path / "hmdb51" / test_list.read_text().split()[0])  # one test video suffices
    source = {relative: re.sub(r"_\d+\.avi$", "", relative) for relative in names}
    clips_per_source: dict[str, int] = {}
    for value in source.values():
        clips_per_source[value] = clips_per_source.get(value, 0) + 1
    assert max(clips_per_source.values()) >= 5  # many clips are cut from one source video

    cfg = DataConfig(dataset="hmdb51", root=str(tmp_path / "hmdb51"),
                     annotations=str(shared / "hmdb51-splits"), val_fraction=0.1)
    data = build_splits(cfg, seed=0, progress=False)
    root = tmp_path / "hmdb51"
    sources = lambda records: {source[r.path.relative_to(root).as_posix()] for r in records}  # noqa: E731
    assert not sources(data.train) & sources(data.val)
    assert len(data.train) + len(data.val) == len(names)
    assert 0.08 <= len(data.val) / len(names) <= 0.12
    example = next(r for r in data.train if r.path.name == "Iaido_draw_sword_f_cm_np1_fr_med_2.avi")
    assert example.group == "Iaido_draw_sword_f_cm_np1_fr_med"


def test_split_train_val_keeps_every_group_on_one_side():
    from vidkd.data.records import VideoRecord

    records = [VideoRecord(Path(f"{group}_{i}.mp4"), 0, group=group)
               for group in "abcdefghij" for i in range(3)]
    for seed in range(5):
        train, val = split_train_val(records, 0.2, seed=seed)
        assert {r.group for r in train}.isdisjoint({r.group for r in val})
        assert len(val) == 6  # two groups of three: 20% exactly
