"""Checkpoints that are never half-written, and the shipped student file.

A training checkpoint is a directory ``checkpoints/epoch_NNNN/`` with
``model.safetensors`` (every module of the method: student, heads, teacher) and
``state.pt`` (optimiser, scheduler, epoch, best score, RNG states; loadable with
``weights_only=True``). It is written under a temporary name and renamed into place,
then the ``checkpoints/last`` pointer is replaced atomically, so a killed run always
finds a complete checkpoint.

The shipped student (``student.safetensors``) holds the encoder and FC alone, under
Hara's parameter names, with the model description in the safetensors metadata.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vidkd.errors import VidkdError
from vidkd.models.build import build_from_description
from vidkd.models.resnet3d import ResNet3D

POINTER = "last"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in state.items()}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain data and tensors (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path, epoch: int, model_state: dict[str, torch.Tensor], state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``epoch_NNNN`` atomically, point ``last`` at it, keep the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch_{epoch:04d}"
    final = directory / name
    tmp = directory / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(directory / POINTER, name + "\n")
    finished = sorted(p for p in directory.glob("epoch_*") if p.is_dir())
    for old in finished[: max(len(finished) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint ``last`` points at, or None when the run has none yet."""
    pointer = directory / POINTER
    if not pointer.is_file():
        return None
    path = directory / pointer.read_text().strip()
    if not (path / "model.safetensors").is_file() or not (path / "state.pt").is_file():
        raise VidkdError(f"{pointer} points at an incomplete checkpoint {path}; delete {pointer} to start over")
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model weights and training state of one checkpoint directory."""
    weights = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return weights, state


def save_student(path: Path, student: ResNet3D, description: dict[str, Any]) -> None:
    """Ship the student alone: Hara-named weights + the model description as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(_contiguous(student.state_dict()), str(tmp), metadata={"vidkd": json.dumps(description)})
    os.replace(tmp, path)


def read_student_description(path: Path) -> dict[str, Any]:
    """The model description stored in a student file's metadata."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise VidkdError(f"checkpoint {path} not found; pass a student.safetensors written by `vidkd train`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error type for a bad header
        raise VidkdError(
            f"{path} is not a readable safetensors file ({type(error).__name__}: {error}); "
            "pass a student.safetensors written by `vidkd train`"
        ) from None
    if "vidkd" not in metadata:
        raise VidkdError(f"{path} has no vidkd metadata; it was not written by `vidkd train`")
    return json.loads(metadata["vidkd"])


def load_student(path: Path, device: str | torch.device = "cpu") -> tuple[ResNet3D, dict[str, Any]]:
    """Rebuild a shipped student from its file (for eval, teachers, predict and export)."""
    description = read_student_description(Path(path))
    model = build_from_description(description)
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model.to(device), description
