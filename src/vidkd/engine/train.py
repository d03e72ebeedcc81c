"""The training loop: plain PyTorch, readable top to bottom (after nanoGPT's ``train.py``).

One run = one experiment config. Per epoch: train on one random clip (or two views) per
video, validate on a group-disjoint slice of the training split, step the learning-rate
schedule (:mod:`vidkd.engine.schedule`; the paper's plateau rule by default), tell the method whether validation improved (``self_kd`` refreshes its
teacher), log to TensorBoard and ``metrics.jsonl``, and write a checkpoint. At the end the last
student is shipped as ``student.safetensors`` and the student ``eval.student`` names (the
best-validation one by default) is scored on the test split. ``torchrun`` launches it on many GPUs through DDP.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, Subset
from tqdm import tqdm

from vidkd.config import AugmentSection, ExperimentConfig, ModelConfig, config_to_dict, dump_config
from vidkd.data.augment import OPERATORS, AugmentConfig, ClipAugment, compiled_on, flip_only
from vidkd.data.build import DataSplits, build_splits
from vidkd.data.cache import MemoryCache
from vidkd.data.dataset import ClipSpec, VideoClipDataset, collate
from vidkd.data.decode import open_clip_reader
from vidkd.data.transforms import to_model_input
from vidkd.engine import distributed
from vidkd.engine.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_student,
    rng_state,
    save_checkpoint,
    save_student,
    set_rng_state,
    tested_student_name,
)
from vidkd.engine.evaluate import EvalResult, autocast, evaluate
from vidkd.engine.hardware import (
    apply_reuse_host_memory,
    compile_module,
    cpu_bf16_step_problem,
    precision_warning,
    trim_host_memory,
)
from vidkd.engine.rundir import (
    MARKER,
    RunLock,
    clear_run,
    holds_files,
    is_vidkd_run,
    never_trained,
    resolve_run_dir,
    resume_changes,
)
from vidkd.engine.schedule import LRSchedule
from vidkd.errors import VidkdError
from vidkd.files import atomic_write_text, read_json_lines, writable_dir
from vidkd.methods import METHODS, Method
from vidkd.models.resnet3d import ResNet3D, resnet3d

log = logging.getLogger("vidkd")


def run_dir_of(cfg: ExperimentConfig) -> Path:
    """``train.out_dir / name``, once the name is proven to stay inside ``out_dir``."""
    return resolve_run_dir(cfg.train.out_dir, cfg.name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_student(cfg: ExperimentConfig, num_classes: int) -> ResNet3D:
    m = cfg.model
    return resnet3d(
        m.depth, num_classes, shortcut=m.shortcut, no_max_pool=m.no_max_pool,
        width_multiplier=m.width_multiplier, dropout=m.dropout,
        conv1_t_size=m.conv1_t_size, conv1_t_stride=m.conv1_t_stride,
    )


def model_description(cfg: ExperimentConfig, classes: list[str]) -> dict[str, Any]:
    """What ``load_student`` needs to rebuild the network, plus the input protocol."""
    m, d = cfg.model, cfg.data
    return {
        "depth": m.depth, "num_classes": len(classes), "shortcut": m.shortcut,
        "no_max_pool": m.no_max_pool, "width_multiplier": m.width_multiplier,
        "dropout": m.dropout, "conv1_t_size": m.conv1_t_size,
        "conv1_t_stride": m.conv1_t_stride, "classes": classes, "clip_len": d.clip_len, "frame_stride": d.frame_stride,
        "short_side": d.short_side, "crop_size": d.crop_size, "method": cfg.method.name,
        "input_range": [-1.0, 1.0],
    }


def load_teacher(cfg: ExperimentConfig, num_classes: int) -> torch.nn.Module:
    """The trained network that ``method.teacher.checkpoint`` names, checked against the data."""
    mc = cfg.method
    if not mc.teacher.checkpoint:
        raise VidkdError(
            f"method '{mc.name}' needs a trained teacher: set method.teacher.checkpoint to a "
            "student.safetensors written by `vidkd train` (e.g. runs/<teacher>/student.safetensors)"
        )
    teacher_path = Path(mc.teacher.checkpoint).expanduser()
    if not teacher_path.is_file():
        raise VidkdError(
            f"teacher checkpoint {teacher_path} not found; train the teacher first (each "
            "shipped config that needs one names its teacher config in its first line) or set "
            "method.teacher.checkpoint=PATH"
        )
    teacher, description = load_student(teacher_path)
    if description["num_classes"] != num_classes:
        raise VidkdError(
            f"teacher {mc.teacher.checkpoint} has {description['num_classes']} classes, "
            f"the dataset {num_classes}; train the teacher on the same dataset"
        )
    return teacher


def build_method(cfg: ExperimentConfig, num_classes: int) -> Method:
    """The method of ``cfg.method.name`` around a fresh student (and its teacher, if any)."""
    cls = METHODS.get(cfg.method.name)
    if cls is None:
        raise VidkdError(
            f"method '{cfg.method.name}' is not available yet; choose one of {', '.join(METHODS)}"
        )
    teacher = load_teacher(cfg, num_classes) if cls.needs_teacher else None
    return cls.from_config(build_student(cfg, num_classes), cfg.method, teacher)


@contextlib.contextmanager
def one_value_batch_norm_explained(cfg: ExperimentConfig, videos: int) -> Iterator[None]:
    """Turn BatchNorm's "more than 1 value per channel" error into one line with the fix.

    A training batch of one video with short, small clips leaves a BatchNorm layer (the last
    stage's, or a method head's) one value per channel; torch refuses to normalise it. Such a
    batch is ``train.batch_size`` 1, or the last batch of an epoch that is not dropped (a
    training split under two batches). Under ``train.compile`` dynamo wraps torch's
    ValueError in a RuntimeError that quotes it.
    """
    try:
        yield
    except (ValueError, RuntimeError) as error:
        if "Expected more than 1 value per channel" not in str(error):
            raise
        d, batch = cfg.data, cfg.train.batch_size
        fix = ("use train.batch_size=2 or more (or longer, larger clips)" if videos == batch else
               f"it is the last batch of an epoch, short of train.batch_size={batch}: choose a "
               "batch size that leaves no single video over, or add training videos")
        raise VidkdError(
            f"a training batch of {videos} video(s) of {d.clip_len}x{d.crop_size}x{d.crop_size} "
            f"clips leaves a BatchNorm layer one value per channel, which it cannot normalise; "
            f"{fix}"
        ) from None


def augment_config(cfg: ExperimentConfig, method: Method) -> AugmentConfig:
    """Full SPEC set or crop + flip, per the method's default unless the config says."""
    section = cfg.method.augment
    full = method.full_augment if section.full is None else section.full
    set_ops = [name for name in OPERATORS if name != "flip"]  # flip has its own switch
    if not full:
        ignored = [name for name in set_ops
                   if getattr(section, name) != getattr(AugmentSection, name)]
        if ignored:
            log.warning("method.augment.%s has no effect: this run trains on crop + flip; "
                        "add method.augment.full=true to use the full set", ignored[0])
        return dataclasses.replace(flip_only(), p=section.p, flip=section.flip)
    return AugmentConfig(p=section.p, flip=section.flip,
                         **{name: getattr(section, name) for name in set_ops})


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    train_sampler: DistributedSampler | None


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def decode_threads(cfg: ExperimentConfig, dist_info: distributed.DistInfo) -> int:
    """Threads for filling the memory cache: this process's share of the CPUs it may use,
    at most ``train.threads`` when that is set, and at most 8."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (usable or 1) // max(1, dist_info.local_world_size))
    if cfg.train.threads > 0:
        threads = min(threads, cfg.train.threads)
    return min(8, threads)


SharedCache = dict[tuple[int, int, tuple[str, ...]], MemoryCache]


def memory_cache(
    cfg: ExperimentConfig, paths: list[str], shared: SharedCache | None, progress: bool = False,
    threads: int = 1,
) -> MemoryCache:
    """``paths`` decoded into memory: the cache in ``shared`` when an earlier run of this
    process filled it with the same videos at the same short side and budget (``vidkd
    compare`` passes one dict to all its runs), else a new one, filled, which then replaces
    it there (a fill that fails leaves nothing behind)."""
    key = (cfg.data.short_side, cfg.data.cache_budget_mb, tuple(sorted(paths)))
    if shared is not None and key in shared:
        log.info("reusing the %d videos an earlier run cached in memory", len(shared[key].videos))
        return shared[key]
    if shared is not None:
        shared.clear()  # one cache at a time: free the earlier one before filling this one
    cache = MemoryCache(cfg.data.short_side, cfg.data.cache_budget_mb)
    cache.fill(paths, progress, threads=threads)
    if shared is not None:
        shared[key] = cache
    return cache


def build_loaders(
    cfg: ExperimentConfig, splits: DataSplits, num_views: int, dist_info: distributed.DistInfo,
    pin_memory: bool, progress: bool = False, shared_cache: SharedCache | None = None,
) -> Loaders:
    d = cfg.data
    spec = ClipSpec(d.clip_len, d.frame_stride, d.short_side, d.crop_size)
    seed = cfg.train.seed
    open_reader = open_clip_reader
    if d.cache == "memory":  # decoded once here, before the workers fork and share it
        paths = [str(r.path) for r in (*splits.train, *splits.val, *splits.test)]
        cache = memory_cache(cfg, paths, shared_cache, progress, decode_threads(cfg, dist_info))
        open_reader = cache.open
    elif shared_cache:
        shared_cache.clear()  # an earlier run's decoded videos: this run reads the files
    train_set = VideoClipDataset(
        splits.train, spec, "train", num_views, d.same_clip, seed=seed, open_reader=open_reader
    )
    val_set = VideoClipDataset(splits.val, spec, "test", num_clips=d.val_clips, open_reader=open_reader)
    test_set = VideoClipDataset(
        splits.test, spec, "test", num_clips=cfg.eval.test_clips or d.test_clips,
        open_reader=open_reader,
    )
    if dist_info.enabled:  # evaluation shards without padding; metrics are summed over ranks
        val_set = Subset(val_set, range(dist_info.rank, len(val_set), dist_info.world_size))
        test_set = Subset(test_set, range(dist_info.rank, len(test_set), dist_info.world_size))
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=True)
        base: Sampler[int] = train_sampler
    else:
        train_sampler = None
        base = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
    common = {
        "num_workers": d.num_workers, "collate_fn": collate, "pin_memory": pin_memory,
        "worker_init_fn": _worker_init, "persistent_workers": False,
    }
    if d.num_workers > 0:
        common["prefetch_factor"] = 4
    batch = cfg.train.batch_size
    drop_last = len(train_set) // dist_info.world_size >= 2 * batch
    return Loaders(
        # its own generator: making an iterator draws worker seeds from it, not from the global
        # RNG, so a run resumed mid-epoch continues the global RNG exactly
        train=DataLoader(train_set, batch, sampler=SkipSampler(base), drop_last=drop_last,
                         generator=torch.Generator().manual_seed(seed), **common),
        val=DataLoader(val_set, cfg.eval.batch_size, shuffle=False, **common),
        test=DataLoader(test_set, cfg.eval.batch_size, shuffle=False, **common),
        train_sampler=train_sampler,
    )


class MetricsLog:
    """``metrics.jsonl`` (one JSON object a line) plus TensorBoard scalars; rank 0 only.

    Every TensorBoard scalar is plotted against the global step (batches trained), epoch and
    test records at the step their epoch or the run ended. A resumed run passes
    ``purge_step``, the first step after its checkpoint: TensorBoard then hides every point a
    killed run logged from that step on, which the run trains and logs again."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def drop_after(self, epoch: int, step: int | None) -> None:
        """Before a resumed run appends: drop the records a killed run wrote past the
        checkpoint it resumes from, which the run now trains and logs again: epochs after
        ``epoch``, and the steps of epoch ``epoch + 1`` (those past ``step`` when the
        checkpoint is inside that epoch). Records are matched by their epoch, so a run
        resumed with another batch count keeps every record of its finished epochs. A line
        cut short by the kill is dropped, and the file ends with a newline, so that the
        next record is never glued to another. The rewrite is atomic."""
        if not self.enabled or not self.path.is_file():
            return
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        kept = [line for line in lines if not _past(line, epoch, step)]
        if len(kept) < len(lines) or (text and not text.endswith("\n")):
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        if len(kept) < len(lines):
            log.info("metrics.jsonl: %d record(s) past the checkpoint dropped; they are trained "
                     "and logged again", len(lines) - len(kept))

    def write(self, record: dict[str, Any], step: int, prefix: str) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _past(line: str, epoch: int, step: int | None) -> bool:
    """Whether a ``metrics.jsonl`` line is damaged or logs training past a checkpoint taken
    after ``epoch`` epochs and, when ``step`` is given, at global step ``step`` of the next."""
    try:
        record = json.loads(line)
    except ValueError:
        return True
    if not isinstance(record, dict):
        return True
    at = record.get("epoch")
    if not isinstance(at, int) or record.get("kind") not in ("epoch", "step"):
        return False
    if record["kind"] == "epoch" or at != epoch + 1:
        return at > epoch
    position = record.get("step")
    return step is None or not isinstance(position, int) or position > step


