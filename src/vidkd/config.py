"""Experiment configuration: YAML files mapped onto typed, frozen dataclasses.

A config file has up to seven sections (``data``, ``model``, ``method``, ``optim``,
``train``, ``eval``, ``paper``) plus a ``name``. Every key is checked: an unknown or
misspelt key is a :class:`~vidkd.errors.VidkdError` that names the key, the file and
the closest valid key. ``--set section.key=value`` overrides any field; the value is
parsed as YAML (``--set optim.lr=0.1``, ``--set data.root=/data/ucf101``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vidkd.errors import VidkdError
from vidkd.models.resnet3d import DEPTHS

DatasetName = Literal["synthetic", "ucf101", "hmdb51", "kinetics400", "folder"]
MethodName = Literal["baseline", "baseline_da", "kd", "self_kd", "skd_srl", "frskd", "generative_kd"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the embedded generated dataset (see :mod:`vidkd.data.synthetic`)."""

    num_classes: int = 12
    train_per_class: int = 40
    test_per_class: int = 12
    size: int = 64
    seed: int = 0
    cache_dir: str | None = None  # default: $VIDKD_CACHE or ~/.cache/vidkd


@dataclass(frozen=True)
class DataConfig:
    """Where the videos are and how clips are made (SPEC "Data protocol")."""

    dataset: DatasetName = "synthetic"
    root: str | None = None  # video root (class folders, or flat for Kinetics)
    annotations: str | None = None  # split folder (UCF101/HMDB51), CSV (Kinetics), list (folder)
    test_annotations: str | None = None  # Kinetics: CSV of the evaluation subset
    classes_file: str | None = None  # Kinetics: label list
    split: int = 1
    backend: Literal["video", "frames"] = "video"
    clip_len: int = 16
    frame_stride: int = 1
    short_side: int = 128
    crop_size: int = 112
    test_clips: int = 10
    val_clips: int = 2
    val_fraction: float = 0.1
    val_source: Literal["train_groups", "test_groups"] = "train_groups"
    same_clip: bool = False
    num_workers: int = 2
    max_failed_fraction: float = 0.05
    skip_list: str | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class ModelConfig:
    """3D ResNet student (Hara et al. 2018)."""

    depth: int = 18
    shortcut: Literal["A", "B"] = "B"
    no_max_pool: bool = False
    width_multiplier: float = 1.0
    dropout: float = 0.0
    sync_bn: bool = False  # SyncBatchNorm across processes under DDP


@dataclass(frozen=True)
class AugmentSection:
    """SPEC augmentation set; ``full: false`` keeps crop + flip only, ``null`` the method's default."""

    full: bool | None = None
    flip: bool = True  # off for datasets whose labels change under a mirror
    p: float = 0.5
    invert: bool = False
    noise: bool = False


@dataclass(frozen=True)
class TeacherConfig:
    """A trained teacher for ``kd`` / ``generative_kd``: a vidkd student checkpoint."""

    checkpoint: str | None = None


@dataclass(frozen=True)
class MethodConfig:
    """Which training method and its loss weights (SPEC "Methods")."""

    name: MethodName = "baseline"
    tau: float = 10.0
    alpha: float = 0.1
    beta: float = 1.0
    kd_tau_squared: bool = False
    projector_dim: int = 2048
    predictor_hidden: int = 512
    augment: AugmentSection = field(default_factory=AugmentSection)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass(frozen=True)
class OptimConfig:
    """SGD with plateau schedule (SKD-SRL section IV-A)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    plateau_patience: int = 10
    plateau_factor: float = 0.1
    min_lr: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings."""

    epochs: int = 200
    batch_size: int = 32  # clips per device (per view)
    seed: int = 0
    out_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True
    val_every: int = 1
    keep_checkpoints: int = 2
    log_every: int = 10
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch default
    checkpoint_every_steps: int = 0  # also checkpoint every N training steps; 0 = per epoch only
    accumulate_steps: int = 1  # batches whose gradients add up to one optimiser step
    compile: bool = False  # torch.compile the method's training step and the augmentation pass


