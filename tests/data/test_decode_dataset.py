"""Clip decoding (seek, not whole-video decode), clip sampling and the clip dataset."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidkd.data.dataset import ClipSpec, VideoClipDataset, collate
from vidkd.data.decode import DecodeError, FrameFolderReader, VideoReader, open_clip_reader
from vidkd.data.records import VideoRecord
from vidkd.data.sampling import random_clip, uniform_clips
from vidkd.data.synthetic import write_video
from vidkd.data.transforms import to_model_input


def numbered_video(path: Path, num_frames: int = 40, size: int = 48) -> Path:
    """Frame i is filled with grey level 5 * i, so a decoded frame tells its index."""
    frames = np.zeros((num_frames, size, size + 16, 3), np.uint8)
    for i in range(num_frames):
        frames[i] = 5 * i
    write_video(path, frames, fps=25)
    return path


def frame_index(image: np.ndarray) -> int:
    return int(round(float(image.mean()) / 5))


def test_reader_seeks_to_exact_frames(tmp_path):
    path = numbered_video(tmp_path / "n.mp4")
    with VideoReader(path) as reader:
        assert reader.info.num_frames == 40 and reader.info.fps == 25
        for start in (0, 7, 20, 31, 3):
            clip = reader.read(start, 8)
            assert [frame_index(f) for f in clip] == list(range(start, start + 8))
        clip = reader.read(10, 5, stride=3)
        assert [frame_index(f) for f in clip] == [10, 13, 16, 19, 22]


def test_short_video_is_loop_padded_and_resized(tmp_path):
    path = numbered_video(tmp_path / "short.mp4", num_frames=5)
    with VideoReader(path, short_side=32) as reader:
        clip = reader.read(0, 8)
    assert clip.shape == (8, 32, 42, 3)  # 48x64 -> shorter side 32, aspect kept (even width)
    assert [frame_index(f) for f in clip] == [0, 1, 2, 3, 4, 0, 1, 2]


def test_seek_matches_whole_video_decode_on_real_ucf101(shared):
    path = sorted((shared / "ucf101-mini").glob("*/*.mp4"))[7]
    with av.open(str(path)) as container:
        frames = [f.reformat(width=170, height=128, format="rgb24").to_ndarray()
                  for f in container.decode(video=0)]
    with VideoReader(path, short_side=128) as reader:
        assert (reader.out_width, reader.out_height) == (170, 128)
        for start in (0, 37, len(frames) - 16):
            clip = reader.read(start, 16)
            for i in range(16):
                np.testing.assert_array_equal(clip[i], frames[start + i])


@pytest.mark.parametrize("relative", ["formats/C3D-keras", "formats/tiny-ucf101", "formats/kth_tejaswinisoni13"])
def test_real_formats_decode(shared, relative):
    files = [p for p in sorted((shared / relative).rglob("*")) if p.suffix in (".avi", ".mp4")]
    assert files
    for path in files[:3]:
        with open_clip_reader(path, short_side=64) as reader:
            clip = reader.read(max(reader.info.num_frames // 2 - 8, 0), 8)
        assert clip.shape[0] == 8 and min(clip.shape[1:3]) == 64 and clip.dtype == np.uint8


def test_frame_folder_backend(shared):
    folder = next(p for p in sorted((shared / "formats" / "RaivoKoot_frames").rglob("*"))
                  if p.is_dir() and list(p.glob("*.jpg")))
    reader = FrameFolderReader(folder, short_side=32)
    clip = reader.read(0, 4)
    assert clip.shape[0] == 4 and min(clip.shape[1:3]) == 32
    assert reader.info.num_frames == len(list(folder.glob("*.jpg")))


def test_unreadable_files_raise_decode_error(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all")
    for name in ("zero.mp4", "text.mp4", "missing.mp4"):
        with pytest.raises(DecodeError):
            with open_clip_reader(tmp_path / name) as reader:
                reader.read(0, 4)


def test_uniform_and_random_clip_positions():
    clips = uniform_clips(100, 16, 1, 4)
    assert [c.start for c in clips] == [10, 31, 53, 74]  # 85 start positions in 4 equal parts
    assert all(c.start + 16 <= 100 for c in clips)
    assert {c.start for c in uniform_clips(10, 16, 1, 3)} == {0}
    rng = np.random.default_rng(0)
    starts = [random_clip(50, 8, 2, rng).start for _ in range(500)]
    assert min(starts) == 0 and max(starts) == 50 - 15  # span (8 - 1) * 2 + 1 = 15
    assert all(10 <= random_clip(200, 4, 1, rng, first=10, last=30).start <= 26 for _ in range(50))


def make_records(tmp_path, count: int = 4) -> list[VideoRecord]:
    return [VideoRecord(numbered_video(tmp_path / f"v{i}.mp4", 30 + 5 * i), i % 2)
            for i in range(count)]


def test_train_items_two_views_independent(tmp_path):
    records = make_records(tmp_path)
    spec = ClipSpec(clip_len=4, short_side=32, crop_size=24)
    data = VideoClipDataset(records, spec, "train", num_views=2, seed=1)
    item = data[2]
    assert item["clips"].shape == (2, 4, 24, 24, 3) and item["clips"].dtype == torch.uint8
    assert item["label"] == 0 and item["valid"] and item["failed"] == []
    data.set_epoch(1)
    different = sum(
        frame_index(data[i]["clips"][0, 0].numpy()) != frame_index(data[i]["clips"][1, 0].numpy())
        for i in range(4)
    )
    assert different >= 2
    same = VideoClipDataset(records, spec, "train", num_views=2, same_clip=True, seed=1)
    item = same[3]
    assert frame_index(item["clips"][0, 0].numpy()) == frame_index(item["clips"][1, 0].numpy())
    # deterministic for (seed, epoch, index)
    assert torch.equal(VideoClipDataset(records, spec, "train", seed=5)[1]["clips"],
                       VideoClipDataset(records, spec, "train", seed=5)[1]["clips"])


def test_crop_window_is_shared_by_all_frames_of_a_clip(tmp_path):
    frames = np.zeros((6, 40, 40, 3), np.uint8)
    ys, xs = np.mgrid[0:40, 0:40]
    for t in range(6):
        frames[t, ..., 0] = ys * 6  # position encoded in the pixels, identical in every frame
        frames[t, ..., 1] = xs * 6
    write_video(tmp_path / "grid.mp4", frames, fps=25)
    data = VideoClipDataset([VideoRecord(tmp_path / "grid.mp4", 0)],
                            ClipSpec(clip_len=6, short_side=40, crop_size=16), "train", seed=3)
    clip = data[0]["clips"][0].int()
    assert (clip - clip[0:1]).abs().max() <= 12  # compression noise only, no per-frame offset


def grid_frames(folder: Path, num_frames: int, height: int, width: int) -> np.ndarray:
    """A PNG frame folder (lossless) whose pixels tell their row, column and frame; returns
    the frames as written."""
    folder.mkdir(parents=True)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0], frames[t, ..., 1], frames[t, ..., 2] = ys * 7, xs * 5, t * 9
        encoder = av.CodecContext.create("png", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "rgb24"
        packets = encoder.encode(av.VideoFrame.from_ndarray(frames[t], format="rgb24"))
        packets += encoder.encode(None)
        (folder / f"img_{t + 1:05d}.png").write_bytes(b"".join(bytes(p) for p in packets))
    return frames


def test_test_crop_is_the_centre_crop(tmp_path):
    frames = grid_frames(tmp_path / "grid", 8, 20, 30)
    spec = ClipSpec(clip_len=3, short_side=20, crop_size=12)  # no resize: the frames are 20 high
    data = VideoClipDataset([VideoRecord(tmp_path / "grid", 0)], spec, "test", num_clips=2)
    clips = data[0]["clips"].numpy()
    top, left = (20 - 12) // 2, (30 - 12) // 2  # 4, 9: every other window shows other pixels
    starts = [clip.start for clip in uniform_clips(8, 3, 1, 2)]
    assert starts == [1, 4]
    for clip, start in zip(clips, starts, strict=True):
        np.testing.assert_array_equal(clip, frames[start : start + 3, top : top + 12, left : left + 12])


def test_same_clip_reuses_frames_and_crop_window(tmp_path):
    grid_frames(tmp_path / "grid", 12, 24, 32)
    records = [VideoRecord(tmp_path / "grid", 0)] * 6
    spec = ClipSpec(clip_len=4, short_side=24, crop_size=16)
    same = VideoClipDataset(records, spec, "train", num_views=2, same_clip=True, seed=2)
    independent = VideoClipDataset(records, spec, "train", num_views=2, seed=2)
    for index in range(6):
        views = same[index]["clips"]
        assert torch.equal(views[0], views[1])  # same frames, same window
    assert sum(not torch.equal(*independent[i]["clips"]) for i in range(6)) >= 5


def test_test_items_are_uniform_centre_crops(tmp_path):
    records = make_records(tmp_path, 2)
    data = VideoClipDataset(records, ClipSpec(clip_len=4, short_side=32, crop_size=24), "test",
                            num_clips=3)
    item = data[1]  # 35 frames: room 32, clips at 5, 16, 26
    assert item["clips"].shape == (3, 4, 24, 24, 3)
    assert [frame_index(c[0].numpy()) for c in item["clips"]] == [5, 16, 26]
    batch = collate([data[0], data[1]])
    assert batch["clips"].shape == (2, 3, 4, 24, 24, 3) and batch["label"].tolist() == [0, 1]
    inputs = to_model_input(batch["clips"].flatten(0, 1), torch.device("cpu"))
    assert inputs.shape == (6, 3, 4, 24, 24)
    assert inputs.is_contiguous(memory_format=torch.channels_last_3d)
    assert -1.0 <= inputs.min() and inputs.max() <= 1.0


def test_corrupt_video_is_replaced_in_training_and_flagged_in_test(tmp_path):
    records = make_records(tmp_path, 3)
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    records.append(VideoRecord(tmp_path / "bad.mp4", 1))
    spec = ClipSpec(clip_len=4, short_side=32, crop_size=24)
    item = VideoClipDataset(records, spec, "train")[3]
    assert item["valid"] and item["index"] != 3
    assert len(item["failed"]) >= 1 and item["failed"][0].startswith(str(tmp_path / "bad.mp4"))
    item = VideoClipDataset(records, spec, "test", num_clips=2)[3]
    assert not item["valid"] and item["failed"][0].startswith(str(tmp_path / "bad.mp4"))


def test_clip_positions_inside_a_segment_and_a_short_room():
    """Positions by hand: a segment [first, last) that is cut at the video's end, a segment
    that starts late, a segment shorter than a clip, and a room of exactly one frame."""
    from vidkd.data.sampling import random_clip, uniform_clips

    rng = np.random.default_rng(0)
    starts = {random_clip(20, 4, 1, rng, 0, 100).start for _ in range(300)}
    assert starts == set(range(17))  # last = min(100, 20): 20 - 4 + 1 places
    # room 20 - 0 - 4 + 1 = 17 frames in 2 parts of 8.5: centres at 4.25 and 12.75
    assert [c.start for c in uniform_clips(20, 4, 1, 2, 0, 100)] == [4, 12]
    # room 100 - 20 - 16 + 1 = 65 in 4 parts of 16.25, offset by first = 20
    assert [c.start for c in uniform_clips(100, 16, 1, 4, first=20)] == [28, 44, 60, 76]
    assert {c.start for c in uniform_clips(20, 16, 1, 3, first=10)} == {10}  # 10 frames < 16
    assert {random_clip(9, 8, 1, rng).start for _ in range(200)} == {0, 1}  # room of one frame
