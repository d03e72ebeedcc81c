"""``vidkd bench``: what one training step costs on this device, measured in one run.

With the config's model, clip size and batch, on the config's device:

- training clips/s of every method that runs without external files (methods that need a
  trained teacher are skipped), and each method's step cost relative to ``baseline`` and
  to ``baseline_da``; the steps of all methods are interleaved, so that other load on
  the machine slows every method alike;
- GFLOP/s achieved by each step (FLOPs of forward + backward counted once by
  ``torch.utils.flop_counter.FlopCounterMode``) as a fraction of this device's matmul
  peak, measured here with a large matmul (:func:`matmul_peak`), for fp32 and bf16
  (bf16 skipped, with the reason, where a bf16 step crashes); whether the CPU has
  native bf16 (AVX512-BF16 or AMX);
- loader clips/s per worker on the config's dataset (a few batches cut by the real
  ``VideoClipDataset`` in this process, from RAM under ``data.cache: memory`` as in
  training), the workers needed to keep the step fed, and what loading in the training
  process (``data.num_workers: 0``) would add to a step;
- the projected wall time of the config's whole schedule: epochs x training videos /
  measured videos per second (training steps only; validation and test come on top).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vidkd.config import ExperimentConfig
from vidkd.data.augment import ClipAugment, compiled_on
from vidkd.data.cache import MemoryCache
from vidkd.data.dataset import ClipSpec, VideoClipDataset
from vidkd.data.decode import open_clip_reader
from vidkd.data.transforms import to_model_input
from vidkd.engine import distributed, hardware
from vidkd.engine.evaluate import autocast
from vidkd.engine.train import (
    augment_config,
    build_student,
    describe_model,
    one_value_batch_norm_explained,
)
from vidkd.errors import VidkdError
from vidkd.methods import METHODS, Method

#: classes and training videos (before the validation slice) of the named datasets, for a
#: bench on a machine without the dataset: UCF101 / HMDB51 split 1, Kinetics-400 train
KNOWN_DATASETS = {"ucf101": (101, 9537), "hmdb51": (51, 3570), "kinetics400": (400, 234619)}
PRECISIONS = ("fp32", "bf16")


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of the best of repeated large square matmuls (2 n^3 FLOPs each).

    On a CPU, the faster of ``torch.mm`` (MKL BLAS for fp32, slow on some AMD CPUs) and
    oneDNN's matmul (the library the 3D convolutions run on). On a GPU, fp32 is timed in
    the convolutions' math mode (:func:`fp32_math`): TF32 by cuDNN's default.
    """
    with _matmul_math(device, dtype):
        return _matmul_peak(device, dtype, seconds)


def fp32_math(device: torch.device) -> str:
    """How this device's fp32 convolutions multiply: ``tf32`` on a GPU where cuDNN may use
    TF32 tensor cores (``torch.backends.cudnn.allow_tf32``, on by default), else ``fp32``."""
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


@contextlib.contextmanager
def _matmul_math(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """fp32 matmuls in the convolutions' math mode for the duration, so that a step's
    "fraction of peak" compares like with like (a TF32 step against a strict fp32 peak
    read 121% on an H200)."""
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = fp32_math(device) == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    candidates = [lambda: torch.mm(a, b)]
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
        a_dnn, b_dnn = a.to_mkldnn(), b.t().contiguous().to_mkldnn()  # linear takes (out, in)
        candidates.append(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None))
    best = math.inf
    for matmul in candidates:
        spent = 0.0
        for rep in range(50):
            _sync(device)
            start = time.perf_counter()
            matmul()
            _sync(device)
            took = time.perf_counter() - start
            spent += took
            if rep > 0:  # the first call warms up
                best = min(best, took)
            if rep > 0 and spent > seconds:
                break
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _num_classes_and_videos(cfg: ExperimentConfig) -> tuple[int, int | None, str]:
    d = cfg.data
    if d.dataset == "synthetic":
        s = d.synthetic
        return s.num_classes, s.num_classes * s.train_per_class, "the generated dataset's size"
    if d.dataset in KNOWN_DATASETS:
        classes, videos = KNOWN_DATASETS[d.dataset]
        return classes, videos, f"{d.dataset}'s published training-split size"
    return 100, None, "unknown"


