"""Tests for the dataset indexes (UCF101, HMDB51, Kinetics, generic folders, frame lists)."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import pytest

from vidkd.data.index import (
    folder_index,
    frame_list_index,
    hmdb51_index,
    kinetics_index,
    split_train_val,
    ucf101_index,
)
from vidkd.data.records import VideoRecord
from vidkd.errors import VidkdError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def stem_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "by file stem" in r.getMessage()]


def list_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- UCF101


def test_ucf101_class_ind_gives_101_zero_based_classes(shared: Path) -> None:
    index = ucf101_index(shared / "ucf101-mini", shared / "ucf101-splits", 1, "train")
    assert len(index.classes) == 101
    assert index.classes[0] == "ApplyEyeMakeup"
    assert index.classes[36] == "HandstandPushups"  # classInd line "37 HandstandPushups"
    assert index.classes[100] == "YoYo"
    assert all(not name.endswith("\r") for name in index.classes)  # CRLF stripped


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_splits_on_mini(
    shared: Path, split: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vidkd")
    video_root, split_dir = shared / "ucf101-mini", shared / "ucf101-splits"
    train = ucf101_index(video_root, split_dir, split, "train")
    test = ucf101_index(video_root, split_dir, split, "test")

    on_disk = set(video_root.glob("*/*.mp4"))
    assert len(on_disk) == 121
    train_paths = {r.path for r in train.records}
    test_paths = {r.path for r in test.records}
    # every mini clip is in exactly one of the official train/test lists of each split
    assert train_paths | test_paths == on_disk
    assert not train_paths & test_paths
    # the rest of the 13,320 list entries are missing, never fatal
    n_train = len(list_lines(split_dir / f"trainlist{split:02d}.txt"))
    n_test = len(list_lines(split_dir / f"testlist{split:02d}.txt"))
    assert len(train.records) + len(train.missing) == n_train
    assert len(test.records) + len(test.missing) == n_test
    assert n_train + n_test == 13_320
    assert all(entry.endswith(".avi") for entry in train.missing[:50])

    for record in train.records + test.records:  # labels (train: list, test: folder) match folders
        assert train.classes[record.label] == record.path.parent.name
        assert record.group == re.search(r"_(g\d\d)_", record.path.name).group(1)
    # the official split keeps groups 1-7 / 8-14 / 15-21 out of training
    test_groups = {int(r.group[1:]) for r in test.records}
    assert test_groups <= set(range(7 * split - 6, 7 * split + 1))

    # list says .avi, disk has .mp4: one warning per index build, with the count
    messages = stem_warnings(caplog)
    assert len(messages) == 2
    assert f"resolved {len(train.records)} list entries" in messages[0]
    assert "list says .avi, disk has .mp4" in messages[0]
    assert f"resolved {len(test.records)} list entries" in messages[1]


def test_ucf101_handstand_pushups_spelling_resolves(shared: Path) -> None:
    video_root, split_dir = shared / "ucf101-mini", shared / "ucf101-splits"
    records = [
        record
        for subset in ("train", "test")
        for record in ucf101_index(video_root, split_dir, 1, subset).records
        if record.label == 36
    ]
    # lists name HandstandPushups/v_HandStandPushups_*.avi; all 5 mini clips resolve
    assert len(records) == 5
    assert {r.path.name.split("_g")[0] for r in records} == {"v_HandStandPushups"}


def test_ucf101_user_folder_spelling_and_extensions(
    shared: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vidkd")
    # a user folder spelled like the file names, the official .avi, and a .mkv re-encode
    avi = touch(tmp_path / "HandStandPushups" / "v_HandStandPushups_g08_c01.avi")
    mkv = touch(tmp_path / "applyeyemakeup" / "v_ApplyEyeMakeup_g08_c02.mkv")
    index = ucf101_index(tmp_path, shared / "ucf101-splits", 1, "train")
    by_path = {r.path: r for r in index.records}
    assert set(by_path) == {avi, mkv}
    assert by_path[avi].label == 36 and by_path[avi].group == "g08"
    assert by_path[mkv].label == 0
    assert stem_warnings(caplog) == [
        f"trainlist01.txt: resolved 1 list entries by file stem under {tmp_path} "
        "(list says .avi, disk has .mkv)"
    ]


def test_ucf101_errors(shared: Path, tmp_path: Path) -> None:
    with pytest.raises(VidkdError, match="classInd.txt not found"):
        ucf101_index(shared / "ucf101-mini", tmp_path, 1, "train")
    with pytest.raises(VidkdError, match="split must be 1, 2 or 3"):
        ucf101_index(shared / "ucf101-mini", shared / "ucf101-splits", 4, "train")
    (tmp_path / "videos").mkdir()
    with pytest.raises(VidkdError, match=r"no videos found under .*videos.*9537 entries"):
        ucf101_index(tmp_path / "videos", shared / "ucf101-splits", 1, "train")
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n")
    with pytest.raises(VidkdError, match="testlist01.txt not found"):
        ucf101_index(shared / "ucf101-mini", tmp_path, 1, "test")


# --------------------------------------------------------------------------- HMDB51


def test_hmdb51_official_per_class_split_files(tmp_path: Path) -> None:
    splits, videos = tmp_path / "testTrainMulti_7030_splits", tmp_path / "hmdb51"
    splits.mkdir()
    (splits / "cartwheel_test_split1.txt").write_text(
        "Cartwheel_A_cartwheel_f_cm_np1_le_med_0.avi 1 \n"
        "Cartwheel_B_cartwheel_f_cm_np1_le_med_1.avi 2 \n"
        "Cartwheel_C_cartwheel_f_cm_np1_le_med_2.avi 0 \n"
    )
    (splits / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
        "April_09_brush_hair_u_nm_np1_ba_goo_1.avi 1 \n"
        "Blonde_hair_brush_hair_h_nm_np1_fr_goo_0.avi 2 \n"
    )
    (splits / "cartwheel_test_split2.txt").write_text("Other_cartwheel_0.avi 1 \n")
    for name in (
        "cartwheel/Cartwheel_A_cartwheel_f_cm_np1_le_med_0.avi",
        "cartwheel/Cartwheel_B_cartwheel_f_cm_np1_le_med_1.avi",
        "cartwheel/Cartwheel_C_cartwheel_f_cm_np1_le_med_2.avi",
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "brush_hair/Blonde_hair_brush_hair_h_nm_np1_fr_goo_0.avi",
    ):
        touch(videos / name)

    train = hmdb51_index(videos, splits, 1, "train")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert [(r.path.relative_to(videos).as_posix(), r.label) for r in train.records] == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
        ("cartwheel/Cartwheel_A_cartwheel_f_cm_np1_le_med_0.avi", 1),
    ]
    assert train.missing == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi"]
    assert [r.group for r in train.records] == [
        "April_09_brush_hair_u_nm_np1_ba_goo", "Cartwheel_A_cartwheel_f_cm_np1_le_med"]

    test = hmdb51_index(videos, splits, 1, "test")
    assert sorted(r.path.name for r in test.records) == [
        "Blonde_hair_brush_hair_h_nm_np1_fr_goo_0.avi",
        "Cartwheel_B_cartwheel_f_cm_np1_le_med_1.avi",
    ]
    assert test.missing == []


def test_hmdb51_mmaction_lists(shared: Path, tmp_path: Path) -> None:
    split_dir = shared / "hmdb51-splits"
    train_lines = list_lines(split_dir / "hmdb51_train_split_1_videos.txt")
    val_lines = list_lines(split_dir / "hmdb51_val_split_1_videos.txt")
    wanted = [line.split()[0] for line in train_lines[:3] + val_lines[:2]]
    for relative in wanted[:-1]:
        touch(tmp_path / relative)
    touch(tmp_path / wanted[-1]).rename((tmp_path / wanted[-1]).with_suffix(".mp4"))

    train = hmdb51_index(tmp_path, split_dir, 1, "train")
    assert len(train.classes) == 51
    assert train.classes == sorted(train.classes)  # MMAction2 labels follow alphabetical order
    assert train.classes[0] == "brush_hair" and train.classes[50] == "wave"
    assert [r.path.relative_to(tmp_path).as_posix() for r in train.records] == wanted[:3]
    assert len(train.missing) == len(train_lines) - 3 == 3567
    for record, line in zip(train.records, train_lines[:3], strict=True):
        assert record.label == int(line.split()[1])
        assert train.classes[record.label] == record.path.parent.name

    test = hmdb51_index(tmp_path, split_dir, 1, "test")  # reads the "val" list
    assert test.classes == train.classes
    assert [r.path.name for r in test.records] == [
        Path(wanted[3]).name,
        Path(wanted[4]).with_suffix(".mp4").name,
    ]
    assert len(test.records) + len(test.missing) == len(val_lines) == 1530


def test_hmdb51_errors(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    with pytest.raises(VidkdError, match="split directory .*nowhere does not exist"):
        hmdb51_index(tmp_path / "videos", tmp_path / "nowhere", 1, "train")
    with pytest.raises(VidkdError, match=r"no HMDB51 split 2 files .*hmdb51_train_split_2"):
        hmdb51_index(tmp_path / "videos", tmp_path, 2, "train")


# --------------------------------------------------------------------------- Kinetics


def kinetics_rows(shared: Path) -> list[dict[str, str]]:
    with (shared / "kinetics400-annotations" / "val.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def kinetics_name(row: dict[str, str], ext: str = ".mp4") -> str:
    start, end = int(row["time_start"]), int(row["time_end"])
    return f"{row['youtube_id']}_{start:06d}_{end:06d}{ext}"


@pytest.mark.parametrize("layout", ["flat", "per_label"])
def test_kinetics_layouts_with_missing_videos(
    shared: Path, tmp_path: Path, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vidkd")
    rows = kinetics_rows(shared)
    labels = ["shooting goal (soccer)", "massaging person's head", "abseiling"]
    chosen = [next(row for row in rows if row["label"] == label) for label in labels]
    created = []
    for row, ext in zip(chosen, (".mp4", ".mkv", ".webm"), strict=True):
        if layout == "flat":
            folder = tmp_path
        elif row["label"] == "abseiling":
            folder = tmp_path / row["label"]
        else:  # the usual downloaders replace spaces by underscores
            folder = tmp_path / row["label"].replace(" ", "_")
        created.append(touch(folder / kinetics_name(row, ext)))

    annotations = shared / "kinetics400-annotations"
    index = kinetics_index(tmp_path, annotations / "val.csv", "val")
    assert len(index.classes) == 400
    assert index.classes == sorted(index.classes)
    row_of = dict(zip(created, chosen, strict=True))
    assert {r.path for r in index.records} == set(created)
    for record in index.records:
        row = row_of[record.path]
        assert index.classes[record.label] == row["label"]
        assert record.group == row["youtube_id"]
        assert record.start_sec is None and record.end_sec is None
    assert len(index.missing) == len(rows) - 3 == 19_874
    assert stem_warnings(caplog) == []  # the CSV names no extension: not a mismatch
    assert any("19874 of 19877 entries not found" in r.getMessage() for r in caplog.records)

    with_labels = kinetics_index(
        tmp_path, annotations / "val.csv", "val", annotations / "kinetics_400_labels.csv"
    )
    assert with_labels.classes == index.classes  # id,name file: same 400 names, same order
    assert [r.label for r in with_labels.records] == [r.label for r in index.records]


def test_kinetics_untrimmed_segments_and_label_less_rows(shared: Path, tmp_path: Path) -> None:
    header = (shared / "kinetics400-annotations" / "val.csv").read_text().splitlines()[0]
    assert header == '"label","youtube_id","time_start","time_end","split","is_cc"'
    csv_file = tmp_path / "test.csv"
    csv_file.write_text(
        header + "\n"
        '"tying knot (not on a tie)","abc-DEF_123",5,15,"test",0\n'
        '"","zzzzzzzzzzz",0,10,"test",0\n'
        '"abseiling","trainonly00",1,11,"train",0\n'
    )
    videos = tmp_path / "videos"
    touch(videos / "tying_knot_(not_on_a_tie)" / "abc-DEF_123_000005_000015.avi")
    index = kinetics_index(videos, csv_file, "test", trimmed=False)
    assert index.classes == ["tying knot (not on a tie)"]
    (record,) = index.records
    assert (record.label, record.start_sec, record.end_sec) == (0, 5.0, 15.0)

    with pytest.raises(VidkdError, match="no rows with split 'validate'.*'test', 'train'"):
        kinetics_index(videos, csv_file, "validate")
    csv_file.write_text("youtube_id,time_start,time_end,split\nabc-DEF_123,5,15,test\n")
    with pytest.raises(VidkdError, match="subset 'test' has no labels"):
        kinetics_index(videos, csv_file, "test")
    with pytest.raises(VidkdError, match="annotation file .*nope.csv not found"):
        kinetics_index(videos, tmp_path / "nope.csv", "test")


def test_kinetics_no_videos_is_an_error(shared: Path, tmp_path: Path) -> None:
    csv_file = shared / "kinetics400-annotations" / "train_2000.csv"
    with pytest.raises(VidkdError, match=f"no videos found under {re.escape(str(tmp_path))}"):
        kinetics_index(tmp_path, csv_file, "train")


# --------------------------------------------------------------------------- folders


def make_folder_tree(root: Path) -> None:
    touch(root / "walk" / "v_Walk_g02_c01.mp4")
    touch(root / "walk" / "with space.avi")
    touch(root / "walk" / "notes.txt")
    touch(root / "Jump" / "b.mkv")
    touch(root / "Jump" / "frames_vid" / "img_00001.jpg")
    touch(root / "Jump" / "frames_vid" / "img_00002.jpg")
    (root / "Jump" / "not_a_video").mkdir()


def test_folder_index_scans_classes_and_frame_folders(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    index = folder_index(tmp_path)
    assert index.classes == ["Jump", "walk"]
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label, r.group) for r in index.records] == [
        ("Jump/b.mkv", 0, None),
        ("Jump/frames_vid", 0, None),
        ("walk/v_Walk_g02_c01.mp4", 1, "g02"),
        ("walk/with space.avi", 1, None),
    ]
    only_walk = folder_index(tmp_path, classes=["WALK"], extensions=(".mp4",))
    assert [r.path.name for r in only_walk.records] == ["v_Walk_g02_c01.mp4"]
    assert only_walk.classes == ["WALK"]


def test_folder_index_with_list_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="vidkd")
    make_folder_tree(tmp_path / "videos")
    list_file = tmp_path / "val.txt"
    list_file.write_text(
        "walk/v_Walk_g02_c01.avi 1\r\n"  # stem match, explicit label
        "walk/with space.avi\r\n"  # label from folder
        "jump/b.mkv\r\n"  # case-insensitive folder
        "Jump/frames_vid 0\r\n"
        "walk/gone.mp4 1\r\n"
    )
    index = folder_index(tmp_path / "videos", list_file)
    assert [(r.path.name, r.label) for r in index.records] == [
        ("v_Walk_g02_c01.mp4", 1),
        ("with space.avi", 1),
        ("b.mkv", 0),
        ("frames_vid", 0),
    ]
    assert index.missing == ["walk/gone.mp4"]
    assert len(stem_warnings(caplog)) == 1
    with pytest.raises(VidkdError, match="annotation file .*absent.txt not found"):
        folder_index(tmp_path / "videos", tmp_path / "absent.txt")


def test_folder_index_on_real_frame_folders(shared: Path) -> None:
    root = shared / "formats" / "RaivoKoot_frames" / "demo_dataset"
    index = folder_index(root)
    assert index.classes == ["jumping", "running"]
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in index.records] == [
        ("jumping/0001", 0),
        ("jumping/0002", 0),
        ("running/0001", 1),
        ("running/0002", 1),
    ]


def test_frame_list_index_reads_videoframedataset_annotations(shared: Path, tmp_path: Path) -> None:
    root = shared / "formats" / "RaivoKoot_frames" / "demo_dataset"
    index = frame_list_index(root, root / "annotations.txt")
    assert index.classes == ["jumping", "running"]
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in index.records] == [
        ("jumping/0001", 0),
        ("jumping/0002", 0),
        ("running/0001", 1),
        ("running/0002", 1),
    ]
    sub_range = tmp_path / "annotations.txt"
    sub_range.write_text("jumping/0001 1 17 0\njumping/0002 3 10 0\n")
    records = frame_list_index(root, sub_range).records
    assert [(r.start_frame, r.end_frame) for r in records] == [(None, None), (2, 10)]
    with pytest.raises(VidkdError, match="missing.txt not found"):
        frame_list_index(root, tmp_path / "missing.txt")


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "some_class").mkdir()
    with pytest.raises(VidkdError, match=f"no videos found under {re.escape(str(tmp_path))}: "):
        folder_index(tmp_path)
    with pytest.raises(VidkdError, match="does not exist"):
        folder_index(tmp_path / "absent")


# --------------------------------------------------------------------------- validation split


def synthetic_records() -> list[VideoRecord]:
    records = [
        VideoRecord(Path(f"g{group}_{i}.mp4"), group % 3, group=f"g{group:02d}")
        for group in range(30)
        for i in range(1 + group % 6)
    ]
    return records + [VideoRecord(Path(f"solo_{i}.mp4"), 0) for i in range(20)]


def test_split_train_val_is_group_disjoint_deterministic_and_about_a_tenth() -> None:
    records = synthetic_records()  # 105 grouped + 20 ungrouped = 125
    train, val = split_train_val(records, fraction=0.1, seed=0)
    assert sorted(map(str, (r.path for r in train + val))) == sorted(str(r.path) for r in records)
    assert {r.group for r in train if r.group}.isdisjoint({r.group for r in val if r.group})
    assert 10 <= len(val) <= 15
    assert split_train_val(records, fraction=0.1, seed=0) == (train, val)
    assert split_train_val(records, fraction=0.1, seed=1) != (train, val)
    assert [r for r in records if r in val] == val  # input order kept

    two_groups = [VideoRecord(Path("a.mp4"), 0, "g1"), VideoRecord(Path("b.mp4"), 0, "g2")]
    train, val = split_train_val(two_groups, fraction=0.01)
    assert len(train) == len(val) == 1  # at least one video in val when possible
    one_group = two_groups[:1] * 2
    assert split_train_val(one_group) == (one_group, [])
    with pytest.raises(ValueError, match="fraction"):
        split_train_val(records, fraction=1.0)


def test_split_train_val_on_ucf101_groups(shared: Path) -> None:
    index = ucf101_index(shared / "ucf101-mini", shared / "ucf101-splits", 1, "train")
    train, val = split_train_val(index.records, fraction=0.2, seed=3)
    assert val and train
    assert {r.group for r in train}.isdisjoint({r.group for r in val})
