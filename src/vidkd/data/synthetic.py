"""A procedurally generated action-recognition dataset, written as real ``.mp4`` files.

The default demo must run on a fresh machine without a download, so this module draws
small videos of one "actor" object and writes them with PyAV (H.264 ``libx264``, yuv420p;
``mpeg4`` where the PyAV build has no libx264).

Classes (label i = ``CLASSES[i]``)::

    0 move_up                       6 oscillate_horizontal (periodic back and forth)
    1 move_down                     7 oscillate_vertical
    2 move_sideways (left or right) 8 orbit (centre circles round a point, either sense)
    3 grow (approach)               9 spin (turns in place, either sense)
    4 shrink (recede)              10 shake (random jumps round a fixed point)
    5 pulse (size swells and ebbs) 11 still (no motion of its own)

Every class survives a horizontal flip (the augmentation every training method uses):
the mirror image (x -> -x, angle -> pi - angle) of a motion of class c is a motion that
class c draws too. That is why there are no left/right or clockwise/anticlockwise
classes: sideways moves pick left or right at random, spin and orbit pick their sense
at random, the +-15 degree direction noise and all phases are symmetric, and the other
classes have no handedness. The renderer commutes with the mirror (every shape and the
orientation marker are symmetric about the actor's axis), so a flipped video is, up to
rounding and pixel noise, the rendering of the mirrored scene. The colour operators of
the augmentation set do not touch the motion either.

Why one frame cannot reveal the label: the world is a torus (an object leaving one
edge re-enters at the opposite one) and every per-frame state of the actor is uniform
on its domain for every class and every frame index: the centre is uniform on the
torus (start positions, oscillation and orbit centres are uniform, and a uniform point
shifted by any independent offset stays uniform), the log-size is uniform on
``[log min, log max)`` (growing and shrinking wrap round that interval: a grown object
is replaced by a small one; a pulse reflects off its ends), and the angle is uniform on
``[0, 2 pi)``. Shape, colours, background and all other nuisance factors are drawn
independently of the class. So the distribution of frame t is the same for all
classes; only how the state changes over time (direction, sign of growth, periodicity,
turning, jumping) tells them apart. Stronger still, the class only steers the actor's
motion (drawn from its own generator after everything else), so one generator state
gives the same first frame, pixel for pixel, for all classes. Two pairs of classes are
each other's time reversal (move_up/move_down, grow/shrink), so even an unordered bag
of frames cannot tell a pair apart; only the order of frames can. The other classes
are their own time reversal.

The motions are large (translations of 2-3 px a frame at 64 px, turns of 18-30 degrees
a frame, sizes changing by 5-7 % a frame) and the actor is big (radius 7-32 % of the
frame side) and stands out from a dull background, so that the 1/4-width 3D ResNet of
the demo learns them in a few minutes of CPU time.

Nuisance factors a network must learn to ignore:

- actor shape (circle, square, triangle, hexagon, star, ellipse, cross) and colour; a
  contrasting bar from the centre towards the rim shows its orientation (for spin);
- speed, direction (+-15 degrees), amplitude, period, radius, sense of each motion;
- background texture (smooth noise, stripes or checker; random frequencies, phases,
  sharpness and two random colours, low contrast round a near-grey base), drifting
  slowly in a random direction;
- camera jitter (a random sub-pixel translation of the whole frame, every frame);
- a smaller distractor object with its own random linear motion (half of the videos);
- global brightness gain with per-frame flicker, Gaussian pixel noise;
- clip length (``min_frames`` .. ``max_frames`` frames at ``fps``).

Layout of a generated dataset (``ensure_synthetic_dataset``)::

    <root>/videos/<class>/<class>_<index:04d>.mp4   # index < train_per_class: train
    <root>/classes.txt                              # line i: name of label i
    <root>/trainlist.txt, <root>/testlist.txt      # "<class>/<file>.mp4 <label>"
    <root>/DONE.json                                # written last: generator params

Video ``(class c, index i)`` is rendered from ``np.random.default_rng((seed, c, i))``,
so it does not depend on the number of classes or videos, nor on the worker count.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from vidkd.errors import VidkdError

GENERATOR_VERSION = 2  # bump when rendering or encoding changes: caches are regenerated
MARKER = "DONE.json"

CLASSES: tuple[str, ...] = (
    "move_up",
    "move_down",
    "move_sideways",
    "grow",
    "shrink",
    "pulse",
    "oscillate_horizontal",
    "oscillate_vertical",
    "orbit",
    "spin",
    "shake",
    "still",
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "hexagon", "star", "ellipse", "cross")
BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "checker")

# Actor radius as a fraction of the frame side; log-uniform on [MIN, MAX).
MIN_SCALE, MAX_SCALE = 0.07, 0.32
DISTRACTOR_SCALE = (0.04, 0.07)


@dataclass(frozen=True)
class SyntheticSpec:
    """All generator parameters: two equal specs give identical datasets."""

    num_classes: int = len(CLASSES)
    train_per_class: int = 40
    test_per_class: int = 12
    size: int = 64
    min_frames: int = 24
    max_frames: int = 48
    fps: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(CLASSES):
            raise VidkdError(f"num_classes must be in 1..{len(CLASSES)}, got {self.num_classes}")
        if self.train_per_class < 0 or self.test_per_class < 0:
            raise VidkdError("train_per_class and test_per_class must be >= 0")
        if self.size < 16 or self.size % 2:
            raise VidkdError(f"size must be even and >= 16 (yuv420p), got {self.size}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise VidkdError(
                f"need 2 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        if self.fps < 1:
            raise VidkdError(f"fps must be >= 1, got {self.fps}")


@dataclass(frozen=True)
class ObjectTrack:
    """One object over T frames: centre (T, 2) as (x, y) pixels on the torus, radius (T,)
    in pixels, angle (T,) in radians (increasing = clockwise on screen)."""

    centre: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    shape: str
    colour: np.ndarray  # (3,) RGB in [0, 1]
    marker_colour: np.ndarray | None  # (3,); None: no orientation marker


@dataclass(frozen=True)
class Background:
    """A torus-periodic texture: ``value = f(x - drift_x, y - drift_y)`` mixes two colours."""

    kind: str
    freqs: np.ndarray  # (K, 2) integer cycles per frame side (x, y)
    phases: np.ndarray  # (K,)
    amplitudes: np.ndarray  # (K,)
    sharpness: float
    colours: np.ndarray  # (2, 3)
    drift: np.ndarray  # (T, 2) pixels


@dataclass(frozen=True)
class Scene:
    """Everything drawn in one video; ``render_scene`` turns it into frames."""

    class_index: int
    actor: ObjectTrack
    distractor: ObjectTrack | None
    background: Background
    jitter: np.ndarray  # (T, 2) camera translation in pixels
    gain: np.ndarray  # (T,) brightness factor
    noise_std: float

    @property
    def num_frames(self) -> int:
        return len(self.jitter)


def _unit(angle: np.ndarray | float) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def _actor_motion(
    class_name: str,
    rng: np.random.Generator,
    start: tuple[np.ndarray, float, float],
    num_frames: int,
    size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (T, 2), radius (T,), angle (T,) of the actor for one class.

    ``start`` is the frame-0 state (centre, log-radius, angle), uniform on its domain.
    Each motion adds an offset that is 0 at frame 0 and independent of the start, modulo
    the domain, so the state of every frame stays uniform whatever the class. ``rng``
    draws only the motion's own parameters (speed, period, sense...). Every class is
    closed under a horizontal mirror (x -> -x, angle -> pi - angle): its mirrored motion
    is one the same class draws too (sideways and both senses of spin and orbit are
    drawn at random; tilts and phases are symmetric).
    """
    centre0, log_radius0, angle0 = start
    t = np.arange(num_frames, dtype=np.float64)
    log_lo, log_hi = math.log(MIN_SCALE * size), math.log(MAX_SCALE * size)
    span = log_hi - log_lo
    tilt = math.radians(rng.uniform(-15.0, 15.0))  # direction noise of translations
    sense = 1.0 if rng.uniform() < 0.5 else -1.0  # for the classes with a random sense
    offset = np.zeros((num_frames, 2))
    log_radius = np.full(num_frames, log_radius0)
    angle = np.full(num_frames, angle0)
    # Screen axes: x to the right, y downwards; angle 0 = +x, pi/2 = +y (down), so an
    # increasing angle turns clockwise on screen.
    headings = {
        "move_up": -math.pi / 2,
        "move_down": math.pi / 2,
        "move_sideways": 0.0 if sense > 0 else math.pi,
    }
    if class_name in headings:
        speed = rng.uniform(0.03, 0.05) * size  # pixels per frame
        offset = speed * t[:, None] * _unit(headings[class_name] + tilt)
    elif class_name in ("grow", "shrink"):
        rate = rng.uniform(0.05, 0.07)  # log-radius per frame
        step = rate if class_name == "grow" else -rate
        # Wrap round [log_lo, log_hi): a grown object is replaced by a small one.
        above_lo = log_radius0 - log_lo
        log_radius = log_lo + np.mod(above_lo + step * t, span)
    elif class_name == "pulse":
        amplitude = rng.uniform(0.25, 0.4)  # log-radius
        period = rng.uniform(8.0, 12.0)  # frames
        phase = rng.uniform(0.0, 2 * math.pi)
        swell = amplitude * (np.sin(2 * math.pi * t / period + phase) - math.sin(phase))
        # Reflect at both ends of [log_lo, log_hi) (no jump, unlike grow and shrink): with
        # a uniform phase the swell is symmetric about 0, so the size stays uniform.
        folded = np.mod(log_radius0 - log_lo + swell, 2 * span)
        log_radius = log_lo + np.where(folded < span, folded, 2 * span - folded)
    elif class_name in ("oscillate_horizontal", "oscillate_vertical"):
        amplitude = rng.uniform(0.1, 0.16) * size
        period = rng.uniform(12.0, 20.0)  # frames: at least one cycle in 20 frames
        phase = rng.uniform(0.0, 2 * math.pi)
        axis = 0.0 if class_name == "oscillate_horizontal" else math.pi / 2
        swing = amplitude * (np.sin(2 * math.pi * t / period + phase) - math.sin(phase))
        offset = swing[:, None] * _unit(axis + tilt)
    elif class_name == "orbit":
        orbit_radius = rng.uniform(0.1, 0.16) * size
        omega = math.radians(rng.uniform(15.0, 25.0))  # per frame
        phase = rng.uniform(0.0, 2 * math.pi)
        offset = orbit_radius * (_unit(phase + sense * omega * t) - _unit(phase))
    elif class_name == "spin":
        omega = math.radians(rng.uniform(18.0, 30.0))  # per frame; the bar aliases at 180
        angle = angle0 + sense * omega * t
    elif class_name == "shake":
        amplitude = rng.uniform(0.06, 0.1) * size
        offset = rng.uniform(-amplitude, amplitude, (num_frames, 2))
        offset[0] = 0.0  # the first frame is the common one
    elif class_name != "still":
        raise ValueError(f"unknown class {class_name!r}")
    centre = np.mod(centre0 + offset, size)
    return centre, np.exp(log_radius), np.mod(angle, 2 * math.pi)


