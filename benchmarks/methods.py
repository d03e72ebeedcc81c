"""Training-step cost of each method relative to ``baseline``, measured in one run.

Every method trains on the same random clips with the same student; the script prints
videos per second and the ratio to baseline (SKD-SRL and the KD methods do more work per
video: two views, or a teacher forward; FRSKD a self-teacher over the four stage outputs;
generative_kd_teacher adds the attention module and CVAE, generative_kd the teacher forward,
two CVAEs and a 1x1x1 adapter to the teacher's width).

    .venv/bin/python benchmarks/methods.py --depth 18 --width 0.25 --frames 8 --size 56
    python benchmarks/methods.py --device cuda --precision bf16 --width 1 --frames 16 --size 112
"""

from __future__ import annotations

import argparse
import time

import torch

from vidkd.data.augment import AugmentConfig, ClipAugment, compiled_on
from vidkd.engine import hardware
from vidkd.engine.evaluate import autocast
from vidkd.methods import (
    FRSKD,
    KD,
    SKDSRL,
    Baseline,
    BaselineDA,
    GenerativeKD,
    GenerativeKDTeacher,
    SelfKD,
)
from vidkd.models.resnet3d import resnet3d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--teacher-depth", type=int, default=34)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--batch", type=int, default=16, help="videos per step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--system-malloc", action="store_true",
                        help="let glibc return freed memory to the OS (train.reuse_host_memory=false)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    reused, _ = hardware.apply_reuse_host_memory(not args.system_malloc, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def student():
        return resnet3d(args.depth, args.classes, width_multiplier=args.width)

    teacher = resnet3d(args.teacher_depth, args.classes, width_multiplier=args.width)
    phase_one_teacher = GenerativeKDTeacher(
        resnet3d(args.teacher_depth, args.classes, width_multiplier=args.width)
    ).student
    methods = {
        "baseline": Baseline(student()),
        "baseline_da": BaselineDA(student()),
        "kd": KD(student(), teacher, 10.0, 0.1, False),
        "self_kd": SelfKD(student(), 10.0, 0.1, False),
        "skd_srl": SKDSRL(student()),
        "frskd": FRSKD(student(), tau=4.0, alpha=2.0),
        "generative_kd_teacher": GenerativeKDTeacher(student()),
        "generative_kd": GenerativeKD(student(), phase_one_teacher),
    }
    augment = ClipAugment(AugmentConfig(), compiled=compiled_on(device, False))  # as training
    runs = {}
    for name, method in methods.items():
        method = method.to(device, memory_format=torch.channels_last_3d).train()
        optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
        shape = (args.batch * method.num_views, 3, args.frames, args.size, args.size)
        clips = torch.rand(shape, device=device) * 2 - 1
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
        labels = torch.randint(0, args.classes, (args.batch,), device=device)
        runs[name] = (method, optimizer, clips, labels)

    def step(name: str) -> float:
        method, optimizer, clips, labels = runs[name]
        sync()
        start = time.perf_counter()
        inputs = augment(clips) if method.full_augment else clips
        with autocast(device, args.precision):
            loss = method(inputs, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - start

    for name in runs:  # the first steps warm up (cuDNN autotuning, allocator)
        step(name)
        step(name)
    # round robin: a slow spell on a shared machine hits every method alike
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.steps):
        for name in runs:
            times[name].append(step(name))
    results = {name: args.batch / sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads, "
             + ("freed host memory reused" if reused else "system malloc"))
    print(f"3D ResNet-{args.depth} x{args.width}, {args.frames}x{args.size}x{args.size} clips, "
          f"batch {args.batch} videos, median of {args.steps} round-robin steps, {args.precision}, {where}")
    print(f"teacher: 3D ResNet-{args.teacher_depth} x{args.width} (kd; generative_kd's phase-1 "
          "network); generative_kd_teacher: the student's network with attention and CVAE")
    print(f"{'method':22s} {'videos/s':>9s} {'cost vs baseline':>17s}")
    for name, rate in results.items():
        print(f"{name:22s} {rate:9.1f} {results['baseline'] / rate:16.2f}x")


if __name__ == "__main__":
    main()
