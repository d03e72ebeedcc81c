"""Experiment configuration: YAML files mapped onto typed, frozen dataclasses.

A config file has up to seven sections (``data``, ``model``, ``method``, ``optim``,
``train``, ``eval``, ``paper``) plus a ``name``. Every key is checked: an unknown or
misspelt key is a :class:`~vidkd.errors.VidkdError` that names the key, the file and
the closest valid key; so is a key written twice in one section (PyYAML would silently
keep the last). ``--set section.key=value`` overrides any field; the value is parsed as
YAML (``--set optim.lr=0.1``, ``--set data.root=/data/ucf101``). A float field also takes
``1e-3`` (YAML 1.1 reads it as text) and refuses ``.inf`` and ``.nan``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vidkd.errors import VidkdError
from vidkd.files import read_text
from vidkd.models.resnet3d import DEPTHS

#: largest seed (train.seed, data.synthetic.seed, compare --seeds): the engine derives
#: generator seeds as seed * 1000003 + epoch, which torch takes up to 2^64 - 1
MAX_SEED = 10**13

DatasetName = Literal["synthetic", "ucf101", "hmdb51", "kinetics400", "folder"]
MethodName = Literal[
    "baseline", "baseline_da", "kd", "self_kd", "skd_srl", "frskd", "generative_kd_teacher",
    "generative_kd",
]


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
    root: str | None = None  # video root (class folders, train/val/test folders, or flat for Kinetics)
    annotations: str | None = None  # split folder (UCF101/HMDB51), CSV (Kinetics), list (folder)
    test_annotations: str | None = None  # Kinetics: CSV of the evaluation subset; folder: test list
    classes_file: str | None = None  # Kinetics, folder: label list, one name a line (order = ids)
    split: int = 1
    clip_len: int = 16
    frame_stride: int = 1
    short_side: int = 128
    crop_size: int = 112
    test_clips: int = 10
    val_clips: int = 2
    val_fraction: float = 0.1
    val_source: Literal["train_groups", "test_groups"] = "train_groups"
    same_clip: bool = False  # second view: the same frames and crop window, its own augmentation
    num_workers: int = 2
    max_failed_fraction: float = 0.05
    skip_list: str | None = None
    cache: Literal["none", "memory"] = "none"  # memory: decode each video once, keep its frames
    cache_budget_mb: int = 4096
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
    conv1_t_size: int = 7  # temporal kernel of the stem conv (Hara's option)
    conv1_t_stride: int = 1  # temporal stride of the stem conv (Hara's option)


@dataclass(frozen=True)
class AugmentSection:
    """SPEC augmentation set; ``full: false`` keeps crop + flip only, ``null`` the method's default."""

    full: bool | None = None
    flip: bool = True  # off for datasets whose labels change under a mirror
    p: float = 0.5
    # per-operator switches of the full set (ignored when it is off)
    contrast: bool = True
    brightness: bool = True
    hue: bool = True
    blur: bool = True
    channel_split: bool = True
    invert: bool = False
    noise: bool = False


@dataclass(frozen=True)
class TeacherConfig:
    """A trained teacher for ``kd`` / ``generative_kd``: a vidkd student checkpoint (for
    ``generative_kd``, the file a ``generative_kd_teacher`` run shipped)."""

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
    # generative feature KD (SPEC 7): phase 1 generative_kd_teacher, phase 2 generative_kd
    cvae_kl_weight: float = 0.1  # L_cvae = MSE(F-hat, F) + cvae_kl_weight * KL(N(mu, s^2) || N(A, I))
    attention_kd_weight: float = 0.1  # SPEC's beta: beta * MSE(A_student, A_teacher)
    generative_kd_weight: float = 0.01  # MSE(student CVAE recon, teacher CVAE recon)
    recon_weight: float = 0.5  # full weight of the ramped reconstruction term (authors' code)
    recon_ramp_epochs: int = 20  # epoch e (0-based) weighs min(e + 1, ramp) / ramp of it
    augment: AugmentSection = field(default_factory=AugmentSection)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass(frozen=True)