def _object_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random colour at least 0.5 (RGB distance) away from each colour in ``avoid``."""
    colour = rng.uniform(0.0, 1.0, 3)
    for _ in range(100):
        if np.min(np.linalg.norm(avoid - colour, axis=-1)) >= 0.5:
            break
        colour = rng.uniform(0.0, 1.0, 3)
    return colour


def sample_scene(class_index: int, rng: np.random.Generator, spec: SyntheticSpec) -> Scene:
    """Draw the trajectory and all nuisance factors of one video of class ``class_index``."""
    size = spec.size
    num_frames = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    log_lo, log_hi = math.log(MIN_SCALE * size), math.log(MAX_SCALE * size)
    # Frame-0 state of the actor: centre, log-radius, angle, each uniform on its domain.
    actor_start = (
        rng.uniform(0.0, size, 2),
        rng.uniform(log_lo, log_hi),
        rng.uniform(0.0, 2 * math.pi),
    )

    # Background: a dull, low-contrast mix of two colours round mid-grey, so the actor and
    # its motion stand out (a saturated or high-contrast texture kept the demo network at
    # chance for its whole schedule).
    base = 0.5 + rng.uniform(-0.05, 0.05) + rng.uniform(-0.03, 0.03, 3)
    contrast = rng.uniform(0.05, 0.2)
    colours = np.stack([base, base + contrast * (rng.uniform(0.0, 1.0, 3) - base)])
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    num_waves = {"noise": 4, "stripes": 1, "checker": 2}[kind]
    if kind == "checker":
        cycles = int(rng.integers(2, 7))
        freqs = np.array([[cycles, 0], [0, cycles]])
    else:
        top = 3 if kind == "noise" else 6
        freqs = rng.integers(-top, top + 1, (num_waves, 2))
        freqs[np.all(freqs == 0, axis=1), 0] = 1  # no constant waves
    drift_speed = rng.uniform(0.0, 0.003) * size
    drift_dir = rng.uniform(0.0, 2 * math.pi)
    background = Background(
        kind=kind,
        freqs=freqs,
        phases=rng.uniform(0.0, 2 * math.pi, num_waves),
        amplitudes=rng.uniform(0.3, 1.0, num_waves),
        sharpness=float(rng.uniform(1.0, 4.0)),
        colours=np.clip(colours, 0.0, 1.0),
        drift=drift_speed * np.arange(num_frames)[:, None] * _unit(drift_dir),
    )

    colour = _object_colour(rng, background.colours)
    marker = np.full(3, 1.0) if colour @ [0.299, 0.587, 0.114] < 0.5 else np.zeros(3)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]

    distractor = None
    if rng.uniform() < 0.5:
        velocity = rng.uniform(0.0, 0.02) * size * _unit(rng.uniform(0.0, 2 * math.pi))
        distractor_start = rng.uniform(0.0, size, 2)
        distractor = ObjectTrack(
            centre=np.mod(distractor_start + np.arange(num_frames)[:, None] * velocity, size),
            radius=np.full(num_frames, rng.uniform(*DISTRACTOR_SCALE) * size),
            angle=np.full(num_frames, rng.uniform(0.0, 2 * math.pi)),
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            colour=_object_colour(rng, np.vstack([background.colours, colour])),
            marker_colour=None,
        )

    jitter_amplitude = rng.uniform(0.0, 1.0)
    jitter = rng.uniform(-jitter_amplitude, jitter_amplitude, (num_frames, 2))
    gain = rng.uniform(0.85, 1.15) * (1.0 + rng.uniform(-0.03, 0.03, num_frames))
    noise_std = float(rng.uniform(0.0, 0.04))

    # Only the actor's motion depends on the class; it draws from its own generator so
    # that every other draw (and the pixel noise after it) is the same for every class.
    motion_rng = np.random.default_rng(rng.integers(2**63))
    centre, radius, angle = _actor_motion(
        CLASSES[class_index], motion_rng, actor_start, num_frames, size
    )
    actor = ObjectTrack(centre, radius, angle, shape, colour, marker)
    return Scene(class_index, actor, distractor, background, jitter, gain, noise_std)


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the shape's edge in object units (radius ~1);
    the shape points along +u (a vertex, arm or long axis at angle 0)."""
    if shape == "circle":
        return np.hypot(u, v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85
    if shape in ("triangle", "hexagon"):
        sides, circumradius = (3, 1.25) if shape == "triangle" else (6, 1.05)
        sector = 2 * math.pi / sides
        phi = np.mod(np.arctan2(v, u), sector) - sector / 2
        return np.hypot(u, v) * np.cos(phi) - circumradius * math.cos(math.pi / sides)
    if shape == "star":
        return np.hypot(u, v) - (0.9 + 0.35 * np.cos(5 * np.arctan2(v, u)))
    if shape == "ellipse":
        return (np.hypot(u / 1.25, v / 0.7) - 1.0) * 0.7
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 1.05, av_ - 0.4), np.maximum(au - 0.4, av_ - 1.05))
    raise ValueError(f"unknown shape {shape!r}")


