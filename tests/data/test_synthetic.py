"""Tests for the procedurally generated dataset (vidkd.data.synthetic)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from vidkd.data import synthetic
from vidkd.data.synthetic import (
    CLASSES,
    MARKER,
    MAX_SCALE,
    MIN_SCALE,
    ObjectTrack,
    Scene,
    SyntheticSpec,
    dataset_root,
    default_cache_dir,
    ensure_synthetic_dataset,
    is_finished,
    render_scene,
    render_video,
    sample_scene,
    write_video,
)
from vidkd.errors import VidkdError

SMALL = SyntheticSpec(
    num_classes=3, train_per_class=2, test_per_class=1, size=32, min_frames=6, max_frames=10
)
DEFAULT = SyntheticSpec()


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_list(path: Path) -> list[tuple[str, int]]:
    return [
        (name, int(label))
        for name, label in (line.split() for line in path.read_text().splitlines())
    ]


def file_times(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- on disk


def test_layout_lists_and_decoded_videos(tmp_path: Path) -> None:
    root = ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1)
    assert root.parent == tmp_path and root == dataset_root(tmp_path, SMALL)
    assert (root / "classes.txt").read_text().splitlines() == list(CLASSES[:3])

    train, test = read_list(root / "trainlist.txt"), read_list(root / "testlist.txt")
    assert len(train) == 3 * 2 and len(test) == 3 * 1
    assert [label for _, label in train] == [0, 0, 1, 1, 2, 2]
    assert test == [(f"{c}/{c}_0002.mp4", i) for i, c in enumerate(CLASSES[:3])]
    on_disk = sorted(p.relative_to(root / "videos").as_posix() for p in root.rglob("*.mp4"))
    assert on_disk == sorted(name for name, _ in train + test)

    for name, label in train + test:
        assert name.split("/")[0] == CLASSES[label]
        index = int(name[-8:-4])
        # The stored video is the one rendered from the documented seed (seed, class, index).
        rendered = render_video(label, np.random.default_rng((SMALL.seed, label, index)), SMALL)
        frames = decode(root / "videos" / name)
        assert frames.shape == rendered.shape  # every frame comes back, at 32x32
        assert SMALL.min_frames <= len(frames) <= SMALL.max_frames
        # Lossy (the codec drops much of the pixel noise, yuv420p halves the chroma of fine
        # textures), but clearly this video and not another one.
        error = np.abs(frames.astype(int) - rendered).mean()
        unrelated = render_video(label, np.random.default_rng((99, label, index)), SMALL)
        common = min(len(unrelated), len(frames))
        assert error < 16
        assert np.abs(frames[:common].astype(int) - unrelated[:common]).mean() > 2 * error

    done = json.loads((root / MARKER).read_text())
    assert done["params"]["num_classes"] == 3 and done["codec"] in ("libx264", "mpeg4")


def test_same_seed_same_decoded_frames_whatever_the_worker_count(tmp_path: Path) -> None:
    one = ensure_synthetic_dataset(tmp_path / "a", SMALL, progress=False, workers=1)
    two = ensure_synthetic_dataset(tmp_path / "b", SMALL, progress=False, workers=2)
    names = [name for name, _ in read_list(one / "trainlist.txt")]
    for name in names:
        np.testing.assert_array_equal(decode(one / "videos" / name), decode(two / "videos" / name))


def test_second_call_reuses_and_changed_spec_gets_new_root(tmp_path: Path) -> None:
    root = ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1)
    before = file_times(root)
    start = time.perf_counter()
    assert ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1) == root
    assert time.perf_counter() - start < 0.5
    assert file_times(root) == before  # nothing rewritten

    other = ensure_synthetic_dataset(
        tmp_path, dataclasses.replace(SMALL, seed=1), progress=False, workers=1
    )
    assert other != root and is_finished(other, dataclasses.replace(SMALL, seed=1))
    assert is_finished(root, SMALL) and file_times(root) == before  # the old one is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, other.name])


def test_unfinished_or_foreign_folder_is_regenerated(tmp_path: Path) -> None:
    root = dataset_root(tmp_path, SMALL)
    (root / "videos").mkdir(parents=True)  # what a half-written dataset would look like
    (root / "trainlist.txt").write_text("move_up/move_up_0000.mp4 0\n")
    assert not is_finished(root, SMALL)
    assert ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1) == root
    assert is_finished(root, SMALL) and len(read_list(root / "trainlist.txt")) == 6

    # A marker written by other parameters does not count either.
    done = json.loads((root / MARKER).read_text())
    done["params"]["seed"] = 99
    (root / MARKER).write_text(json.dumps(done))
    assert not is_finished(root, SMALL)
    ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1)
    assert json.loads((root / MARKER).read_text())["params"]["seed"] == SMALL.seed


def test_interrupted_generation_leaves_nothing_that_looks_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = synthetic._make_video
    calls = []

    def dies_on_fourth_video(job: tuple) -> None:
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(job)

    monkeypatch.setattr(synthetic, "_make_video", dies_on_fourth_video)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []  # no root, no partial folder

    # A killed process (no clean-up ran) leaves its partial folder: it is never taken as
    # the dataset, and the next call removes it if that process is gone, not if it runs.
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = f".{dataset_root(tmp_path, SMALL).name}.partial-{socket.gethostname()}-"
    killed, running = tmp_path / f"{prefix}{dead.pid}-x", tmp_path / f"{prefix}{os.getpid()}-y"
    for partial in (killed, running):
        (partial / "videos").mkdir(parents=True)
    monkeypatch.setattr(synthetic, "_make_video", real)
    root = ensure_synthetic_dataset(tmp_path, SMALL, progress=False, workers=1)
    assert is_finished(root, SMALL) and root.name == dataset_root(tmp_path, SMALL).name
    assert not killed.exists() and running.exists()


def test_encoding_is_repeatable(tmp_path: Path) -> None:
    """Same frames, same bytes: libx264 with its lookahead on was not (see write_video)."""
    frames = render_video(1, np.random.default_rng(0), DEFAULT)
    blobs = set()
    for i in range(5):
        write_video(tmp_path / f"{i}.mp4", frames, DEFAULT.fps)
        blobs.add((tmp_path / f"{i}.mp4").read_bytes())
    assert len(blobs) == 1


def test_mpeg4_fallback_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "video_codec", lambda: "mpeg4")
    frames = render_video(2, np.random.default_rng(0), SMALL)
    write_video(tmp_path / "v.mp4", frames, SMALL.fps)
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    decoded = decode(tmp_path / "v.mp4")
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 12


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDKD_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("VIDKD_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "vidkd"


def test_bad_spec_and_bad_frames_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VidkdError, match="even"):
        SyntheticSpec(size=63)
    with pytest.raises(VidkdError, match="num_classes"):
        SyntheticSpec(num_classes=len(CLASSES) + 1)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), np.float32), 25)


# --------------------------------------------------------------------------- rendering


def test_render_is_deterministic_per_seed() -> None:
    first = render_video(4, np.random.default_rng(123), SMALL)
    again = render_video(4, np.random.default_rng(123), SMALL)
    other = render_video(4, np.random.default_rng(124), SMALL)
    assert first.dtype == np.uint8 and first.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_first_frame_is_identical_for_every_class() -> None:
    """The class only steers the actor's motion: for one generator state every class draws
    the same first frame, pixel for pixel, and differs afterwards."""
    for seed in range(3):
        videos = [
            render_video(c, np.random.default_rng(seed), DEFAULT) for c in range(len(CLASSES))
        ]
        for video in videos[1:]:
            assert video.shape == videos[0].shape
            np.testing.assert_array_equal(video[0], videos[0][0])
        last = {video[-1].tobytes() for video in videos}
        assert len(last) == len(CLASSES)  # ...but every class ends somewhere else


def ks_uniform(values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample and U[0, 1)."""
    ordered = np.sort(values)
    n = len(ordered)
    return float(max((np.arange(1, n + 1) / n - ordered).max(), (ordered - np.arange(n) / n).max()))