class OptimConfig:
    """SGD and its learning-rate schedule (SKD-SRL section IV-A; :mod:`vidkd.engine.schedule`).

    ``schedule: plateau`` (the paper's default): a validation improves when its video top-1
    is above the best so far by more than ``plateau_threshold`` points (0: strictly above);
    after the ``plateau_patience``-th validation in a row that does not improve, the lr is
    multiplied by ``plateau_factor`` for the next epoch and the count restarts. The
    ``plateau_cooldown`` validations after a drop are not counted. With patience 10 this is
    "divided by 10 after 10 epochs without improvement" (PyTorch's ReduceLROnPlateau would
    wait for an 11th). Validations happen every ``train.val_every`` epochs.
    ``schedule: cosine`` anneals ``lr`` to ``min_lr`` over the epochs after warm-up
    (``train.epochs`` sets its length). ``schedule: multistep`` multiplies ``lr`` by
    ``gamma`` after each epoch count in ``milestones`` (``[30, 60]``: epochs 31 and 61 are
    the first at the lower rates). ``warmup_epochs`` W: 0-based epoch e < W runs at
    (e + 1) / (W + 1) of its lr. No schedule goes below ``min_lr``.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["plateau", "cosine", "multistep"] = "plateau"
    warmup_epochs: int = 0
    plateau_patience: int = 10
    plateau_factor: float = 0.1
    plateau_threshold: float = 0.0  # points of val video top-1 (%), absolute
    plateau_cooldown: int = 0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings."""

    epochs: int = 200
    batch_size: int = 32  # videos per device per step (a two-view method: 2x the clips)
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
    reuse_host_memory: bool = True  # on a CPU, glibc keeps freed memory for the next step


@dataclass(frozen=True)
class EvalConfig:
    """Test protocol: N clips spread uniformly, one centre crop, softmax averaged."""

    batch_size: int = 8
    test_clips: int | None = None  # None: data.test_clips
    # the student the test split scores: best (highest val video top-1; the paper's protocol,
    # for the plateau schedule) or last (the end of a fixed schedule: no validation picks it)
    student: Literal["best", "last"] = "best"


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


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice; ``key``, ``line`` and ``first_line`` (1-based)."""

    def __init__(self, key: Any, node: yaml.Node, first: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key {key!r}", node.start_mark)
        self.key, self.line, self.first_line = key, node.start_mark.line + 1, first.line + 1


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key written twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_marks: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *defaults' merges may be overridden by explicit keys
                key = self.construct_object(key_node, deep=True)
                try:
                    first = first_marks.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node.start_mark:
                    raise DuplicateKeyError(key, key_node, first)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        """YAML 1.1 reads ``1:30`` as 90 (base 60); here, as in YAML 1.2, it is text."""
        if ":" in str(node.value):
            return self.construct_scalar(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        if ":" in str(node.value):
            return self.construct_scalar(node)
        return super().construct_yaml_float(node)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _UniqueKeyLoader.construct_yaml_float)

# What a YAML parser can raise on hostile text besides YAMLError: an impossible date such
# as 2001-02-30 raises ValueError, very deep nesting RecursionError, and PyYAML's
# constructors fail in their own ways on explicit tags with bad text ('!!int +' IndexError,
# '!!bool x' KeyError, '!!timestamp x' AttributeError).
_YAML_FAILURES = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError,
                  IndexError, KeyError, AttributeError)


def parse_yaml(text: str) -> Any:
    """``text`` parsed like ``yaml.safe_load``, but a repeated key raises DuplicateKeyError."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


# A float written with an exponent but no dot (``1e-3``), which YAML 1.1 reads as text.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error line stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return match[0] if match else valid[0]