def _wrap(delta: np.ndarray, size: int) -> np.ndarray:
    """Shortest signed difference on a circle of circumference ``size``."""
    return np.mod(delta + size / 2, size) - size / 2


def _draw(frames: np.ndarray, track: ObjectTrack, xs: np.ndarray, ys: np.ndarray) -> None:
    """Alpha-composite ``track`` onto ``frames`` (T, H, W, 3) in place, anti-aliased."""
    size = frames.shape[1]
    f32 = np.float32
    dx = _wrap(xs - track.centre[:, 0, None, None].astype(f32), size)
    dy = _wrap(ys - track.centre[:, 1, None, None].astype(f32), size)
    cos = np.cos(track.angle).astype(f32)[:, None, None]
    sin = np.sin(track.angle).astype(f32)[:, None, None]
    radius = track.radius.astype(f32)[:, None, None]
    u = (dx * cos + dy * sin) / radius
    v = (dy * cos - dx * sin) / radius
    # Distance in pixels -> coverage of a one-pixel-wide edge ramp.
    cover = np.clip(0.5 - _shape_distance(track.shape, u, v) * radius, 0.0, 1.0)
    frames += cover[..., None] * (track.colour.astype(f32) - frames)
    if track.marker_colour is not None:
        # A bar from near the centre towards the rim along +u (a capsule, half-width 0.2).
        along = np.clip(u, f32(0.15), f32(0.7))
        bar = np.clip(0.5 - (np.hypot(u - along, v) - 0.2) * radius, 0.0, 1.0) * cover
        frames += bar[..., None] * (track.marker_colour.astype(f32) - frames)