def test_single_frame_state_is_uniform_for_every_class_and_frame() -> None:
    """At any frame index, the actor's centre, log-size and angle are uniform on their
    domains for every class, so a single frame's position, size or angle says nothing
    about the label. (Without the torus wrap, move_up's y at frame 23, 44-74 px above a
    uniform start, would be far from uniform; without the wrap of the log-size, grow's
    size at frame 23 would pile up at the large end.)"""
    n, size = 400, DEFAULT.size
    log_lo, log_hi = math.log(MIN_SCALE * size), math.log(MAX_SCALE * size)
    for class_index in range(len(CLASSES)):
        scenes = [
            sample_scene(class_index, np.random.default_rng((5, class_index, i)), DEFAULT)
            for i in range(n)
        ]
        for t in (0, 11, DEFAULT.min_frames - 1):
            actor = [s.actor for s in scenes]
            features = {
                "x": np.array([a.centre[t, 0] for a in actor]) / size,
                "y": np.array([a.centre[t, 1] for a in actor]) / size,
                "log size": (np.log([a.radius[t] for a in actor]) - log_lo) / (log_hi - log_lo),
                "angle": np.array([a.angle[t] for a in actor]) / (2 * math.pi),
            }
            for name, values in features.items():
                assert ks_uniform(values) < 0.1, (CLASSES[class_index], t, name)


