"""Folder datasets as users already have them: ``root/{train,val,test}/<class>/<video>``
trees, ``data.classes_file``, MMAction2's ``path label`` / ``path total_frames label`` lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import png_frames

from vidkd.config import DataConfig
from vidkd.data.build import build_splits
from vidkd.data.check import check_config
from vidkd.data.index import folder_index, split_layout
from vidkd.data.synthetic import write_video
from vidkd.errors import VidkdError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def frame_folder(path: Path, frames: int = 2) -> Path:
    for number in range(1, frames + 1):
        touch(path / f"img_{number:05d}.jpg")
    return path


def relative_set(records, root: Path) -> set[tuple[str, int]]:
    return {(r.path.relative_to(root).as_posix(), r.label) for r in records}


def split_tree(root: Path, with_val: bool) -> dict[str, set[str]]:
    """train: a, b (3 videos each, one a frame folder); val: a, b; test: b, c (c only here)."""
    layout = {
        "train": ["a/a0.mp4", "a/a1.mp4", "a/a2", "b/b0.mp4", "b/b1.avi", "b/b2.mp4"],
        "val": ["a/va.mp4", "b/vb"],
        "test": ["b/tb.mp4", "c/tc.mkv", "c/tc2"],
    }
    if not with_val:
        del layout["val"]
    for split, names in layout.items():
        for name in names:
            if name.endswith((".mp4", ".avi", ".mkv")):
                touch(root / split / name)
            else:
                frame_folder(root / split / name)
    return {split: {f"{split}/{name}" for name in names} for split, names in layout.items()}


def test_train_val_test_folders_are_the_splits_and_classes_their_union(tmp_path: Path) -> None:
    expected = split_tree(tmp_path, with_val=True)
    cfg = DataConfig(dataset="folder", root=str(tmp_path), val_fraction=0.3)
    data = build_splits(cfg, seed=0, progress=False)
    # the union of the class folders, sorted: "c" exists in test only
    assert data.classes == ["a", "b", "c"]
    label = {"a": 0, "b": 1, "c": 2}
    for name, records in (("train", data.train), ("val", data.val), ("test", data.test)):
        want = {(path, label[path.split("/")[1]]) for path in expected[name]}
        assert relative_set(records, tmp_path) == want, name
    # the val folder is the validation split: nothing was carved out of train
    assert any("val folder" in note and "val_fraction (0.3) ignored" in note for note in data.notes)
    assert split_layout(tmp_path).keys() == {"train", "val", "test"}
    authors = build_splits(DataConfig(dataset="folder", root=str(tmp_path),
                                      val_source="test_groups"), progress=False)
    assert authors.val == authors.test
    assert any("val folder" in note and "not used" in note for note in authors.notes)


def test_without_val_folder_validation_is_carved_from_train(tmp_path: Path) -> None:
    expected = split_tree(tmp_path, with_val=False)
    cfg = DataConfig(dataset="folder", root=str(tmp_path), val_fraction=0.3)
    data = build_splits(cfg, seed=0, progress=False)
    train = {path for path, _ in relative_set(data.train, tmp_path)}
    val = {path for path, _ in relative_set(data.val, tmp_path)}
    assert val and not val & train and train | val == expected["train"]
    assert {path for path, _ in relative_set(data.test, tmp_path)} == expected["test"]
    assert not any("val folder" in note for note in data.notes)


def test_classes_called_train_and_test_are_still_classes(tmp_path: Path) -> None:
    """Folders named ``train``/``test`` that hold videos (not class folders) are classes."""
    touch(tmp_path / "train" / "x.mp4")
    frame_folder(tmp_path / "train" / "frames_x")
    touch(tmp_path / "test" / "y.mp4")
    assert split_layout(tmp_path) == {}
    index = folder_index(tmp_path)
    assert index.classes == ["test", "train"]
    assert relative_set(index.records, tmp_path) == {
        ("test/y.mp4", 0), ("train/frames_x", 1), ("train/x.mp4", 1)
    }


def test_issue_case_numeric_label_lists_on_a_split_root(tmp_path: Path) -> None:
    """``path label`` lists over ``root/train``/``root/test``: once 'label outside 0..1'."""
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for split in lines:
        for label, name in enumerate(["climb", "dive", "run"]):
            for clip in range(3):
                touch(tmp_path / split / name / f"{name}{clip}.mp4")
                lines[split].append(f"{split}/{name}/{name}{clip}.mp4 {label}")
        (tmp_path / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    cfg = DataConfig(dataset="folder", root=str(tmp_path), annotations=str(tmp_path / "train.txt"),
                     test_annotations=str(tmp_path / "test.txt"), val_fraction=0.2)
    data = build_splits(cfg, seed=0, progress=False)
    assert data.classes == ["climb", "dive", "run"]  # named by the folders of each label
    assert relative_set(data.test, tmp_path) == {
        (line.split()[0], int(line.split()[1])) for line in lines["test"]
    }
    assert len(data.train) + len(data.val) == 9
    for record in data.train + data.val + data.test:
        assert data.classes[record.label] == record.path.parent.name


def test_classes_file_names_numeric_labels_and_orders_folders(tmp_path: Path) -> None:
    # flat list entries: no folder names the labels, so only the classes file can
    for name in ("v0.mp4", "v1.mp4", "v2.mp4", "w0.mp4"):
        touch(tmp_path / "videos" / name)
    train_list = tmp_path / "train.txt"
    train_list.write_text("v0.mp4 0\nv1.mp4 1\nv2.mp4 2\n")
    (tmp_path / "test.txt").write_text("w0.mp4 2\n")
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\ufeffzeta\r\nalpha\r\nmid\r\n")  # order defines the label ids
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "videos"),
                     annotations=str(train_list), test_annotations=str(tmp_path / "test.txt"),
                     classes_file=str(classes_file))
    data = build_splits(cfg, seed=0, progress=False)
    assert data.classes == ["zeta", "alpha", "mid"]
    assert [(r.path.name, data.classes[r.label]) for r in data.test] == [("w0.mp4", "mid")]
    # without it the names are the label numbers, never a folder that is no class
    plain = build_splits(DataConfig(dataset="folder", root=str(tmp_path / "videos"),
                                    annotations=str(train_list),
                                    test_annotations=str(tmp_path / "test.txt")), progress=False)
    assert plain.classes == ["0", "1", "2"]

    # a split tree: the file's order, not the sorted folders, gives the labels
    tree = tmp_path / "tree"
    split_tree(tree, with_val=True)
    (tmp_path / "abc.txt").write_text("c\na\nb\n")
    cfg = DataConfig(dataset="folder", root=str(tree), classes_file=str(tmp_path / "abc.txt"))
    data = build_splits(cfg, seed=0, progress=False)
    assert data.classes == ["c", "a", "b"]
    assert ("test/c/tc.mkv", 0) in relative_set(data.test, tree)
    assert ("train/a/a0.mp4", 1) in relative_set(data.train, tree)

    (tmp_path / "twice.txt").write_text("a\nb\nA\n")
    cfg = DataConfig(dataset="folder", root=str(tree), classes_file=str(tmp_path / "twice.txt"))
    with pytest.raises(VidkdError, match=r"class 'A' is listed twice \(as 'a'\)"):
        build_splits(cfg, progress=False)


def mmaction_tree(root: Path) -> None:
    touch(root / "jump" / "j0.mp4")
    touch(root / "walk" / "w0.avi")
    frame_folder(root / "rawframes" / "jump" / "j1", frames=17)
    frame_folder(root / "rawframes" / "walk" / "w1", frames=15)


def test_mmaction2_rawframe_list_path_total_frames_label(tmp_path: Path) -> None:
    mmaction_tree(tmp_path)
    rawframes = tmp_path / "rawframes.txt"
    rawframes.write_text("rawframes/jump/j1 17 0\nrawframes/walk/w1 15 1\n")
    frames = folder_index(tmp_path, rawframes)
    assert relative_set(frames.records, tmp_path) == {
        ("rawframes/jump/j1", 0), ("rawframes/walk/w1", 1)
    }
    assert frames.classes == ["jump", "walk"] and frames.missing == []
    videos = tmp_path / "videos.txt"
    videos.write_text("jump/j0.mp4 0\nwalk/w0.avi 1\n")
    index = folder_index(tmp_path, videos)
    assert relative_set(index.records, tmp_path) == {("jump/j0.mp4", 0), ("walk/w0.avi", 1)}


def test_list_paths_may_be_absolute(tmp_path: Path) -> None:
    root = tmp_path / "data"
    mmaction_tree(root)
    videos = tmp_path / "videos.txt"
    videos.write_text(f"jump/j0.mp4 0\n{root / 'walk' / 'w0.avi'} 1\n")
    rawframes = tmp_path / "rawframes.txt"
    rawframes.write_text(f"{root / 'rawframes' / 'jump' / 'j1'} 17 0\nrawframes/walk/w1 15 1\n")
    index = folder_index(root, videos)
    assert relative_set(index.records, root) == {("jump/j0.mp4", 0), ("walk/w0.avi", 1)}
    assert index.missing == []
    frames = folder_index(root, rawframes)
    assert relative_set(frames.records, root) == {("rawframes/jump/j1", 0), ("rawframes/walk/w1", 1)}


@pytest.mark.parametrize(
    ("labels", "first_missing"), [([0, 2, 3], 1), ([0, 1, 3, 5], 2), ([1, 2], 0)]
)
def test_labels_that_skip_a_class_name_the_first_missing_one(
    tmp_path: Path, labels: list[int], first_missing: int
) -> None:
    for label in range(6):  # enough class folders that every label is in range
        touch(tmp_path / "videos" / f"c{label}" / "v.mp4")
    list_file = tmp_path / "list.txt"
    list_file.write_text("".join(f"c{label}/v.mp4 {label}\n" for label in labels))
    with pytest.raises(VidkdError) as raised:
        folder_index(tmp_path / "videos", list_file)
    message = str(raised.value)
    assert f"label {first_missing} is missing" in message and "\n" not in message


def test_real_files_in_a_split_tree_decode(tmp_path: Path) -> None:
    """Tiny real videos and a frame folder under root/{train,val,test}: all decode."""
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for split, name in [("train", "a/a0.mp4"), ("train", "b/b0.mp4"), ("val", "a/va.mp4"),
                        ("test", "b/tb.mp4")]:
        (tmp_path / split / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(tmp_path / split / name, frames, fps=8)
    png_frames(tmp_path / "val" / "b" / "vb", count=4)
    report = check_config(DataConfig(dataset="folder", root=str(tmp_path)), workers=1,
                          progress=False)
    assert report.ok and report.checked == 5 and report.frames == 4 * 8 + 4
