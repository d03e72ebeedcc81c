"""Training-step cost of each method relative to ``baseline``, measured in one run.

Every method trains on the same random clips with the same student; the script prints
videos per second and the ratio to baseline (SKD-SRL and the KD methods do more work per
video: two views, or a teacher forward).

    .venv/bin/python benchmarks/methods.py --depth 18 --width 0.25 --frames 8 --size 56
"""

from __future__ import annotations

import argparse
import time

import torch

from vidkd.data.augment import AugmentConfig, ClipAugment
from vidkd.methods import KD, SKDSRL, Baseline, BaselineDA, SelfKD
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
    args = parser.parse_args()
    torch.manual_seed(0)

    def student():
        return resnet3d(args.depth, args.classes, width_multiplier=args.width)

    teacher = resnet3d(args.teacher_depth, args.classes, width_multiplier=args.width)
    methods = {
        "baseline": Baseline(student()),
        "baseline_da": BaselineDA(student()),
        "kd": KD(student(), teacher, 10.0, 0.1, False),
        "self_kd": SelfKD(student(), 10.0, 0.1, False),
        "skd_srl": SKDSRL(student()),
    }
    augment = ClipAugment(AugmentConfig())
    results = {}
    for name, method in methods.items():
        method = method.to(memory_format=torch.channels_last_3d).train()
        optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
        clips = torch.rand(args.batch * method.num_views, 3, args.frames, args.size, args.size) * 2 - 1
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
        labels = torch.randint(0, args.classes, (args.batch,))
        times = []
        for step in range(args.steps + 1):
            start = time.perf_counter()
            inputs = augment(clips) if method.full_augment else clips
            loss = method(inputs, labels)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step:  # the first step warms up
                times.append(time.perf_counter() - start)
        times.sort()
        results[name] = args.batch / times[len(times) // 2]
    print(f"3D ResNet-{args.depth} x{args.width}, {args.frames}x{args.size}x{args.size} clips, "
          f"batch {args.batch} videos, median of {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'method':12s} {'videos/s':>9s} {'cost vs baseline':>17s}")
    for name, rate in results.items():
        print(f"{name:12s} {rate:9.1f} {results['baseline'] / rate:16.2f}x")


if __name__ == "__main__":
    main()
