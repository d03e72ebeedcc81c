"""Augmentation pass and ``torch.compile``: step-cost ratios measured in one run.

The variants alternate step by step (median of ``--steps``), and time is this process's CPU
time on ``--threads`` threads, so that other load on the machine weighs on every variant
alike. Variants of one ``baseline`` training step (3D ResNet-18):

- ``crop+flip``: no augmentation beyond the loader's (the ``baseline`` method);
- ``kornia``: the SPEC set, operator by operator (``ClipAugment.apply(reference=True)``);
- ``fused``: the SPEC set through the fused pass (the default);
- ``fused+compiled``: the fused pass through ``torch.compile``;
- ``compiled step``: crop+flip with the method compiled (``train.compile``).

    .venv/bin/python benchmarks/speed.py --width 0.25 --frames 8 --size 56 --batch 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidkd.data.augment import ClipAugment
from vidkd.engine import hardware
from vidkd.methods import Baseline
from vidkd.models.resnet3d import resnet3d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--system-malloc", action="store_true",
                        help="let glibc return freed memory to the OS (train.reuse_host_memory=false)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reused, _ = hardware.apply_reuse_host_memory(not args.system_malloc, torch.device("cpu"))
    torch.manual_seed(0)
    shape = (args.batch, 3, args.frames, args.size, args.size)
    clips = (torch.rand(shape) * 2 - 1).contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, 12, (args.batch,))
    eager = Baseline(resnet3d(18, 12, width_multiplier=args.width))
    eager = eager.to(memory_format=torch.channels_last_3d).train()
    compiled = torch.compile(eager)
    optimizer = torch.optim.SGD(eager.parameters(), lr=0.01)
    augment, augment_compiled = ClipAugment(), ClipAugment(compiled=True)
    generator = torch.Generator().manual_seed(0)

    def step(model: torch.nn.Module, aug: ClipAugment | None, reference: bool = False) -> None:
        inputs = clips
        if aug is not None:
            with torch.no_grad():
                params = aug.sample_params(args.batch, "cpu", generator)
                inputs = aug.apply(clips, params, reference=reference)
        loss = model(inputs, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    variants = {
        "crop+flip": lambda: step(eager, None),
        "kornia": lambda: step(eager, augment, reference=True),
        "fused": lambda: step(eager, augment),
        "fused+compiled": lambda: step(eager, augment_compiled),
        "compiled step": lambda: step(compiled, None),
    }
    start = time.perf_counter()
    for run in variants.values():  # warm-up, and the compilations
        run()
    print(f"warm-up and compilation: {time.perf_counter() - start:.0f}s")
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, run in variants.items():
            cpu = time.process_time()
            run()
            seconds[name].append(time.process_time() - cpu)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"3D ResNet-18 x{args.width}, {args.frames}x{args.size}x{args.size}, batch {args.batch}, "
          f"{args.threads} thread(s), median CPU s of {args.steps} interleaved steps, "
          + ("freed host memory reused" if reused else "system malloc"))
    print(f"{'variant':16s} {'step s':>8s} {'vs crop+flip':>13s}")
    for name, value in median.items():
        print(f"{name:16s} {value:8.3f} {value / median['crop+flip']:12.3f}x")


if __name__ == "__main__":
    main()
