"""Ship the student alone as ONNX or TorchScript (``vidkd export``).

The exported graph maps float clips ``(N, 3, T, H, W)`` in the student's value range to
logits ``(N, classes)``; ``N`` is dynamic. The input protocol (clip length, stride, resize,
crop, value range, channel order, class names) travels inside the file: ONNX
``metadata_props`` and TorchScript ``_extra_files``, each a JSON document under the key
``vidkd`` (ONNX also gets the main fields as separate keys). After writing, the file is
loaded back by its own runtime and compared with PyTorch on the same inputs, and the
latency of both is measured in the same process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidkd.errors import VidkdError
from vidkd.files import atomic_write, is_special, nearest_existing

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "vidkd"
INSTALL_HINT = "pip install onnx onnxruntime (in a source checkout: pip install -e '.[export]')"
OPSET = 17

Runner = Callable[[np.ndarray], np.ndarray]


def require_onnx() -> None:
    """One line saying what to install when onnx or onnxruntime is missing."""
    import importlib.util

    missing = [module for module in ("onnx", "onnxruntime") if importlib.util.find_spec(module) is None]
    if missing:
        raise VidkdError(f"--format onnx needs {' and '.join(missing)}: {INSTALL_HINT}")
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError as error:  # installed, but broken: say why, not "install it"
            raise VidkdError(f"--format onnx: {module} is installed but does not import ({error}); "
                             "reinstall it for this Python") from None


def input_protocol(description: dict[str, Any]) -> dict[str, Any]:
    """What a caller must feed the exported graph, from the student's description."""
    size = description["crop_size"]
    return {
        "input_name": "clips",
        "output_name": "logits",
        "layout": "N x C x T x H x W, float32, RGB",
        "shape": ["N", 3, description["clip_len"], size, size],
        "clip_len": description["clip_len"],
        "frame_stride": description.get("frame_stride", 1),
        "short_side": description["short_side"],
        "crop_size": size,
        "input_range": description.get("input_range", [-1.0, 1.0]),
        "scaling": "pixel / 255 * 2 - 1 (uint8 RGB to [-1, 1])",
        "classes": description["classes"],
        "video_scoring": "softmax averaged over clips spread uniformly, one centre crop each",
        "description": description,
    }


def example_input(description: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    """Uniform random clips in the student's value range, ``(batch, 3, T, S, S)``."""
    low, high = description.get("input_range", [-1.0, 1.0])
    size = description["crop_size"]
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, description["clip_len"], size, size)
    return torch.rand(shape, generator=generator) * (high - low) + low


class _LogitsOnly(nn.Module):
    """The student's logits whatever its forward returns (a tensor, a tuple, a dict)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        out = self.student(clips)
        if isinstance(out, dict):
            out = out["logits"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


def exportable(student: nn.Module) -> nn.Module:
    """The student in eval mode on the CPU, returning logits alone."""
    return _LogitsOnly(student.to("cpu").eval()).eval()


def export_onnx(student: nn.Module, description: dict[str, Any], out: Path) -> None:
    import onnx

    model = exportable(student)
    protocol = input_protocol(description)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            model, (example_input(description, 2),), str(out), dynamo=False,
            input_names=[protocol["input_name"]], output_names=[protocol["output_name"]],
            dynamic_axes={protocol["input_name"]: {0: "N"}, protocol["output_name"]: {0: "N"}},
            opset_version=OPSET, do_constant_folding=True,
        )
    graph = onnx.load(str(out))
    fields = {
        METADATA_KEY: json.dumps(protocol),
        "classes": json.dumps(protocol["classes"]),
        "clip_len": str(protocol["clip_len"]),
        "frame_stride": str(protocol["frame_stride"]),
        "short_side": str(protocol["short_side"]),
        "crop_size": str(protocol["crop_size"]),
        "input_range": json.dumps(protocol["input_range"]),
        "layout": protocol["layout"],
    }
    del graph.metadata_props[:]
    for key, value in fields.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.doc_string = "vidkd student: " + protocol["layout"] + " -> logits"
    onnx.save(graph, str(out))


def export_torchscript(student: nn.Module, description: dict[str, Any], out: Path) -> None:
    model = exportable(student)
    protocol = input_protocol(description)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        with torch.no_grad():
            traced = torch.jit.trace(model, (example_input(description, 2),), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={f"{METADATA_KEY}.json": json.dumps(protocol)})


class ParityError(VidkdError):
    """The exported file does not reproduce PyTorch's logits: it is not written."""