def wrap(delta: np.ndarray, period: float) -> np.ndarray:
    return np.mod(delta + period / 2, period) - period / 2


def label_from_motion(actor: ObjectTrack, size: int) -> str:
    """Name the class from the actor's trajectory alone (an oracle for the tests)."""
    step = wrap(np.diff(actor.centre, axis=0), size)  # (T-1, 2) pixels per frame
    turn = wrap(np.diff(actor.angle), 2 * math.pi)
    growth = np.diff(np.log(actor.radius))
    moves = np.abs(step).max() > 1e-9
    if np.abs(turn).max() > 1e-9:  # turning in place, one sense throughout
        assert not moves and np.all(np.sign(turn) == np.sign(turn[0]))
        return "spin"
    if np.abs(growth).max() > 1e-9:  # changing size in place
        assert not moves
        smooth = growth[np.abs(growth) < 0.5]  # a wrap of grow/shrink jumps by about 1.4
        if np.all(smooth > 0):
            return "grow"
        if np.all(smooth < 0):
            return "shrink"
        assert len(smooth) == len(growth)  # a pulse swells and ebbs without jumps
        return "pulse"
    if not moves:
        return "still"
    cross = step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0]
    dot = (step[:-1] * step[1:]).sum(axis=1)
    if np.abs(cross).max() > 1e-6:  # the heading turns
        # the same way every frame: an orbit (either sense); at random: a shake
        return "orbit" if np.all(np.sign(cross) == np.sign(cross[0])) else "shake"
    horizontal = np.abs(step[:, 0]).sum() > np.abs(step[:, 1]).sum()
    if dot.min() < 0:  # goes back and forth along a line
        return "oscillate_horizontal" if horizontal else "oscillate_vertical"
    if horizontal:
        return "move_sideways"
    return "move_down" if step[:, 1].sum() > 0 else "move_up"  # y points down


def mirror(scene: Scene, size: int) -> Scene:
    """The scene seen in a horizontal mirror: x -> size - x (so pixel column i -> size-1-i),
    angle -> pi - angle, and the background and camera mirrored with it."""

    def track(obj: ObjectTrack | None) -> ObjectTrack | None:
        if obj is None:
            return None
        centre = obj.centre.copy()
        centre[:, 0] = np.mod(size - centre[:, 0], size)
        return dataclasses.replace(
            obj, centre=centre, angle=np.mod(math.pi - obj.angle, 2 * math.pi)
        )

    background = scene.background
    freqs, drift, jitter = background.freqs.copy(), background.drift.copy(), scene.jitter.copy()
    for array in (freqs, drift, jitter):
        array[:, 0] *= -1
    return dataclasses.replace(
        scene,
        actor=track(scene.actor),
        distractor=track(scene.distractor),
        background=dataclasses.replace(background, freqs=freqs, drift=drift),
        jitter=jitter,
    )


def test_label_is_recoverable_from_motion() -> None:
    for class_index, name in enumerate(CLASSES):
        for i in range(30):
            scene = sample_scene(class_index, np.random.default_rng((6, class_index, i)), DEFAULT)
            assert label_from_motion(scene.actor, DEFAULT.size) == name


