"""``data.cache: memory``: the same clips as decoding the files, for the same seed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import vidkd.data.cache as cache_module
from vidkd.data.cache import MemoryCache
from vidkd.data.dataset import ClipSpec, VideoClipDataset
from vidkd.data.decode import open_clip_reader
from vidkd.data.records import VideoRecord
from vidkd.data.synthetic import write_video
from vidkd.errors import VidkdError


def numbered_video(path: Path, num_frames: int, size: int = 40) -> Path:
    """Frame i is filled with grey level 5 * i (plus a gradient, so crops differ)."""
    ramp = np.linspace(0, 40, size + 8, dtype=np.float32)[None, :, None]
    frames = np.stack([np.clip(5 * i + ramp + np.zeros((size, 1, 3)), 0, 255) for i in range(num_frames)])
    write_video(path, frames.astype(np.uint8), fps=25)
    return path


def same_items(records, spec, cache: MemoryCache, **kwargs) -> None:
    from_files = VideoClipDataset(records, spec, **kwargs)
    from_memory = VideoClipDataset(records, spec, open_reader=cache.open, **kwargs)
    for epoch in (0, 3):
        from_files.set_epoch(epoch)
        from_memory.set_epoch(epoch)
        for index in range(len(records)):
            a, b = from_files[index], from_memory[index]
            assert torch.equal(a["clips"], b["clips"]), (epoch, index)
            assert a["failed"] == b["failed"] and a["index"] == b["index"]


def test_memory_clips_equal_file_clips(tmp_path):
    # lengths around the clip length: loop padding, short videos, starts near the end
    records = [VideoRecord(str(numbered_video(tmp_path / f"v{n}.mp4", n)), n % 2)
               for n in (3, 8, 13, 40)]
    spec = ClipSpec(clip_len=8, frame_stride=2, short_side=32, crop_size=24)
    cache = MemoryCache(spec.short_side, budget_mb=64)
    cache.fill([r.path for r in records], progress=False)
    assert len(cache.videos) == 4
    same_items(records, spec, cache, mode="train", num_views=2, seed=7)
    same_items(records, spec, cache, mode="test", num_clips=3)


def test_real_ucf101_and_frame_folders(shared):
    videos = sorted((shared / "ucf101-mini").glob("*/*.mp4"))[:3]
    folders = sorted(p for p in (shared / "formats" / "RaivoKoot_frames").rglob("*") if p.is_dir()
                     and any(p.glob("img_*.jpg")))[:1]
    records = [VideoRecord(str(p), i) for i, p in enumerate(videos + folders)]
    assert len(records) == 4
    spec = ClipSpec(clip_len=8, frame_stride=1, short_side=64, crop_size=56)
    cache = MemoryCache(spec.short_side, budget_mb=512)
    cache.fill([r.path for r in records], progress=False)
    for record in records:  # the container's frame count drives sampling, not the decoded one
        with open_clip_reader(record.path, spec.short_side) as reader:
            assert cache.open(record.path, spec.short_side).info == reader.info
    same_items(records, spec, cache, mode="train", num_views=2, seed=3)


def test_corrupt_video_is_read_from_its_file_and_counted(tmp_path):
    good = VideoRecord(str(numbered_video(tmp_path / "good.mp4", 20)), 0)
    bad_path = tmp_path / "bad.mp4"
    bad_path.write_bytes(b"not a video at all")
    bad = VideoRecord(str(bad_path), 1)
    cache = MemoryCache(32, budget_mb=64)
    cache.fill([good.path, bad.path], progress=False)
    assert list(cache.videos) == [good.path]
    data = VideoClipDataset([bad, good], ClipSpec(4, 1, 32, 32), "train",
                            seed=0, open_reader=cache.open)
    item = data[0]
    assert item["failed"] and item["failed"][0].startswith(str(bad_path))


def test_budget_is_one_line(tmp_path):
    paths = [str(numbered_video(tmp_path / f"v{i}.mp4", 40, size=64)) for i in range(3)]
    cache = MemoryCache(64, budget_mb=1)  # each video: 40 x 64 x 72 x 3 = 0.53 MiB
    with pytest.raises(VidkdError, match="data.cache_budget_mb=1 .*first 2 of 3"):
        cache.fill(paths, progress=False)


def test_one_long_video_stops_decoding_at_the_budget(tmp_path, monkeypatch):
    """A single video longer than the whole budget was decoded to the end before the
    budget was checked: a long film could exhaust memory first. Decoding now stops one
    frame past what the budget holds."""
    path = str(numbered_video(tmp_path / "long.mp4", 120, size=64))  # 120 x 64 x 72 x 3: 1.6 MiB
    decoded: list[int] = []
    real_open = cache_module.open_clip_reader

    def counting_open(*args, **kwargs):
        reader = real_open(*args, **kwargs)
        real_read_all = reader.read_all

        def read_all(*a, **k):
            frames = real_read_all(*a, **k)
            decoded.append(len(frames))
            return frames

        reader.read_all = read_all
        return reader

    monkeypatch.setattr(cache_module, "open_clip_reader", counting_open)
    with pytest.raises(VidkdError, match="data.cache_budget_mb=1 .*first 1 of 1"):
        MemoryCache(64, budget_mb=1).fill([path], progress=False)
    frame_bytes = 64 * 72 * 3
    assert decoded == [2**20 // frame_bytes + 1]  # 76 of 120 frames
    with open_clip_reader(path, 64) as reader, open_clip_reader(path, 64) as again:
        assert (reader.read_all(max_frames=3) == again.read_all()[:4]).all()  # the first frames
    cache = MemoryCache(64, budget_mb=2)  # fits: every frame, as before
    cache.fill([path], progress=False)
    assert cache.videos[path][0].shape[0] == 120


def test_training_run_with_memory_cache_equals_file_run(tmp_path, synthetic_cache, tiny_config):
    from safetensors.torch import load_file

    from vidkd.config import config_from_dict
    from vidkd.engine.train import train

    for name, cache in (("files", "none"), ("memory", "memory")):
        values = tiny_config(synthetic_cache, tmp_path, name)
        values["data"]["cache"] = cache
        values["train"]["epochs"] = 1
        train(config_from_dict(values), progress=False)
    a = load_file(str(tmp_path / "files" / "student.safetensors"))
    b = load_file(str(tmp_path / "memory" / "student.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_threaded_fill_equals_one_thread_in_order(tmp_path, monkeypatch):
    paths = [str(numbered_video(tmp_path / f"v{n}.mp4", n)) for n in (5, 9, 12, 20, 33)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    paths.insert(2, str(bad))
    one, many = MemoryCache(32, budget_mb=64), MemoryCache(32, budget_mb=64)
    one.fill(paths, progress=False, threads=1)
    real = MemoryCache._decode

    def earlier_is_slower(self, path):  # decodes finish in the reverse of the list's order
        time.sleep(0.05 * (len(paths) - paths.index(path)))
        return real(self, path)

    monkeypatch.setattr(MemoryCache, "_decode", earlier_is_slower)
    many.fill(paths, progress=False, threads=3)
    assert list(many.videos) == [p for p in paths if p != str(bad)] == list(one.videos)
    for path, (frames, info) in one.videos.items():
        assert np.array_equal(many.videos[path][0], frames) and many.videos[path][1] == info
    assert many.used == one.used


def test_threaded_fill_decodes_only_its_window_ahead_of_the_budget(tmp_path, monkeypatch):
    paths = [str(numbered_video(tmp_path / f"v{i}.mp4", 40, size=64)) for i in range(12)]
    submitted: list[str] = []

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            submitted.append(args[0])
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(cache_module, "ThreadPoolExecutor", CountingPool)
    for progress in (False, True):
        submitted.clear()
        cache = MemoryCache(64, budget_mb=1)  # the second video crosses 1 MiB
        with pytest.raises(VidkdError, match="first 2 of 12"):
            cache.fill(paths, progress=progress, threads=2)
        assert submitted == paths[:2 + 2]  # the two checked, then the window of 2 threads


def test_decode_threads_share_the_usable_cpus(monkeypatch):
    from vidkd.config import load_config
    from vidkd.engine.distributed import DistInfo
    from vidkd.engine.train import decode_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)), raising=False)
    plain, capped = load_config(None), load_config(None, ["train.threads=2"])
    assert decode_threads(plain, DistInfo()) == 8  # 12 usable, at most 8
    assert decode_threads(plain, DistInfo(local_world_size=4)) == 3  # 12 CPUs over 4 ranks
    assert decode_threads(capped, DistInfo()) == 2
    assert decode_threads(plain, DistInfo(local_world_size=24)) == 1