def export_student(
    student: nn.Module, description: dict[str, Any], fmt: str, out: Path,
    verify: Callable[[Path], None] | None = None,
) -> None:
    """Write ``out`` under a temporary name beside it, ``verify`` that file (it raises to
    refuse it), then rename it into place: an export that fails its check, fails or is
    killed leaves the previous file (or none), never half of one, nor a rejected one."""
    writers = {"onnx": export_onnx, "torchscript": export_torchscript}
    if fmt not in writers:
        raise VidkdError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    if is_special(out):  # the file is read back for the parity check
        raise VidkdError(f"--out {out} is not a regular file: pass a file path")
    out = Path(os.path.realpath(out))  # a symbolic link stays; the file it names is replaced
    folder = nearest_existing(out.parent)  # atomic_write makes the rest once the file is ready
    needed = sum(t.numel() * t.element_size() for t in student.state_dict().values()) + (1 << 20)
    free = shutil.disk_usage(folder).free
    if free < needed:  # torch.jit.save aborts the process on a full disk, leaving its temporary
        raise VidkdError(f"--out {out}: the export needs about {needed / 2**20:.1f} MiB and "
                         f"{free / 2**20:.1f} MiB are free there; free some space or pass another path")

    def write(tmp: Path) -> None:
        writers[fmt](student, description, tmp)
        if verify is not None:
            verify(tmp)

    atomic_write(out, write)


def is_export(path: Path, fmt: str) -> bool:
    """Whether ``path`` is a ``fmt`` file that ``vidkd export`` wrote (it holds the input
    protocol under :data:`METADATA_KEY`): the only files ``--out`` may replace."""
    try:
        return isinstance(read_metadata(path, fmt), dict)
    except Exception:  # noqa: BLE001 - any file the runtimes cannot read as an export
        return False


def read_metadata(path: Path, fmt: str) -> dict[str, Any]:
    """The input protocol stored in an exported file."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    extra = {f"{METADATA_KEY}.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[f"{METADATA_KEY}.json"])


def load_runner(path: Path, fmt: str, threads: int | None = None) -> Runner:
    """A function clips (N, 3, T, H, W) float32 -> logits, running the exported file."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda clips: session.run(None, {name: np.ascontiguousarray(clips, np.float32)})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(clips: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(clips, np.float32))).numpy()

    return run


def eager_runner(student: nn.Module) -> Runner:
    model = exportable(student)

    def run(clips: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(clips, np.float32))).numpy()

    return run


def max_difference(reference: Runner, exported: Runner, clips: torch.Tensor) -> float:
    """Largest absolute logit difference between two runners on the same clips."""
    inputs = clips.numpy().astype(np.float32)
    expected, got = reference(inputs), exported(inputs)
    if expected.shape != got.shape:
        raise VidkdError(
            f"the exported model returned logits of shape {got.shape}, PyTorch {expected.shape}; "
            "this student does not export cleanly (please report it)"
        )
    return float(np.abs(expected - got).max())


def latency_per_clip(runner: Runner, clips: torch.Tensor, repeats: int, warmup: int = 2) -> float:
    """Median seconds per clip over ``repeats`` timed calls on the batch ``clips``."""
    inputs = clips.numpy().astype(np.float32)
    for _ in range(warmup):
        runner(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        runner(inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / inputs.shape[0]


def decoded_clip(description: dict[str, Any], video: Path | None) -> tuple[torch.Tensor, str]:
    """One clip decoded by the real path (PyAV, resize, centre crop) as model input, and what
    it is: the middle clip of ``video``, or of a generated synthetic video when ``video`` is None."""
    import tempfile

    from vidkd.data.decode import DecodeError
    from vidkd.data.transforms import to_model_input
    from vidkd.engine.predict import clip_spec, read_clips

    spec = clip_spec(description)
    if video is not None:
        from vidkd.data.index.walk import _is_frame_folder

        if video.is_dir() and not _is_frame_folder(video):
            raise VidkdError(f"--video {video} is a folder of videos, not one video; pass one video "
                             "file (or a folder of frame images)")
        try:
            clips = read_clips(video, spec, 1)
        except DecodeError as error:
            raise VidkdError(f"--video {video} cannot be read ({error}); pass a readable video") from None
        return to_model_input(clips, torch.device("cpu"), channels_last=False), f"a clip decoded from {video}"
    from vidkd.data.synthetic import SyntheticSpec, render_video, write_video

    frames = max((spec.clip_len - 1) * spec.frame_stride + 1, 24)
    size = max(16, spec.short_side + spec.short_side % 2)
    synthetic = SyntheticSpec(size=size, min_frames=frames, max_frames=frames)
    with tempfile.TemporaryDirectory(prefix="vidkd-export-") as folder:
        path = Path(folder) / "synthetic.mp4"
        write_video(path, render_video(0, np.random.default_rng(0), synthetic), synthetic.fps)
        clips = read_clips(path, spec, 1)
    what = f"a clip decoded from a generated synthetic {size}x{size} video (no --video given)"
    return to_model_input(clips, torch.device("cpu"), channels_last=False), what