def test_every_class_survives_a_horizontal_flip() -> None:
    """Training flips clips horizontally, so no class may have a handedness: the mirrored
    trajectory of every video is one of the same class (no move_left/move_right or
    clockwise/anticlockwise pairs), and what is drawn is that mirrored scene: flipping
    the rendered frames gives the rendering of the mirrored scene."""
    size = DEFAULT.size
    moves_left: dict[str, int] = {}  # videos (of 30) going left / turning anticlockwise
    anticlockwise: dict[str, int] = {}
    for class_index, name in enumerate(CLASSES):
        for i in range(30):
            rng = np.random.default_rng((8, class_index, i))
            scene = sample_scene(class_index, rng, DEFAULT)
            mirrored = mirror(scene, size)
            assert label_from_motion(mirrored.actor, size) == name, (name, i)
            step = wrap(np.diff(scene.actor.centre, axis=0), size)
            turn = wrap(np.diff(scene.actor.angle), 2 * math.pi).sum()
            heading_turn = (step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0]).sum()
            moves_left[name] = moves_left.get(name, 0) + int(step[:, 0].sum() < 0)
            anticlockwise[name] = anticlockwise.get(name, 0) + int(turn + heading_turn < 0)
            if i < 2:
                quiet = dataclasses.replace(scene, noise_std=0.0)
                frames = render_scene(quiet, np.random.default_rng(0), DEFAULT)
                seen = render_scene(mirror(quiet, size), np.random.default_rng(0), DEFAULT)
                difference = np.abs(frames[:, :, ::-1].astype(int) - seen)
                assert difference.max() <= 1 and difference.mean() < 0.01, (name, i)
    # Both directions and both senses occur within a class, so a mirror stays in it.
    assert 5 < moves_left["move_sideways"] < 25
    assert 5 < anticlockwise["spin"] < 25 and 5 < anticlockwise["orbit"] < 25


def test_time_reversed_twins() -> None:
    """move_up/move_down and grow/shrink are each other's time reversal; every other
    class is its own, so only the order of the frames tells a twin pair apart."""
    twins = {"move_up": "move_down", "move_down": "move_up", "grow": "shrink", "shrink": "grow"}
    for class_index, name in enumerate(CLASSES):
        for i in range(10):
            actor = sample_scene(
                class_index, np.random.default_rng((9, class_index, i)), DEFAULT
            ).actor
            backwards = dataclasses.replace(
                actor, centre=actor.centre[::-1], radius=actor.radius[::-1], angle=actor.angle[::-1]
            )
            assert label_from_motion(backwards, DEFAULT.size) == twins.get(name, name)


def test_pixels_follow_the_trajectory() -> None:
    """With nuisances switched off, the actor's pixels are centred on the track's centre
    (circular mean on the torus), so the motion the labels describe is what is drawn."""
    size = DEFAULT.size
    grey = np.full((2, 3), 0.5)
    for class_index in range(len(CLASSES)):
        for i in range(2):
            rng = np.random.default_rng((7, class_index, i))
            scene = sample_scene(class_index, rng, DEFAULT)
            plain = dataclasses.replace(
                scene,
                actor=dataclasses.replace(scene.actor, colour=np.array([1.0, 0.0, 0.0])),
                distractor=None,
                background=dataclasses.replace(scene.background, colours=grey),
                jitter=np.zeros_like(scene.jitter),
                gain=np.ones_like(scene.gain),
                noise_std=0.0,
            )
            frames = render_scene(plain, rng, DEFAULT).astype(float)
            weight = np.abs(frames - 127.5).sum(axis=-1)  # (T, H, W), 0 on the background
            phase = np.exp(2j * math.pi * (np.arange(size) + 0.5) / size)
            for axis, coordinate in ((2, 0), (1, 1)):  # W is x, H is y
                other = 1 if axis == 2 else 2
                mean = (weight.sum(axis=other) * phase).sum(axis=1)
                drawn = np.mod(np.angle(mean) * size / (2 * math.pi), size)
                error = wrap(drawn - scene.actor.centre[:, coordinate], size)
                assert np.abs(error).max() < 0.6, (CLASSES[class_index], i)
