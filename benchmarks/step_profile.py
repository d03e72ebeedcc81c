"""Where one fp32 training step goes on a CPU: convolutions against everything else.

``vidkd bench`` reports a step's GFLOP/s as a fraction of the measured matmul peak. Nearly
all of a 3D ResNet's FLOPs are convolutions, so that fraction is bounded by two numbers this
script measures in one run with ``torch.profiler`` (self time per operator):

- the share of the step spent in convolution kernels (forward and backward);
- the GFLOP/s those kernels reach if they do all the FLOPs (the convolutions' own fraction
  of peak).

The rest (ReLU and BatchNorm forward and backward, weight-gradient reorders, the input's
conversion, the optimiser) does no counted FLOPs but takes time.

    .venv/bin/python benchmarks/step_profile.py configs/ucf101/r18_skd_srl.yaml --batch 32
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from vidkd.config import load_config
from vidkd.engine import bench, hardware
from vidkd.methods import METHODS

#: the convolution kernels' operators (forward and backward) in a CPU profile
CONV_OPS = {"aten::mkldnn_convolution", "aten::convolution_backward",
            "aten::slow_conv3d_forward", "aten::slow_conv3d_backward"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--method", default="baseline",
                        choices=[name for name, cls in METHODS.items() if not cls.needs_teacher])
    parser.add_argument("--batch", type=int, default=None,
                        help="videos per step (default: config's)")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed steps before the profiled one; the best is reported")
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    parser.add_argument("--system-malloc", action="store_true",
                        help="let glibc return freed memory to the OS (train.reuse_host_memory=false)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    overrides = ["train.device=cpu"] + ([f"train.batch_size={args.batch}"] if args.batch else [])
    cfg = load_config(args.config, overrides)
    device = torch.device("cpu")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    reused, _ = hardware.apply_reuse_host_memory(not args.system_malloc, device)
    runners, _ = bench._runners(cfg, device, 101, ["baseline", args.method])
    runner = next(r for r in runners if r.name == args.method)
    flops = runner.count_flops(cfg, device)
    runner.step(cfg, device, "fp32")  # warm-up
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        runner.step(cfg, device, "fp32")
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.step(cfg, device, "fp32")
    peak = bench.matmul_peak(device, torch.float32)

    step = min(times)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS) / 1e6
    d = cfg.data
    print(f"{args.method}, 3D ResNet-{cfg.model.depth} x{cfg.model.width_multiplier}, "
          f"{d.clip_len}x{d.crop_size}x{d.crop_size}, batch {cfg.train.batch_size} videos, fp32, "
          f"{torch.get_num_threads()} threads, "
          + ("freed host memory reused" if reused else "system malloc")
          + f"; matmul peak {peak:.1f} GFLOP/s")
    print(f"step (best of {args.steps}) {step:.3f} s: {flops / step / 1e9:.1f} GFLOP/s = "
          f"{flops / step / 1e9 / peak:.1%} of peak")
    print(f"profiled step: {total:.3f} s of operator self time, of which convolutions "
          f"{conv:.3f} s ({conv / total:.1%})")
    print(f"convolutions alone: {flops / conv / 1e9:.1f} GFLOP/s = {flops / conv / 1e9 / peak:.1%} "
          "of peak (all counted FLOPs are theirs)")
    print(f"{'operator':50s} {'self s':>8s} {'share':>7s} {'calls':>6s}")
    for e in sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:args.top]:
        print(f"{e.key[:50]:50s} {e.self_cpu_time_total / 1e6:8.3f} "
              f"{e.self_cpu_time_total / 1e6 / total:7.1%} {e.count:6d}")


if __name__ == "__main__":
    main()