@dataclass(frozen=True)
class EvalConfig:
    """Test protocol: N clips spread uniformly, one centre crop, softmax averaged."""

    batch_size: int = 8
    test_clips: int | None = None  # None: data.test_clips


@dataclass(frozen=True)
class PaperConfig:
    """The paper's number for this experiment row, printed next to ours."""

    table: str | None = None
    top1: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment row."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return match[0] if match else valid[0]


def _coerce(value: Any, annotation: Any, where: str, source: str) -> Any:
    """Check ``value`` against a dataclass field annotation, converting int -> float."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise VidkdError(f"{source}: '{where}' must be a mapping, got {value!r}")
        return _build(annotation, value, where, source)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise VidkdError(
                f"{source}: '{where}' is {value!r}; choose one of {', '.join(map(str, choices))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except VidkdError as error:
                errors.append(str(error))
        raise VidkdError(errors[0] if errors else f"{source}: '{where}' has a bad value {value!r}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if annotation is int and isinstance(value, bool):
            raise VidkdError(f"{source}: '{where}' must be an integer, got {value!r}")
        if not isinstance(value, annotation):
            raise VidkdError(
                f"{source}: '{where}' must be {annotation.__name__}, got {value!r}"
            )
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            suggestion = f"{prefix}.{_closest(str(key), names)}" if prefix else _closest(
                str(key), names
            )
            raise VidkdError(
                f"{source}: unknown key '{where}'; did you mean '{suggestion}'?"
            )
        kwargs[key] = _coerce(value, hints[key], where, source)
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise VidkdError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``section.key=value`` strings; values are YAML scalars or lists."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise VidkdError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=0.1")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


def config_from_dict(
    values: dict[str, Any], source: str = "<config>", overrides: list[str] | None = None
) -> ExperimentConfig:
    """Build a checked :class:`ExperimentConfig` from a nested dict plus ``--set`` overrides."""
    tree = dict(values)
    for key, value in parse_overrides(overrides or []):
        _set_path(tree, key, value)
    config = _build(ExperimentConfig, tree, "", source)
    check_values(config, source)
    return config


_MODEL_DEPTHS = tuple(sorted(DEPTHS))


def check_values(cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Reject values that would fail deep inside a run, naming the field and the valid range."""
    d, s, m, mc, o, t = cfg.data, cfg.data.synthetic, cfg.model, cfg.method, cfg.optim, cfg.train
    rules: list[tuple[str, Any, bool, str]] = [
        ("data.clip_len", d.clip_len, d.clip_len >= 1, "at least 1"),
        ("data.frame_stride", d.frame_stride, d.frame_stride >= 1, "at least 1"),
        ("data.short_side", d.short_side, d.short_side >= 1, "at least 1"),
        ("data.crop_size", d.crop_size, 1 <= d.crop_size <= d.short_side,
         f"between 1 and data.short_side ({d.short_side})"),
        ("data.split", d.split, d.split >= 1, "at least 1"),
        ("data.test_clips", d.test_clips, d.test_clips >= 1, "at least 1"),
        ("data.val_clips", d.val_clips, d.val_clips >= 1, "at least 1"),
        ("data.val_fraction", d.val_fraction, 0.0 < d.val_fraction < 1.0, "in (0, 1)"),
        ("data.num_workers", d.num_workers, d.num_workers >= 0, "0 or more"),
        ("data.max_failed_fraction", d.max_failed_fraction, 0.0 <= d.max_failed_fraction <= 1.0,
         "in [0, 1]"),
        ("data.synthetic.num_classes", s.num_classes, s.num_classes >= 2, "at least 2"),
        ("data.synthetic.train_per_class", s.train_per_class, s.train_per_class >= 1, "at least 1"),
        ("data.synthetic.test_per_class", s.test_per_class, s.test_per_class >= 1, "at least 1"),
        ("data.synthetic.size", s.size, s.size >= 16, "at least 16"),
        ("model.depth", m.depth, m.depth in _MODEL_DEPTHS,
         f"one of {', '.join(map(str, _MODEL_DEPTHS))}"),
        ("model.width_multiplier", m.width_multiplier, m.width_multiplier > 0, "positive"),
        ("model.dropout", m.dropout, 0.0 <= m.dropout < 1.0, "in [0, 1)"),
        ("method.tau", mc.tau, mc.tau > 0, "positive"),
        ("method.alpha", mc.alpha, mc.alpha >= 0, "0 or more"),
        ("method.beta", mc.beta, mc.beta >= 0, "0 or more"),
        ("method.projector_dim", mc.projector_dim, mc.projector_dim >= 1, "at least 1"),
        ("method.predictor_hidden", mc.predictor_hidden, mc.predictor_hidden >= 1, "at least 1"),
        ("method.augment.p", mc.augment.p, 0.0 <= mc.augment.p <= 1.0, "a probability in [0, 1]"),
        ("optim.lr", o.lr, o.lr > 0, "positive"),
        ("optim.momentum", o.momentum, 0.0 <= o.momentum < 1.0, "in [0, 1)"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, "0 or more"),
        ("optim.plateau_patience", o.plateau_patience, o.plateau_patience >= 0, "0 or more"),
        ("optim.plateau_factor", o.plateau_factor, 0.0 < o.plateau_factor < 1.0, "in (0, 1)"),
        ("optim.min_lr", o.min_lr, o.min_lr >= 0, "0 or more"),
        ("train.epochs", t.epochs, t.epochs >= 1, "at least 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "at least 1"),
        ("train.val_every", t.val_every, t.val_every >= 1, "at least 1"),
        ("train.keep_checkpoints", t.keep_checkpoints, t.keep_checkpoints >= 1, "at least 1"),
        ("train.log_every", t.log_every, t.log_every >= 1, "at least 1"),
        ("train.threads", t.threads, t.threads >= 0, "0 (torch's default) or more"),
        ("train.accumulate_steps", t.accumulate_steps, t.accumulate_steps >= 1, "at least 1"),
        ("train.checkpoint_every_steps", t.checkpoint_every_steps,
         t.checkpoint_every_steps >= 0 and t.checkpoint_every_steps % t.accumulate_steps == 0,
         f"0 (off) or a multiple of train.accumulate_steps ({t.accumulate_steps})"),
        ("eval.batch_size", cfg.eval.batch_size, cfg.eval.batch_size >= 1, "at least 1"),
        ("eval.test_clips", cfg.eval.test_clips,
         cfg.eval.test_clips is None or cfg.eval.test_clips >= 1, "at least 1, or null"),
    ]
    for name, value, ok, requirement in rules:
        if not ok:
            raise VidkdError(f"{source}: '{name}' is {value!r}; it must be {requirement}")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file (or the defaults when ``path`` is None) and apply overrides."""
    if path is None:
        return config_from_dict({}, "<defaults>", overrides)
    path = Path(path)
    if not path.is_file():
        raise VidkdError(
            f"config file {path} not found; pass an existing YAML file, e.g. configs/demo/baseline.yaml"
        )
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise VidkdError(f"{path}:{line} is not valid YAML ({error.__class__.__name__}); fix the syntax") from None
    if not isinstance(values, dict):
        raise VidkdError(f"{path}: expected a mapping of sections (data:, model:, ...) at the top level")
    return config_from_dict(values, str(path), overrides)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The fully resolved config as plain data (what a run writes to ``config.yaml``)."""
    return dataclasses.asdict(config)


def dump_config(config: ExperimentConfig, path: Path) -> None:
    """Write the fully resolved config as YAML."""
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