def _unwrap(model: torch.nn.Module) -> Method:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _note_failures(failed_seen: dict[str, str], failures: list[str]) -> None:
    """Log each unreadable video once; ``failures`` are ``"<path>: <reason>"``, keyed by path
    (a video can fail with another reason at another clip position)."""
    for failure in sorted(failures):
        path = failure.split(": ", 1)[0]
        if path not in failed_seen:
            log.warning("unreadable video skipped: %s", failure)
            failed_seen[path] = failure


class SkipSampler(Sampler[int]):
    """Yields ``base``'s indices from position ``skip`` on, so that a run resumed mid-epoch
    sees exactly the batches it had not trained on (without decoding the others)."""

    def __init__(self, base: Sampler[int]) -> None:
        self.base = base
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)  # type: ignore[arg-type]


def _stored_config(run_dir: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    if "config" in state:
        return state["config"]
    path = run_dir / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


def _read_history(path: Path) -> list[dict[str, Any]]:
    """The events of ``history.jsonl``; a line that is not a JSON object is skipped, with a
    warning (a damaged line must not cost the run its results)."""
    events, damaged = read_json_lines(path)
    if damaged:
        log.warning("%s: skipped %d line(s) that are not JSON events", path, damaged)
    return events


def _history(run_dir: Path, event: dict[str, Any]) -> None:
    """Append one event (start, overwrite, resume with its config changes) to history.jsonl."""
    event = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid(), **event}
    with (run_dir / "history.jsonl").open("a") as handle:
        handle.write(json.dumps(event, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def train(
    cfg: ExperimentConfig, resume: bool = False, progress: bool = True, overwrite: bool = False,
    force: bool = False, shared_cache: SharedCache | None = None,
) -> dict[str, Any]:
    """Train one experiment; returns the final summary (also written to ``results.json``).

    ``resume`` continues from the run's newest checkpoint that verifies (a config that
    differs from the stored one is refused, or with ``force`` recorded); ``overwrite``
    deletes an earlier run of the same name first; with neither, an existing run is an
    error. The run directory is locked for the life of the run. ``shared_cache`` lets runs of
    one process decode their videos once under ``data.cache: memory`` (:func:`memory_cache`).
    """
    run_dir = resolve_run_dir(cfg.train.out_dir, cfg.name)  # before anything is touched
    if resume and not holds_files(run_dir):  # a mistyped name must not leave a folder behind
        raise VidkdError(
            f"--resume: there is no run in {run_dir}; check the run's name (--set name=...) and "
            "train.out_dir, or start the run without --resume"
        )
    device = distributed.resolve_device(
        cfg.train.device, int(os.environ.get("LOCAL_RANK", "0"))
    )
    dist_info = distributed.init_distributed(device)
    slow_precision = precision_warning(cfg.train.precision, device)
    if slow_precision and dist_info.is_main:
        log.warning(slow_precision)
    if cfg.train.precision == "bf16" and device.type == "cpu":  # every rank would crash alike
        m = cfg.model
        problem = cpu_bf16_step_problem(m.depth, m.width_multiplier, cfg.data.clip_len,
                                        cfg.data.crop_size, m.conv1_t_size, m.conv1_t_stride)
        if problem:
            raise VidkdError(f"train.precision=bf16 cannot train here: {problem}; use "
                             "--set train.precision=fp32")
    if cfg.model.sync_bn and dist_info.enabled and device.type == "cpu":
        raise VidkdError(
            "model.sync_bn needs GPUs: PyTorch's SyncBatchNorm does not run on CPU; drop "
            "--set model.sync_bn=true for CPU processes"
        )
    if cfg.model.sync_bn and not dist_info.enabled:
        log.warning("model.sync_bn has no effect in a single process: BatchNorm already sees the "
                    "whole batch; it syncs statistics across processes under torchrun")
    writable_dir(run_dir, "output directory", fix="pass a writable one with --set train.out_dir=PATH")
    with RunLock(run_dir) if dist_info.is_main else contextlib.nullcontext():
        summary = _train(cfg, run_dir, device, dist_info, resume, progress, overwrite, force,
                         shared_cache)
    distributed.cleanup()  # only on success: after an error a peer may never reach a barrier
    return summary


def _train(
    cfg: ExperimentConfig, run_dir: Path, device: torch.device, dist_info: distributed.DistInfo,
    resume: bool, progress: bool, overwrite: bool, force: bool, shared_cache: SharedCache | None,
) -> dict[str, Any]:
    is_main = dist_info.is_main
    ckpt_dir = run_dir / "checkpoints"
    if is_main:
        if overwrite:
            removed = clear_run(run_dir)
            if removed:
                log.info("--overwrite: deleted the earlier run in %s (%s)", run_dir, ", ".join(removed))
        elif resume and holds_files(run_dir) and not is_vidkd_run(run_dir):
            raise VidkdError(
                f"--resume: {run_dir} holds files that are not a vidkd run; nothing was changed. "
                "Check the name and train.out_dir, or choose another name with --set name=NEW"
            )
        elif not resume and holds_files(run_dir) and not never_trained(run_dir):
            if not is_vidkd_run(run_dir):
                raise VidkdError(
                    f"{run_dir} holds files that are not a vidkd run; choose another name with "
                    "--set name=NEW or another train.out_dir"
                )
            if not list_checkpoints(ckpt_dir):  # nothing --resume could continue
                raise VidkdError(
                    f"{run_dir} already holds a run that stopped before its first checkpoint; "
                    "pass --overwrite to start it over, or choose another name with --set name=NEW"
                )
            raise VidkdError(
                f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to start "
                "over, or choose another name with --set name=NEW"
            )
        (run_dir / MARKER).touch()
    distributed.barrier()

    # --resume: the newest checkpoint that verifies, and a config that may continue it
    checkpoint, weights, state = None, {}, {}
    if resume:
        checkpoint = latest_checkpoint(ckpt_dir)
        if checkpoint is None:
            again = "without --resume" if never_trained(run_dir) else "over with --overwrite"
            raise VidkdError(f"--resume: {ckpt_dir} has no checkpoint yet; start the run {again}")
        weights, state = load_checkpoint(checkpoint)
        stored = _stored_config(run_dir, state)
        if stored is None:
            if not force:
                raise VidkdError(
                    f"--resume: {run_dir} has no readable stored config to compare with; pass "
                    "--force to continue with this config"
                )
            changes: dict[str, list[Any]] = {}
        else:
            changes = resume_changes(
                stored, config_to_dict(cfg), force, defaults=config_to_dict(ExperimentConfig()),
                stored_cwd=state.get("cwd"),
            )
        if is_main:
            _history(run_dir, {"event": "resume", "checkpoint": checkpoint.name,
                               "changed": changes, "forced": force and bool(changes)})
            for key, (old, new) in changes.items():
                log.warning("--resume: %s changed from %r to %r (recorded in history.jsonl)", key, old, new)
    elif is_main:
        _history(run_dir, {"event": "overwrite" if overwrite else "start"})

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    _, memory_note = apply_reuse_host_memory(cfg.train.reuse_host_memory, device)
    if memory_note and is_main:
        log.info("%s", memory_note)
    if device.type == "cuda":  # clip shapes are fixed: let cuDNN pick its fastest 3D kernels
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.train.seed + dist_info.rank)

    if not is_main:  # rank 0 indexes (and, for the embedded dataset, generates) first
        distributed.barrier()
    splits = build_splits(cfg.data, seed=cfg.train.seed, progress=progress and is_main)
    if is_main:
        distributed.barrier()
    num_classes = len(splits.classes)
    method = build_method(cfg, num_classes).to(device)
    if cfg.model.sync_bn and dist_info.enabled:  # batch statistics over every process's clips
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last_3d)
    loaders = build_loaders(
        cfg, splits, method.num_views, dist_info, device.type == "cuda", progress and dist_info.is_main,
        shared_cache,
    )
    train_sampler: SkipSampler = loaders.train.sampler  # type: ignore[assignment]
    if loaders.train.drop_last and len(loaders.train) < cfg.train.accumulate_steps:
        raise VidkdError(
            f"train.accumulate_steps={cfg.train.accumulate_steps} is more than the "
            f"{len(loaders.train)} batches of an epoch ({len(splits.train)} training videos, "
            f"train.batch_size={cfg.train.batch_size}), so no step would be taken; lower "
            "train.accumulate_steps or train.batch_size"
        )
    augment = ClipAugment(augment_config(cfg, method),
                          compiled=compiled_on(device, cfg.train.compile))
    augment_rng = torch.Generator(device=device).manual_seed(cfg.train.seed * 7919 + dist_info.rank)

    trainable = [p for p in method.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = torch.optim.SGD(
        trainable, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
    )
    schedule = LRSchedule(o, cfg.train.epochs)  # plateau on val video top-1 by default
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    model: torch.nn.Module = method
    if dist_info.enabled:
        model = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.train.compile:  # the training step only: checkpoints and evaluation use `method`
        model = compile_module(model, device)

    start_epoch, best_val, best_epoch = 0, -1.0, -1
    failed_seen: dict[str, str] = {}  # path -> "<path>: <reason>", train + val + test
    in_epoch: dict[str, Any] | None = None  # progress inside an epoch, from a mid-epoch checkpoint
    if checkpoint is not None:
        try:
            method.load_state_dict(weights)
        except RuntimeError as error:
            raise VidkdError(
                f"--resume: {checkpoint} does not fit the network this config builds ("
                f"{str(error).splitlines()[-1].strip()[:200]}); resume with the run's own config.yaml"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        augment_rng.set_state(state["augment_rng"])
        start_epoch, best_val, best_epoch = state["epoch"] + 1, state["best_val"], state["best_epoch"]
        trained = start_epoch + bool(state.get("in_epoch"))  # epochs begun
        if trained > cfg.train.epochs:
            raise VidkdError(
                f"--resume: train.epochs={cfg.train.epochs} is below the {trained} epochs this "
                f"run has begun ({checkpoint.name}); pass train.epochs>={trained}, or start a new "
                "run with --set name=NEW"
            )
        failed_seen = {failure.split(": ", 1)[0]: failure for failure in state.get("failed", [])}
        method.load_training_state(state.get("method", {"refreshes": state.get("refreshes", 0)}))
        in_epoch = state.get("in_epoch")
        results = run_dir / "results.json"
        if is_main and start_epoch < cfg.train.epochs and results.is_file():
            # a finished run trained on: its results no longer describe the run until it ends
            os.replace(results, run_dir / "results.previous.json")
            log.info("moved the earlier results.json aside (results.previous.json): this run "
                     "trains on to epoch %d", cfg.train.epochs)
        log.info("resumed from %s (%s)", checkpoint,
                 f"batch {in_epoch['batches']} of epoch {start_epoch + 1} done" if in_epoch
                 else f"epoch {start_epoch} done")
    if is_main:
        dump_config(cfg, run_dir / "config.yaml")
    every, accumulate = cfg.train.checkpoint_every_steps, cfg.train.accumulate_steps
    # batches trained an epoch: a trailing group short of accumulate_steps is dropped too
    full_batches = len(loaders.train)
    if loaders.train.drop_last:
        full_batches -= full_batches % accumulate
    # batches trained before this start (the log's x axis), as the checkpoint counted them
    step = start_epoch * full_batches + (in_epoch["batches"] if in_epoch else 0)
    if checkpoint is not None:
        step = state.get("step", step)
    # the checkpoint was written after the records of its own step: those stay
    metrics = MetricsLog(run_dir, is_main, purge_step=step + 1 if checkpoint is not None else None)
    if checkpoint is not None:
        metrics.drop_after(start_epoch, step if in_epoch else None)
    description = {**model_description(cfg, splits.classes), **method.student_description()}
    if is_main:
        log.info(
            "%s: %s on %s, %d train / %d val / %d test videos, %d classes, device %s x%d",
            cfg.name, cfg.method.name, cfg.data.dataset, len(splits.train), len(splits.val),
            len(splits.test), num_classes, device, dist_info.world_size,
        )

    def write_checkpoint(epoch: int, progress_in_epoch: dict[str, Any] | None = None) -> None:
        """Everything an exact resume needs, after ``epoch`` finished epochs (and
        ``progress_in_epoch`` of the next one)."""
        save_checkpoint(
            ckpt_dir, epoch, method.state_dict(),
            {
                "epoch": epoch - 1, "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
                "rng": rng_state(), "augment_rng": augment_rng.get_state(),
                "best_val": best_val, "best_epoch": best_epoch,
                "failed": sorted(failed_seen.values()),
                "method": method.training_state(),
                "step": step,
                "config": config_to_dict(cfg),
                "cwd": os.getcwd(),  # the config's relative paths are read from here
                **({"in_epoch": progress_in_epoch} if progress_in_epoch else {}),
            },
            keep=cfg.train.keep_checkpoints,
            batches=progress_in_epoch["batches"] if progress_in_epoch else None,
        )

    epoch_times: list[float] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        schedule.start_epoch(optimizer, epoch)
        method.on_epoch_start(epoch)
        loaders.train.dataset.set_epoch(epoch)
        if isinstance(train_sampler.base, DistributedSampler):
            train_sampler.base.set_epoch(epoch)
        else:
            train_sampler.base.generator.manual_seed(cfg.train.seed * 100003 + epoch)
        loaders.train.generator.manual_seed(cfg.train.seed * 1000003 + epoch)  # worker seeds
        model.train()
        totals: dict[str, float] = {}
        batches, clips_seen, epoch_failed, elapsed_before = 0, 0, [], 0.0
        train_sampler.skip = 0
        if in_epoch is not None:  # resumed mid-epoch: skip what was trained, keep its tallies
            batches, clips_seen = in_epoch["batches"], in_epoch["clips"]
            totals, epoch_failed = dict(in_epoch["totals"]), list(in_epoch["failed"])
            elapsed_before = in_epoch["seconds"]
            train_sampler.skip = batches * loaders.train.batch_size
            in_epoch = None
        started = time.perf_counter()
        bar = tqdm(
            loaders.train, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not (progress and is_main),
            leave=False, mininterval=1, dynamic_ncols=True,
        )
        for batch in bar:
            if batches >= full_batches:
                break
            # gradients of `group` batches add up to one step; the last group may be shorter
            group_start = batches - batches % accumulate
            group = min(accumulate, full_batches - group_start)
            steps_now = batches + 1 == group_start + group
            epoch_failed.extend(batch["failed"])
            clips = batch["clips"]  # (N, V, T, H, W, C) uint8
            labels = batch["label"].to(device, non_blocking=True)
            inputs = to_model_input(clips.flatten(0, 1), device, cfg.train.channels_last)
            with torch.no_grad():
                inputs = augment(inputs, generator=augment_rng)
            no_sync = model.no_sync() if dist_info.enabled and not steps_now else contextlib.nullcontext()
            with no_sync:
                with (autocast(device, cfg.train.precision),
                      one_value_batch_norm_explained(cfg, labels.shape[0])):
                    losses = model(inputs, labels)
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise VidkdError(
                        f"loss became {loss.item()} at epoch {epoch + 1}; lower optim.lr "
                        "(e.g. --set optim.lr=0.001) or use train.precision=fp32"
                    )
                scaler.scale(loss / group).backward()
            if steps_now:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            batches += 1
            step += 1
            clips_seen += inputs.shape[0]
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
            seconds = elapsed_before + time.perf_counter() - started
            bar.set_postfix(loss=f"{totals['loss'] / batches:.3f}", clips_s=f"{clips_seen / seconds:.1f}")
            if is_main and step % cfg.train.log_every == 0:
                metrics.write(
                    {"kind": "step", "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                     **{k: float(v.detach()) for k, v in losses.items()}}, step, "step",
                )
            if every and step % every == 0 and steps_now and batches < full_batches:
                if is_main:
                    write_checkpoint(epoch, {
                        "batches": batches, "clips": clips_seen, "totals": dict(totals),
                        "failed": list(epoch_failed), "seconds": seconds,
                    })
                distributed.barrier()
        bar.close()
        epoch_seconds = elapsed_before + time.perf_counter() - started
        epoch_times.append(epoch_seconds)

        _note_failures(failed_seen, epoch_failed)

        record: dict[str, Any] = {
            "kind": "epoch", "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
            **{f"train_{k}": v / max(batches, 1) for k, v in totals.items()},
            "epoch_seconds": epoch_seconds, "clips_per_second": clips_seen / epoch_seconds,
            "failed_videos": len(failed_seen),
        }
        if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
            val = evaluate(
                method.student, loaders.val, num_classes, device, cfg.train.precision,
                cfg.train.channels_last,
            )
            _note_failures(failed_seen, val.failed)
            improved = val.video_top1 > best_val
            schedule.step(val.video_top1, epoch)
            method.on_validation(improved)
            if improved:
                best_val, best_epoch = val.video_top1, epoch + 1
                if is_main:
                    save_student(run_dir / "best_student.safetensors", method.student, description)
            record.update({"val_video_top1": val.video_top1, "val_clip_top1": val.clip_top1,
                           "best_val_video_top1": best_val})
        record["failed_videos"] = len(failed_seen)
        read = len(splits.train) + len(splits.val)
        if len(failed_seen) / read > cfg.data.max_failed_fraction:
            raise VidkdError(
                f"{len(failed_seen)} of {read} videos (train + validation) failed to decode "
                f"({len(failed_seen) / read:.1%} > data.max_failed_fraction="
                f"{cfg.data.max_failed_fraction}); run `vidkd check` on the dataset and pass its "
                "report as data.skip_list"
            )
        if is_main:
            metrics.write(record, step, "epoch")
            write_checkpoint(epoch + 1)
            tqdm.write(
                f"epoch {epoch + 1:3d}  loss {record.get('train_loss', math.nan):.4f}  "
                f"val video top-1 {record.get('val_video_top1', math.nan):6.2f}%  "
                f"lr {record['lr']:.2g}  {epoch_seconds:.1f}s  ({record['clips_per_second']:.1f} clips/s)"
                + (f"  skipped videos: {len(failed_seen)}" if failed_seen else "")
            )
        trim_host_memory()  # blocks freed by training and validation that nothing reused
        distributed.barrier()

    # ship the last student, then score the one eval.student names on the test split
    if is_main:
        save_student(run_dir / "student.safetensors", method.student, description)
    distributed.barrier()
    # the best-validation student (the paper's protocol), or the last: eval.student
    if cfg.eval.student == "best":
        tested = best_validation_student(run_dir, method.student, is_main)
    else:  # rank 0's: under DDP each process keeps the BatchNorm statistics of its own batches
        tested = copy.deepcopy(method.student)
        distributed.broadcast_module(tested)
    test = evaluate(
        tested, loaders.test, num_classes, device, cfg.train.precision,
        cfg.train.channels_last, progress=progress and is_main, description="test",
    )
    _note_failures(failed_seen, test.failed)
    if test.num_failed and is_main:
        splits.notes.append(f"{test.num_failed} of {len(splits.test)} test videos could not be "
                            "decoded and are not scored (failed_videos names them)")
        log.warning(splits.notes[-1])
    summary = summarize(
        cfg, splits, test, best_epoch, best_val, epoch_times, sorted(failed_seen.values()),
        augment.config, schedule, method.num_views, dist_info.world_size,
        tested_student_name(cfg.eval.student, run_dir),
    )
    if is_main:
        history = run_dir / "history.jsonl"
        summary["history"] = _read_history(history)
        atomic_write_text(run_dir / "results.json", json.dumps(summary, indent=2))
        metrics.write({"kind": "test", **test.as_dict()}, step, "test")
    metrics.close()
    return summary


def best_validation_student(run_dir: Path, student: torch.nn.Module, is_main: bool) -> torch.nn.Module:
    """A copy of ``student`` holding the best-validation weights that rank 0 saved.

    Rank 0 reads ``best_student.safetensors`` and sends its weights to every process, so that
    nodes which do not see rank 0's ``train.out_dir`` still score the same network; a run
    without that file (no validation improved) scores ``student`` as it is.
    """
    best = copy.deepcopy(student)
    path = run_dir / "best_student.safetensors"
    if is_main and path.is_file():
        saved, _ = load_student(path, next(student.parameters()).device)
        best.load_state_dict(saved.state_dict())
    distributed.broadcast_module(best)
    return best


def describe_model(m: ModelConfig) -> str:
    """The network in a results table: "3D ResNet-10 (width x0.25, 3x7x7 stem)"."""
    stem = ""
    if (m.conv1_t_size, m.conv1_t_stride) != (7, 1):  # Hara's stem is 7x7x7, stride (1, 2, 2)
        stem = f", {m.conv1_t_size}x7x7 stem" + (
            f" of temporal stride {m.conv1_t_stride}" if m.conv1_t_stride != 1 else ""
        )
    return f"3D ResNet-{m.depth} (width x{m.width_multiplier}{stem})"


def summarize(
    cfg: ExperimentConfig, splits: DataSplits, test: EvalResult, best_epoch: int, best_val: float,
    epoch_times: list[float], failed: list[str], augment: AugmentConfig, schedule: LRSchedule,
    num_views: int, world_size: int, tested_student: str,
) -> dict[str, Any]:
    """``results.json``; ``tested_student`` names the student file the test split scored."""
    videos = cfg.train.batch_size  # train.batch_size counts videos per device
    return {
        "name": cfg.name,
        "cwd": os.getcwd(),  # the config's relative paths are read from here
        "method": cfg.method.name,
        "augment": augment.describe(),
        "dataset": cfg.data.dataset,
        "model": describe_model(cfg.model),
        "epochs": cfg.train.epochs,
        "schedule": {"rule": schedule.describe(), "lr_drops_after_epochs": schedule.drops},
        "batch": {
            "videos_per_device_step": videos, "clips_per_device_step": videos * num_views,
            "devices": world_size, "videos_per_step": videos * world_size,
            "clips_per_step": videos * num_views * world_size,
        },
        "best_epoch": best_epoch,
        "best_val_video_top1": best_val,
        "tested_student": tested_student,
        "test": test.as_dict(),
        "paper_top1": cfg.paper.top1,
        "mean_epoch_seconds": float(np.mean(epoch_times)) if epoch_times else None,
        "failed_videos": failed,
        "notes": splits.notes,
        "config": config_to_dict(cfg),
    }


def evaluate_student(
    cfg: ExperimentConfig, checkpoint: Path, progress: bool = True
) -> tuple[EvalResult, dict[str, Any]]:
    """Score a shipped student on the test split of ``cfg.data`` (``vidkd eval``)."""
    device = distributed.resolve_device(cfg.train.device)
    _, memory_note = apply_reuse_host_memory(cfg.train.reuse_host_memory, device)
    if memory_note:
        log.info("%s", memory_note)
    student, description = load_student(checkpoint, device)
    splits = build_splits(cfg.data, seed=cfg.train.seed, progress=progress)
    if description["num_classes"] != len(splits.classes):
        raise VidkdError(
            f"{checkpoint} predicts {description['num_classes']} classes but the dataset has "
            f"{len(splits.classes)}; evaluate it with the config it was trained with"
        )
    if cfg.train.channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    d = cfg.data
    spec = ClipSpec(d.clip_len, d.frame_stride, d.short_side, d.crop_size)
    differs = [f"data.{key}={getattr(d, key)} (trained on {description[key]})"
               for key in ("clip_len", "frame_stride", "short_side", "crop_size")
               if key in description and int(description[key]) != getattr(d, key)]
    if differs:
        log.warning("%s was trained on other clips than this config reads: %s; the score is "
                    "for these clips, not the training protocol", checkpoint, ", ".join(differs))
    test_set = VideoClipDataset(splits.test, spec, "test", num_clips=cfg.eval.test_clips or d.test_clips)
    loader = DataLoader(
        test_set, cfg.eval.batch_size, shuffle=False, num_workers=d.num_workers, collate_fn=collate,
        worker_init_fn=_worker_init,
    )
    result = evaluate(
        student, loader, len(splits.classes), device, cfg.train.precision, cfg.train.channels_last,
        progress=progress, description="test",
    )
    return result, description