def _encodable(text: str) -> bool:
    """Whether ``text`` can be a file name here (``os.fsencode``: a folder name that is not
    UTF-8 reaches Python as surrogate escapes, and those encode back to its bytes)."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


def _coerce(value: Any, annotation: Any, where: str, source: str) -> Any:
    """Check ``value`` against a dataclass field annotation, converting int -> float."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise VidkdError(f"{source}: '{where}' must be a mapping, got {show(value)}")
        return _build(annotation, value, where, source)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise VidkdError(
                f"{source}: '{where}' is {show(value)}; choose one of {', '.join(map(str, choices))}"
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
        raise VidkdError(errors[0] if errors else f"{source}: '{where}' has a bad value {show(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise VidkdError(f"{source}: '{where}' must be a list, e.g. [30, 60], got {show(value)}")
        (item,) = typing.get_args(annotation)
        return [_coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)  # 1e-3: a number, though YAML 1.1 reads it as a string
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise VidkdError(f"{source}: '{where}' is {show(value)}; it is too large for a number") from None
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise VidkdError(f"{source}: '{where}' is {show(value)}; it must be a finite number")
    if annotation in (int, float, str, bool):
        if annotation is int and isinstance(value, bool):
            raise VidkdError(f"{source}: '{where}' must be an integer, got {show(value)}")
        if not isinstance(value, annotation):
            raise VidkdError(
                f"{source}: '{where}' must be {annotation.__name__}, got {show(value)}"
            )
        if isinstance(value, str) and ("\0" in value or not _encodable(value)):
            raise VidkdError(f"{source}: '{where}' is {show(value)}: it holds a NUL character or "
                             "a lone surrogate that no file name can hold; fix the text")
        return value
    return value


#: keys that existed once: setting one is an error that says why it went, except the value
#: that earlier versions wrote into every run's config.yaml (so old runs still load)
REMOVED: dict[str, tuple[Any, str]] = {
    "data.backend": (
        "video",
        "each video is decoded by what it is on disk (a file with PyAV, a folder of "
        "img_00001.jpg ... frames as images), so there is nothing to choose; delete the key",
    ),
}


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if where in REMOVED:
            written_by_old_runs, why = REMOVED[where]
            if value == written_by_old_runs:
                continue
            raise VidkdError(f"{source}: '{where}' was removed: {why}")
        if key not in names:
            suggestion = f"{prefix}.{_closest(str(key), names)}" if prefix else _closest(
                str(key), names
            )
            raise VidkdError(f"{source}: unknown key {where!r}; did you mean {suggestion!r}?")
        kwargs[key] = _coerce(value, hints[key], where, source)
    return cls(**kwargs)


def _merge(old: Any, new: Any) -> Any:
    """``new`` over ``old``, mapping by mapping: ``--set data={clip_len: 4}`` changes one
    field and keeps the section's others, like ``--set data.clip_len=4``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{key: _merge(old.get(key), value) for key, value in new.items()}}
    return new


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise VidkdError(f"--set {dotted!r}: {part!r} is not a section")
        node[part] = child = dict(child)  # never write into the caller's nested dicts
        node = child
    # `--set method.augment={}` puts a section back to its defaults; a non-empty mapping merges
    node[parts[-1]] = value if value == {} else _merge(node.get(parts[-1]), value)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``section.key=value`` strings; values are YAML scalars or lists."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise VidkdError(f"--set {show(item)}: expected section.key=value, e.g. optim.lr=0.1")
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw) if raw != "" else None
        except DuplicateKeyError as error:
            raise VidkdError(f"--set {show(item)}: key {show(error.key)} is given twice; keep one") from None
        except _YAML_FAILURES:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


#: loss weights a method takes where its config leaves them out, when they are not
#: MethodConfig's own (the tau 10, alpha 0.1 of kd, self_kd and skd_srl): SPEC "Methods" 6,
#: FRSKD's code. ``methods/frskd.py`` uses the same numbers (a test checks).
METHOD_DEFAULTS: dict[str, dict[str, float]] = {"frskd": {"tau": 4.0, "alpha": 2.0, "beta": 100.0}}


def config_from_dict(
    values: dict[str, Any], source: str = "<config>", overrides: list[str] | None = None
) -> ExperimentConfig:
    """Build a checked :class:`ExperimentConfig` from a nested dict plus ``--set`` overrides."""
    tree = dict(values)
    overridden = set()
    for key, value in parse_overrides(overrides or []):
        _set_path(tree, key, value)
        overridden.add(key)
    method = tree.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if isinstance(name, str) and name in METHOD_DEFAULTS:  # the method's own, not SKD-SRL's
        tree["method"] = {**METHOD_DEFAULTS[name], **method}
    config = _build(ExperimentConfig, tree, "", source)
    check_values(config, source, frozenset(overridden))
    return config


_MODEL_DEPTHS = tuple(sorted(DEPTHS))
#: upper bounds that keep a value inside what torch can allocate or index (a larger one
#: fails deep inside a run, or hangs): clips a video, videos a step, units of a head
MAX_CLIPS, MAX_BATCH, MAX_WIDTH = 1000, 2**20, 2**16
SYNTHETIC_CLASSES = 12  # len(vidkd.data.synthetic.CLASSES); tests check the two agree


def check_values(cfg: ExperimentConfig, source: str = "<config>",
                 overridden: frozenset[str] = frozenset()) -> None:
    """Reject values that would fail deep inside a run, naming the field and the valid range,
    and where it came from: ``source``, or ``--set`` for a field in ``overridden``."""
    d, s, m, mc, o, t = cfg.data, cfg.data.synthetic, cfg.model, cfg.method, cfg.optim, cfg.train
    rules: list[tuple[str, Any, bool, str]] = [
        ("data.clip_len", d.clip_len, d.clip_len >= 1, "at least 1"),
        ("data.frame_stride", d.frame_stride, d.frame_stride >= 1, "at least 1"),
        ("data.short_side", d.short_side, d.short_side >= 1, "at least 1"),
        ("data.crop_size", d.crop_size, 4 <= d.crop_size <= d.short_side,  # 4: the 7x7 blur's border
         f"between 4 and data.short_side ({d.short_side})"),
        ("data.split", d.split, d.split >= 1, "at least 1"),
        ("data.test_clips", d.test_clips, 1 <= d.test_clips <= MAX_CLIPS, f"between 1 and {MAX_CLIPS}"),
        ("data.val_clips", d.val_clips, 1 <= d.val_clips <= MAX_CLIPS, f"between 1 and {MAX_CLIPS}"),
        ("data.val_fraction", d.val_fraction, 0.0 < d.val_fraction < 1.0, "in (0, 1)"),
        ("data.num_workers", d.num_workers, d.num_workers >= 0, "0 or more"),
        ("data.cache_budget_mb", d.cache_budget_mb, d.cache_budget_mb >= 1, "at least 1"),
        ("data.max_failed_fraction", d.max_failed_fraction, 0.0 <= d.max_failed_fraction <= 1.0,
         "in [0, 1]"),
        ("data.synthetic.num_classes", s.num_classes,
         s.num_classes >= 2 and (d.dataset != "synthetic" or s.num_classes <= SYNTHETIC_CLASSES),
         f"between 2 and {SYNTHETIC_CLASSES} (the generator's motions)"),
        ("data.synthetic.train_per_class", s.train_per_class, s.train_per_class >= 1, "at least 1"),
        ("data.synthetic.test_per_class", s.test_per_class, s.test_per_class >= 1, "at least 1"),
        ("data.synthetic.size", s.size, s.size >= 16, "at least 16"),
        ("data.synthetic.seed", s.seed, 0 <= s.seed <= MAX_SEED, f"between 0 and {MAX_SEED}"),
        ("model.depth", m.depth, m.depth in _MODEL_DEPTHS,
         f"one of {', '.join(map(str, _MODEL_DEPTHS))}"),
        ("model.width_multiplier", m.width_multiplier, 0 < m.width_multiplier <= 16,
         "positive and at most 16"),
        ("model.dropout", m.dropout, 0.0 <= m.dropout < 1.0, "in [0, 1)"),
        ("model.conv1_t_size", m.conv1_t_size, 1 <= m.conv1_t_size <= 64, "between 1 and 64"),
        ("model.conv1_t_stride", m.conv1_t_stride, 1 <= m.conv1_t_stride <= 64, "between 1 and 64"),
        ("method.tau", mc.tau, mc.tau > 0, "positive"),
        ("method.alpha", mc.alpha, mc.alpha >= 0, "0 or more"),
        ("method.beta", mc.beta, mc.beta >= 0, "0 or more"),
        ("method.projector_dim", mc.projector_dim, 1 <= mc.projector_dim <= MAX_WIDTH,
         f"between 1 and {MAX_WIDTH}"),
        ("method.predictor_hidden", mc.predictor_hidden, 1 <= mc.predictor_hidden <= MAX_WIDTH,
         f"between 1 and {MAX_WIDTH}"),
        ("method.cvae_kl_weight", mc.cvae_kl_weight, mc.cvae_kl_weight >= 0, "0 or more"),
        ("method.attention_kd_weight", mc.attention_kd_weight, mc.attention_kd_weight >= 0,
         "0 or more"),
        ("method.generative_kd_weight", mc.generative_kd_weight, mc.generative_kd_weight >= 0,
         "0 or more"),
        ("method.recon_weight", mc.recon_weight, mc.recon_weight >= 0, "0 or more"),
        ("method.recon_ramp_epochs", mc.recon_ramp_epochs, mc.recon_ramp_epochs >= 1,
         "at least 1"),
        ("method.augment.p", mc.augment.p, 0.0 <= mc.augment.p <= 1.0, "a probability in [0, 1]"),
        ("optim.lr", o.lr, 0 < o.lr <= 1000, "positive and at most 1000"),
        ("optim.momentum", o.momentum, 0.0 <= o.momentum < 1.0, "in [0, 1)"),
        ("optim.nesterov", o.nesterov, not o.nesterov or o.momentum > 0,
         "false when optim.momentum is 0 (Nesterov momentum needs a momentum)"),
        ("optim.weight_decay", o.weight_decay, 0 <= o.weight_decay <= 1000, "between 0 and 1000"),
        ("optim.plateau_patience", o.plateau_patience, o.plateau_patience >= 1, "at least 1"),
        ("optim.plateau_factor", o.plateau_factor, 0.0 < o.plateau_factor < 1.0, "in (0, 1)"),
        ("optim.plateau_threshold", o.plateau_threshold, 0.0 <= o.plateau_threshold < 100.0,
         "in [0, 100) (points of validation video top-1)"),
        ("optim.plateau_cooldown", o.plateau_cooldown, o.plateau_cooldown >= 0, "0 or more"),
        ("optim.milestones", o.milestones,
         all(m >= 1 for m in o.milestones) and o.milestones == sorted(set(o.milestones)),
         "increasing epoch counts, each at least 1, e.g. [30, 60]"),
        ("optim.milestones", o.milestones, o.schedule == "multistep" or not o.milestones,
         "empty unless optim.schedule is multistep"),
        ("optim.milestones", o.milestones, o.schedule != "multistep" or bool(o.milestones),
         "set when optim.schedule is multistep, e.g. [30, 60]"),
        ("optim.gamma", o.gamma, 0.0 < o.gamma < 1.0, "in (0, 1)"),
        ("optim.min_lr", o.min_lr, 0.0 <= o.min_lr < o.lr, f"0 or more and below optim.lr ({o.lr})"),
        ("train.seed", t.seed, 0 <= t.seed <= MAX_SEED, f"between 0 and {MAX_SEED}"),
        ("train.epochs", t.epochs, t.epochs >= 1, "at least 1"),
        ("train.batch_size", t.batch_size, 1 <= t.batch_size <= MAX_BATCH, f"between 1 and {MAX_BATCH}"),
        ("optim.warmup_epochs", o.warmup_epochs, 0 <= o.warmup_epochs < t.epochs,
         f"0 or more and below train.epochs ({t.epochs})"),
        ("train.val_every", t.val_every, t.val_every >= 1, "at least 1"),
        ("train.keep_checkpoints", t.keep_checkpoints, t.keep_checkpoints >= 1, "at least 1"),
        ("train.log_every", t.log_every, t.log_every >= 1, "at least 1"),
        ("train.threads", t.threads, 0 <= t.threads <= 4096, "0 (torch's default) to 4096"),
        ("train.accumulate_steps", t.accumulate_steps, t.accumulate_steps >= 1, "at least 1"),
        ("train.checkpoint_every_steps", t.checkpoint_every_steps,
         t.checkpoint_every_steps >= 0
         and (t.accumulate_steps < 1 or t.checkpoint_every_steps % t.accumulate_steps == 0),
         f"0 (off) or a multiple of train.accumulate_steps ({t.accumulate_steps})"),
        ("eval.batch_size", cfg.eval.batch_size, 1 <= cfg.eval.batch_size <= MAX_BATCH,
         f"between 1 and {MAX_BATCH}"),
        ("eval.test_clips", cfg.eval.test_clips,
         cfg.eval.test_clips is None or 1 <= cfg.eval.test_clips <= MAX_CLIPS,
         f"between 1 and {MAX_CLIPS}, or null"),
    ]
    for name, value, ok, requirement in rules:
        if not ok:
            origin = "--set" if any(name == key or name.startswith(key + ".") or key.startswith(name + ".")
                                    for key in overridden) else source
            raise VidkdError(f"{origin}: '{name}' is {show(value)}; it must be {requirement}")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file (or the defaults when ``path`` is None) and apply overrides."""
    if path is None:
        return config_from_dict({}, "<defaults>", overrides)
    path = Path(path)
    text = read_text(
        path, "config file", "pass an existing YAML file, e.g. configs/demo/baseline.yaml"
    )
    try:
        values = parse_yaml(text)
    except DuplicateKeyError as error:
        raise VidkdError(
            f"{path}: line {error.line}: key {error.key!r} appears twice in one section "
            f"(first on line {error.first_line}); keep one"
        ) from None
    except _YAML_FAILURES as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        detail = type(error).__name__ if isinstance(error, yaml.YAMLError) else str(error)
        raise VidkdError(f"{path}:{line} is not valid YAML ({detail}); fix the syntax") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise VidkdError(f"{path}: expected a mapping of sections (data:, model:, ...) at the top level")
    return config_from_dict(values, str(path), overrides)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The fully resolved config as plain data (what a run writes to ``config.yaml``)."""
    return dataclasses.asdict(config)


def dump_config(config: ExperimentConfig, path: Path) -> None:
    """Write the fully resolved config as YAML."""
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
