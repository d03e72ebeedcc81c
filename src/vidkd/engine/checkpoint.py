"""Checkpoints that are never half-written, and the shipped student file.

A training checkpoint is a directory ``checkpoints/epoch_NNNN/`` with
``model.safetensors`` (every module of the method: student, heads, teacher) and
``state.pt`` (optimiser, scheduler, epoch, best score, RNG states; loadable with
``weights_only=True``). It is written under a temporary name and renamed into place,
then the ``checkpoints/last`` pointer is replaced atomically, so a killed run always
finds a complete checkpoint.

The shipped student (``student.safetensors``) holds the inference network alone (for a
plain 3D ResNet: the encoder and FC under Hara's parameter names; for generative KD also
its attention module, adapter and, in phase 1, its CVAE), with the model description in
the safetensors metadata, from which :func:`load_student` rebuilds it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from vidkd.errors import VidkdError
from vidkd.files import atomic_write_text, fsync_dir, keep_mode
from vidkd.models.build import build_from_description

log = logging.getLogger("vidkd")

POINTER = "last"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "state.pt")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in state.items()}


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensor_bytes(value: Any) -> int:
    """Bytes of every tensor inside ``value`` (nested dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _no_space(directory: Path, name: str, needed: int) -> VidkdError:
    free = shutil.disk_usage(directory).free
    kept = latest_checkpoint_name(directory)
    return VidkdError(
        f"no space left to write checkpoint {name} in {directory}: it needs about "
        f"{needed / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free; "
        + (f"the previous checkpoint {kept} is kept. " if kept else "")
        + "Free some space (or lower train.keep_checkpoints) and continue with --resume"
    )


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


def checkpoint_name(epoch: int, batches: int | None = None) -> str:
    """``epoch_NNNN`` after ``epoch`` finished epochs; ``epoch_NNNN_step_SSSSSSSS`` for a
    checkpoint ``batches`` steps into the next epoch. Names sort in training order."""
    name = f"epoch_{epoch:04d}"
    return name if batches is None else f"{name}_step_{batches:08d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Finished checkpoint directories, oldest first (temporary ``.*.tmp`` ones excluded)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("epoch_*") if p.is_dir())


def save_checkpoint(
    directory: Path, epoch: int, model_state: dict[str, torch.Tensor], state: dict[str, Any],
    keep: int = 2, batches: int | None = None,
) -> Path:
    """Write a checkpoint atomically and durably, point ``last`` at it, keep the newest ``keep``.

    Files are fsynced before the directory is renamed into place, and a manifest records
    each file's size and SHA-256 so that :func:`verify_checkpoint` can tell a damaged
    checkpoint from a good one. A full disk leaves the previous checkpoint as it was and
    raises one :class:`VidkdError` saying how much space was needed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(epoch, batches)
    final = directory / name
    tmp = directory / f".{name}.tmp"
    weights = _contiguous(model_state)
    needed = _tensor_bytes(weights) + _tensor_bytes(state) + (1 << 20)
    if shutil.disk_usage(directory).free < needed:
        raise _no_space(directory, name, needed)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(weights, str(tmp / "model.safetensors"))
        keep_mode(tmp / "model.safetensors", final / "model.safetensors")  # not safetensors' 0600
        torch.save(state, tmp / "state.pt")
        manifest = {
            file: {"bytes": (tmp / file).stat().st_size, "sha256": _sha256(tmp / file)}
            for file in FILES
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for file in (*FILES, MANIFEST):
            _fsync_file(tmp / file)
        fsync_dir(tmp)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(directory, name, needed) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(directory)
    atomic_write_text(directory / POINTER, name + "\n")
    finished = list_checkpoints(directory)
    for old in finished[: max(len(finished) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint_name(directory: Path) -> str | None:
    """What ``last`` names (or the newest checkpoint directory), unverified."""
    pointer = directory / POINTER
    if pointer.is_file():
        return pointer.read_text().strip() or None
    found = list_checkpoints(directory)
    return found[-1].name if found else None


def verify_checkpoint(path: Path) -> str | None:
    """None when ``path`` is a usable checkpoint, else the reason it is not.

    Checks the sizes and SHA-256 recorded at save time (when a manifest exists), then that
    both files parse: the weights as safetensors, the state with ``weights_only=True``.
    """
    for file in FILES:
        if not (path / file).is_file():
            return f"{file} is missing"
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            for file in FILES:
                size = (path / file).stat().st_size
                if size != manifest[file]["bytes"]:
                    return f"{file} has {size} bytes, {manifest[file]['bytes']} were written"
                if _sha256(path / file) != manifest[file]["sha256"]:
                    return f"{file} does not match the checksum written with it"
        except (ValueError, KeyError, TypeError) as error:
            return f"{MANIFEST} is unreadable ({type(error).__name__})"
    try:
        load_file(str(path / "model.safetensors"))
    except Exception as error:  # safetensors raises its own error types for a bad header
        return f"model.safetensors does not parse ({type(error).__name__})"
    try:
        torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, or a pickle that is not plain data
        return f"state.pt does not load as plain data ({type(error).__name__})"
    return None


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint that verifies, or None when the run has none yet.

    Tries every checkpoint from newest to oldest (a checkpoint is renamed into place only
    when complete, and ``last`` names the newest one unless a write was cut short); each one
    skipped is logged with the reason, and so is taking one other than ``last``'s. Raises
    :class:`VidkdError` when checkpoints exist but none verifies.
    """
    found = list_checkpoints(directory)
    pointed = latest_checkpoint_name(directory)
    candidates = found[::-1]  # renamed into place only when complete: newest first
    if not candidates:
        if pointed is not None and (directory / POINTER).is_file():
            raise VidkdError(
                f"{directory / POINTER} names {pointed} but no checkpoint directory is left in "
                f"{directory}; start the run again with --overwrite"
            )
        return None
    rejected = []
    for path in candidates:
        problem = verify_checkpoint(path)
        if problem is None:
            for name, reason in rejected:
                log.warning("checkpoint %s skipped: %s", name, reason)
            if rejected or (pointed is not None and path.name != pointed):
                log.warning("using checkpoint %s, the newest that verifies", path.name)
            return path
        rejected.append((path.name, problem))
    details = "; ".join(f"{name}: {reason}" for name, reason in rejected)
    raise VidkdError(
        f"no checkpoint in {directory} verifies ({details}); start the run again with --overwrite"
    )


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model weights and training state of one checkpoint directory."""
    weights = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return weights, state


def save_student(path: Path, student: torch.nn.Module, description: dict[str, Any]) -> None:
    """Ship the student alone: Hara-named weights + the model description as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(_contiguous(student.state_dict()), str(tmp), metadata={"vidkd": json.dumps(description)})
    keep_mode(tmp, path)  # an earlier student's mode, or the umask's default: not safetensors' 0600
    _fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


BEST_STUDENT, LAST_STUDENT = "best_student.safetensors", "student.safetensors"


def tested_student_name(choice: str, run_dir: Path) -> str:
    """The file of the student a run's test split scores (``eval.student``): the best one,
    unless no validation ever improved (then there is none), or the last."""
    return BEST_STUDENT if choice == "best" and (run_dir / BEST_STUDENT).is_file() else LAST_STUDENT


def tested_student_file(run_dir: Path) -> Path:
    """The student whose test numbers a finished run reports: the one its ``results.json``
    names; without that (a run not finished, a damaged file, a run from before it was
    recorded), the one its ``config.yaml``'s ``eval.student`` names (best by default)."""
    named = _json_field(run_dir / "results.json", "tested_student")
    if named in (BEST_STUDENT, LAST_STUDENT):  # never a path a damaged file could name
        return run_dir / named
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        choice = config["eval"]["student"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, RecursionError):
        choice = "best"
    return run_dir / tested_student_name("last" if choice == "last" else "best", run_dir)


def _json_field(path: Path, key: str) -> object:
    """``key`` of the JSON object in ``path``; None if the file or its value is not there."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value.get(key) if isinstance(value, dict) else None


def read_student_description(path: Path) -> dict[str, Any]:
    """The model description stored in a student file's metadata."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise VidkdError(f"checkpoint {path} is a folder; pass the student file a run ships, e.g. "
                         f"{path / 'best_student.safetensors'}")
    if not path.is_file():
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
        if (path.parent / "state.pt").is_file():  # checkpoints/epoch_NNNN/model.safetensors
            raise VidkdError(f"{path} is a training checkpoint, not a student file; pass the run's "
                             "best_student.safetensors or student.safetensors")
        raise VidkdError(f"{path} has no vidkd metadata; it was not written by `vidkd train`")
    try:
        description = json.loads(metadata["vidkd"])
    except ValueError as error:
        raise VidkdError(
            f"{path}: its vidkd metadata is not valid JSON ({error}); the file is damaged, "
            "ship it again from its run directory"
        ) from None
    if not isinstance(description, dict):
        raise VidkdError(f"{path}: its vidkd metadata is not a model description; the file is damaged")
    return description


def load_student(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a shipped student from its file (for eval, teachers, predict and export)."""
    description = read_student_description(Path(path))
    try:
        model = build_from_description(description)
    except KeyError as error:
        raise VidkdError(
            f"{path}: its model description lacks {error}; the file is damaged or was not "
            "written by `vidkd train`"
        ) from None
    except (ValueError, TypeError, RuntimeError) as error:  # RuntimeError: too large to allocate
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise VidkdError(f"{path}: its model description is impossible ({first}); the file is damaged") from None
    try:
        model.load_state_dict(load_file(str(path), device=str(device)))
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise VidkdError(
            f"{path}: its weights do not match its own model description ({first[:300]}); "
            "the file is damaged or was edited; ship it again from its run directory"
        ) from None
    except Exception as error:  # safetensors' own error for a truncated payload
        raise VidkdError(
            f"{path}: its weights cannot be read ({type(error).__name__}); the file is damaged"
        ) from None
    return model.to(device), description