def render_scene(scene: Scene, rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of ``scene``; ``rng`` draws the pixel noise."""
    size, f32 = spec.size, np.float32
    pixel = np.arange(size, dtype=f32) + 0.5
    # World coordinates seen by each pixel of each frame (the camera jitters).
    xs = pixel[None, None, :] + scene.jitter[:, 0, None, None].astype(f32)  # (T, 1, W)
    ys = pixel[None, :, None] + scene.jitter[:, 1, None, None].astype(f32)  # (T, H, 1)

    bg = scene.background
    bx = (xs - bg.drift[:, 0, None, None].astype(f32)) * f32(2 * math.pi / size)
    by = (ys - bg.drift[:, 1, None, None].astype(f32)) * f32(2 * math.pi / size)
    if bg.kind == "checker":
        wave = np.cos(bg.freqs[0, 0] * bx + bg.phases[0]) * np.cos(
            bg.freqs[1, 1] * by + bg.phases[1]
        )
    else:
        wave = sum(
            a * np.cos(fx * bx + fy * by + p)
            for (fx, fy), p, a in zip(bg.freqs, bg.phases, bg.amplitudes, strict=True)
        ) / f32(bg.amplitudes.sum())
    value = 0.5 + 0.5 * np.tanh(bg.sharpness * wave) / math.tanh(bg.sharpness)
    low, high = bg.colours.astype(f32)
    frames = low + value[..., None].astype(f32) * (high - low)  # (T, H, W, 3)

    if scene.distractor is not None:
        _draw(frames, scene.distractor, xs, ys)  # behind the actor
    _draw(frames, scene.actor, xs, ys)

    frames *= scene.gain.astype(f32)[:, None, None, None]
    frames += rng.standard_normal(frames.shape, dtype=f32) * f32(scene.noise_std)
    return (np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def render_video(class_index: int, rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """A random video (T, H, W, 3) uint8 of class ``class_index``."""
    return render_scene(sample_scene(class_index, rng, spec), rng, spec)


@functools.cache
def video_codec() -> str:
    """``libx264`` where the PyAV build has the encoder, else ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # av raises UnknownCodecError (a ValueError subclass) in most versions
        return "mpeg4"


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB to ``path`` (mp4, yuv420p; H and W even)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    codec = video_codec()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # tiny frames; parallelism is across videos
        if codec == "libx264":
            # x264's lookahead (rc-lookahead, mbtree) gave a different bitstream on about
            # half of repeated encodes of the same 64x64 frames (PyAV 18); without it the
            # output is repeatable, so a seed fixes the decoded frames.
            options = {"crf": "18", "preset": "veryfast", "x264-params": "rc-lookahead=0:mbtree=0"}
            stream.options = options
        else:
            stream.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def default_cache_dir() -> Path:
    """``$VIDKD_CACHE``, else ``~/.cache/vidkd``."""
    return Path(os.environ.get("VIDKD_CACHE") or Path.home() / ".cache" / "vidkd").expanduser()


def _params(spec: SyntheticSpec) -> dict:
    return {"generator_version": GENERATOR_VERSION, **asdict(spec)}


def dataset_root(cache_dir: Path, spec: SyntheticSpec) -> Path:
    """Where ``spec``'s dataset lives: one folder per parameter set (short hash)."""
    text = json.dumps(_params(spec), sort_keys=True)
    return Path(cache_dir) / f"synthetic-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def is_finished(root: Path, spec: SyntheticSpec) -> bool:
    """True when ``root`` holds a completed dataset generated from ``spec``."""
    try:
        done = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return done.get("params") == _params(spec)


def _process_alive(pid: str) -> bool:
    """Whether process ``pid`` (a decimal string) runs on this host; True if unsure."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours (EPERM), or cannot tell
        return True
    return True


def _make_video(job: tuple[SyntheticSpec, int, int, str]) -> None:
    spec, class_index, index, path = job
    rng = np.random.default_rng((spec.seed, class_index, index))
    write_video(Path(path), render_video(class_index, rng, spec), spec.fps)


def _generate(folder: Path, spec: SyntheticSpec, progress: bool, workers: int | None) -> None:
    per_class = spec.train_per_class + spec.test_per_class
    names = CLASSES[: spec.num_classes]
    jobs, lists = [], {"train": [], "test": []}
    for label, name in enumerate(names):
        (folder / "videos" / name).mkdir(parents=True)
        for index in range(per_class):
            file = f"{name}/{name}_{index:04d}.mp4"
            jobs.append((spec, label, index, str(folder / "videos" / file)))
            lists["train" if index < spec.train_per_class else "test"].append(f"{file} {label}")

    if workers is None:  # starting processes costs about a second: not worth it for a few
        workers = (os.cpu_count() or 1) if len(jobs) >= 64 else 1
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress)
    with bar:
        if workers <= 1:
            for job in jobs:
                _make_video(job)
                bar.update()
        else:
            # spawn: the caller may hold threads (torch) that fork would copy half-locked.
            with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_make_video, jobs, chunksize=4):
                    bar.update()

    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    for split, lines in lists.items():
        (folder / f"{split}list.txt").write_text("".join(f"{line}\n" for line in lines))


def ensure_synthetic_dataset(
    cache_dir: Path,
    spec: SyntheticSpec = SyntheticSpec(),  # noqa: B008 (frozen, immutable)
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate ``spec``'s dataset under ``cache_dir`` unless it is already there; its root.

    The dataset is written to a temporary sibling folder and renamed into place after
    its ``DONE.json`` marker, so a killed run never leaves a folder that looks finished
    (its temporary folder is removed by the next call on the same host). ``workers``
    (default: all CPUs, or 1 for fewer than 64 videos) only changes the speed, never the
    videos; more than 1 starts processes with ``spawn``, so a calling script needs the
    usual ``if __name__ == "__main__":`` guard.
    """
    cache_dir = Path(cache_dir)
    root = dataset_root(cache_dir, spec)
    if is_finished(root, spec):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial_prefix = f".{root.name}.partial-{socket.gethostname()}-"
    for stale in cache_dir.glob(f"{glob.escape(partial_prefix)}*"):
        if not _process_alive(stale.name[len(partial_prefix) :].split("-")[0]):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run on this host

    start = time.perf_counter()
    partial = Path(tempfile.mkdtemp(prefix=f"{partial_prefix}{os.getpid()}-", dir=cache_dir))
    try:
        _generate(partial, spec, progress, workers)
        done = {
            "params": _params(spec),
            "codec": video_codec(),
            "seconds": round(time.perf_counter() - start, 2),
        }
        (partial / MARKER).write_text(json.dumps(done, indent=2) + "\n")
        if root.exists() and not is_finished(root, spec):
            shutil.rmtree(root)  # not ours to keep: unfinished or from other params
        try:
            partial.rename(root)
        except OSError:
            if not is_finished(root, spec):  # another process finished first: fine
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root