@dataclasses.dataclass
class _Runner:
    """One method with its optimiser and a fixed batch of uint8 clips, stepped like the engine."""

    name: str
    method: Method
    step_module: torch.nn.Module  # ``method``, compiled under train.compile as in training
    optimizer: torch.optim.Optimizer
    augment: ClipAugment
    clips: torch.Tensor  # (N * V, T, H, W, C) uint8, as the loader gives
    labels: torch.Tensor
    generator: torch.Generator

    def step(self, cfg: ExperimentConfig, device: torch.device, precision: str) -> None:
        inputs = to_model_input(self.clips, device, cfg.train.channels_last)
        with torch.no_grad():
            inputs = self.augment(inputs, generator=self.generator)
        with autocast(device, precision):
            loss = self.step_module(inputs, self.labels)["loss"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def count_flops(self, cfg: ExperimentConfig, device: torch.device) -> int:
        """FLOPs of one fp32 forward + backward (the augmentation is not a matmul/conv)."""
        inputs = to_model_input(self.clips, device, cfg.train.channels_last)
        with FlopCounterMode(display=False) as counter:
            self.method(inputs, self.labels)["loss"].backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def _runners(cfg: ExperimentConfig, device: torch.device, num_classes: int,
             only: list[str] | None) -> tuple[list[_Runner], dict[str, str]]:
    d, t = cfg.data, cfg.train
    runners, skipped = [], {}
    for name, cls in METHODS.items():
        if only and name not in only:
            continue
        if cls.needs_teacher:
            skipped[name] = "needs a trained teacher (method.teacher.checkpoint)"
            continue
        torch.manual_seed(t.seed)
        method_cfg = dataclasses.replace(cfg.method, name=name)
        method = cls.from_config(build_student(cfg, num_classes), method_cfg, None).to(device)
        if t.channels_last:
            method = method.to(memory_format=torch.channels_last_3d)
        method.train()
        o = cfg.optim
        optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=o.lr,
                                    momentum=o.momentum, weight_decay=o.weight_decay)
        views = method.num_views
        shape = (t.batch_size * views, d.clip_len, d.crop_size, d.crop_size, 3)
        clips = torch.randint(0, 256, shape, dtype=torch.uint8)
        labels = torch.randint(0, num_classes, (t.batch_size,), device=device)
        augment = ClipAugment(augment_config(cfg, method), compiled=compiled_on(device, t.compile))
        generator = torch.Generator(device=device).manual_seed(t.seed)
        step_module = hardware.compile_module(method, device) if t.compile else method
        runners.append(_Runner(name, method, step_module, optimizer, augment, clips, labels,
                               generator))
    if not any(r.name == "baseline" for r in runners):
        raise VidkdError("vidkd bench needs the baseline method to compare against; "
                         "include it in --methods")
    return runners, skipped


def _loader_rate(cfg: ExperimentConfig, num_views: int, batches: int) -> dict[str, Any]:
    """Clips/s one loader worker delivers: the real dataset, one torch thread, this process."""
    from vidkd.data.build import build_splits

    d = cfg.data
    try:
        splits = build_splits(d, seed=cfg.train.seed, progress=False)
    except VidkdError as error:
        return {"skipped": True, "note": f"loader not measured: {error}"}
    if batches < 1:
        return {"skipped": True, "note": "loader not measured: --loader-batches 0",
                "train_videos": len(splits.train)}
    spec = ClipSpec(d.clip_len, d.frame_stride, d.short_side, d.crop_size)
    count = min(len(splits.train), batches * cfg.train.batch_size)
    order = np.random.default_rng(cfg.train.seed).permutation(len(splits.train))[:count]
    open_reader, source = open_clip_reader, "decoded from the files"
    if d.cache == "memory":  # as in training: the videos are decoded once, before the clock
        cache = MemoryCache(d.short_side, d.cache_budget_mb)
        paths = [str(splits.train[int(i)].path) for i in order]
        try:
            cache.fill(paths, progress=False)
        except VidkdError as error:  # over the budget: training would stop there too
            return {"skipped": True, "train_videos": len(splits.train),
                    "note": f"loader not measured: the {count} training videos it samples "
                            f"already overflow the cache, so the whole split would: {error}"}
        open_reader, source = cache.open, "cut from RAM (data.cache=memory)"
        missing = sum(path not in cache.videos for path in paths)  # undecodable: read from files
        if missing:
            source += (f"; {missing} of them failed to decode into it and "
                       + ("was read from its file" if missing == 1 else "were read from their files"))
    dataset = VideoClipDataset(splits.train, spec, "train", num_views, d.same_clip,
                               seed=cfg.train.seed, open_reader=open_reader)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        dataset[int(order[0])]  # opens the codec once
        start = time.perf_counter()
        clips = sum(dataset[int(i)]["clips"].shape[0] for i in order)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {"skipped": False, "clips_per_s_per_worker": clips / seconds, "clips_decoded": clips,
            "train_videos": len(splits.train),
            "note": f"{clips} clips from {count} training videos, {source}, 1 thread"}


def run_bench(
    cfg: ExperimentConfig, steps: int = 3, warmup: int = 3, precisions: tuple[str, ...] = PRECISIONS,
    loader_batches: int = 2, methods: list[str] | None = None,
) -> dict[str, Any]:
    """Measure everything above; returns the JSON-ready report."""
    device = distributed.resolve_device(cfg.train.device)
    if device.type == "cpu" and "fp16" in precisions:
        raise VidkdError("vidkd bench --precisions fp16: fp16 autocast is for GPUs; on a CPU pass "
                         "--precisions fp32,bf16")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    d, m, t = cfg.data, cfg.model, cfg.train
    num_classes, known_videos, videos_source = _num_classes_and_videos(cfg)
    notes: list[str] = []
    memory_reused, memory_note = hardware.apply_reuse_host_memory(t.reuse_host_memory, device)
    if memory_note:
        notes.append(memory_note)
    if device.type == "cpu" and "bf16" in precisions:
        problem = hardware.cpu_bf16_step_problem(m.depth, m.width_multiplier, d.clip_len,
                                                   d.crop_size, m.conv1_t_size, m.conv1_t_stride)
        if problem:
            precisions = tuple(p for p in precisions if p != "bf16")
            notes.append(f"bf16 not measured: {problem}")
    if not precisions:
        raise VidkdError("vidkd bench: no precision left to measure; pass --precisions fp32")
    runners, skipped = _runners(cfg, device, num_classes, methods)
    with one_value_batch_norm_explained(cfg, cfg.train.batch_size):
        flops = {r.name: r.count_flops(cfg, device) for r in runners}

    step_seconds: dict[str, dict[str, list[float]]] = {p: {r.name: [] for r in runners}
                                                         for p in precisions}
    for precision in precisions:
        for _ in range(warmup):
            for runner in runners:
                runner.step(cfg, device, precision)
        for _ in range(steps):  # interleaved: contention slows every method alike
            for runner in runners:
                _sync(device)
                start = time.perf_counter()
                runner.step(cfg, device, precision)
                _sync(device)
                step_seconds[precision][runner.name].append(time.perf_counter() - start)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    peak = {p: matmul_peak(device, dtypes[p]) for p in precisions}

    report_methods: dict[str, Any] = {}
    for runner in runners:
        entry: dict[str, Any] = {
            "num_views": runner.method.num_views,
            "augment": runner.augment.config.describe(),
            "gflop_per_step": flops[runner.name] / 1e9,
        }
        for precision in precisions:
            seconds = statistics.median(step_seconds[precision][runner.name])
            base = statistics.median(step_seconds[precision]["baseline"])
            da = step_seconds[precision].get("baseline_da")
            gflops = flops[runner.name] / seconds / 1e9
            entry[precision] = {
                "step_s": seconds,
                "clips_per_s": t.batch_size * runner.method.num_views / seconds,
                "videos_per_s": t.batch_size / seconds,
                "gflops": gflops,
                "fraction_of_peak": gflops / peak[precision],
                "cost_vs_baseline": seconds / base,
                "cost_vs_baseline_da": seconds / statistics.median(da) if da else None,
            }
        if "fp32" in precisions and "bf16" in precisions:
            entry["bf16_speedup"] = entry["fp32"]["step_s"] / entry["bf16"]["step_s"]
        report_methods[runner.name] = entry

    # loader: per-worker rate against the step's appetite (the config's method, or baseline)
    planned = cfg.method.name if cfg.method.name in report_methods else "baseline"
    fastest = max(precisions, key=lambda p: report_methods[planned][p]["clips_per_s"])
    loader = _loader_rate(cfg, report_methods[planned]["num_views"], loader_batches)
    appetite = report_methods[planned][fastest]["clips_per_s"]
    loader["step_clips_per_s"] = appetite
    loader["for"] = f"{planned}, {fastest}"
    if not loader["skipped"]:
        loader["workers_needed"] = math.ceil(appetite / loader["clips_per_s_per_worker"])
        # data.num_workers=0 loads in the training process: each step waits for its clips
        loader["in_process_step_cost"] = appetite / loader["clips_per_s_per_worker"]

    train_videos = loader.get("train_videos")
    if train_videos is not None:
        videos_source = "the dataset on disk"
    elif known_videos is not None:
        train_videos = round(known_videos * (1 - d.val_fraction))
        videos_source = f"{videos_source} minus the {d.val_fraction:.0%} validation slice"
    precision = t.precision if t.precision in precisions else precisions[0]
    projection: dict[str, Any] = {"method": planned, "precision": precision, "epochs": t.epochs,
                                  "train_videos": train_videos, "train_videos_source": videos_source}
    if train_videos is not None:
        seconds = t.epochs * train_videos / report_methods[planned][precision]["videos_per_s"]
        projection.update(seconds=seconds, hours=seconds / 3600,
                          note="training steps only, at the measured rate; validation, test and "
                               "a loader slower than the step come on top")

    native = hardware.cpu_native_bf16() if device.type == "cpu" else None
    return {
        "config": cfg.name, "device": _device_name(device), "threads": torch.get_num_threads(),
        "cpu_model": hardware.cpu_model(), "native_bf16": native,
        "native_bf16_note": _bf16_note(device, native),
        "model": describe_model(m),
        "clip": [d.clip_len, d.crop_size, d.crop_size], "batch_videos": t.batch_size,
        "steps": steps, "warmup": warmup, "compile": t.compile, "host_memory_reused": memory_reused,
        "precisions": list(precisions), "fp32_math": fp32_math(device),
        "peak_gflops": peak, "methods": report_methods, "skipped_methods": skipped,
        "loader": loader, "projection": projection, "torch": torch.__version__, "notes": notes,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({hardware.cpu_model()})"


def _bf16_note(device: torch.device, native: bool | None) -> str:
    if device.type != "cpu":
        return "GPU: bf16 runs on its tensor cores"
    if native:
        return "this CPU has native bf16 (AVX512-BF16 or AMX)"
    return ("this CPU has no AVX512-BF16 or AMX: bf16 is emulated and usually slower than fp32, "
            "so fp32 stays the default")


def _duration(seconds: float) -> str:
    """Hours, minutes or seconds: whichever shows the projection without rounding it to 0."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if round(seconds / 60, 1) < 60 else f"{seconds / 3600:.1f} h"


def _workers(count: int) -> str:
    return f"{count} worker keeps" if count == 1 else f"{count} workers keep"


def _math_label(report: dict[str, Any], precision: str) -> str:
    """``fp32 (as TF32)`` where the fp32 step and its peak run on TF32 tensor cores."""
    if precision == "fp32" and report.get("fp32_math") == "tf32":
        return "fp32 (as TF32, cuDNN's default)"
    return precision


def format_report(report: dict[str, Any]) -> str:
    """The table ``vidkd bench`` prints."""
    precisions = report["precisions"]
    lines = [
        f"{report['config']}: {report['model']}, {report['clip'][0]}x{report['clip'][1]}x"
        f"{report['clip'][2]} clips, batch {report['batch_videos']} videos, median of "
        f"{report['steps']} interleaved steps after {report.get('warmup', '?')} warm-up, "
        f"{report['device']}, {report['threads']} threads"
        + (", compiled" if report["compile"] else "")
        + (", freed host memory reused" if report.get("host_memory_reused") else ""),
        "matmul peak: " + ", ".join(f"{_math_label(report, p)} {report['peak_gflops'][p]:.1f} GFLOP/s"
                                    for p in precisions)
        + f"; {report['native_bf16_note']}",
    ]
    header = f"{'method':20s} {'GFLOP/step':>10s}"
    for p in precisions:
        header += f" | {p + ' clips/s':>13s} {'vs base':>7s} {'vs da':>6s} {'GFLOP/s':>8s} {'of peak':>7s}"
    lines.append(header)
    for name, entry in report["methods"].items():
        row = f"{name:20s} {entry['gflop_per_step']:10.1f}"
        for p in precisions:
            e = entry[p]
            da = f"{e['cost_vs_baseline_da']:5.2f}x" if e["cost_vs_baseline_da"] else f"{'-':>6s}"
            row += (f" | {e['clips_per_s']:13.2f} {e['cost_vs_baseline']:6.2f}x {da} "
                    f"{e['gflops']:8.1f} {e['fraction_of_peak']:6.1%}")
        lines.append(row)
    if "bf16_speedup" in next(iter(report["methods"].values())):
        lines.append("bf16 speed-up over fp32: " + ", ".join(
            f"{n} {e['bf16_speedup']:.2f}x" for n, e in report["methods"].items()))
    lines.extend(report["notes"])
    for name, reason in report["skipped_methods"].items():
        lines.append(f"skipped {name}: {reason}")
    loader = report["loader"]
    if loader["skipped"]:
        lines.append(f"loader: skipped ({loader['note']})")
    else:
        lines.append(f"loader: {loader['clips_per_s_per_worker']:.1f} clips/s per worker "
                     f"({loader['note']}); {_workers(loader['workers_needed'])} "
                     f"{loader['for']} fed ({loader['step_clips_per_s']:.1f} clips/s); "
                     f"loading in the training process instead (data.num_workers=0) adds "
                     f"{loader['in_process_step_cost']:.0%} to a step")
    proj = report["projection"]
    if "seconds" in proj:
        lines.append(f"projected schedule: {proj['epochs']} epochs x {proj['train_videos']} videos "
                     f"({proj['train_videos_source']}) with {proj['method']} {proj['precision']}: "
                     f"{_duration(proj['seconds'])} ({proj['note']})")
    else:
        lines.append("projected schedule: unknown (the number of training videos is not known)")
    return "\n".join(lines)
