"""Why a two-view method costs more than twice a one-view one: batch size or method?

SPEC puts both views of ``skd_srl`` through the encoder as one batch of 2n clips. This
times, in one process with the steps alternating (median of ``--steps``), three training
steps of the config's network and clip shape, augmentation included as in ``vidkd bench``:

- ``skd_srl`` on n videos (2n clips);
- ``baseline_da`` on 2n videos (the same 2n clips: the cost of the method at equal batch);
- ``baseline_da`` on n videos (n clips: the reference ``vidkd bench`` compares against).

    .venv/bin/python benchmarks/two_views.py configs/ucf101/r18_skd_srl.yaml --videos 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidkd.config import load_config
from vidkd.engine import bench, hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--videos", type=int, default=32, help="n, videos per skd_srl step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed rounds first: glibc's heap settles within a few steps")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--system-malloc", action="store_true",
                        help="let glibc return freed memory to the OS (train.reuse_host_memory=false)")
    args = parser.parse_args()
    device = torch.device("cpu")
    reused, _ = hardware.apply_reuse_host_memory(not args.system_malloc, device)
    n = args.videos

    def runner(method: str, videos: int):
        cfg = load_config(args.config, [f"train.batch_size={videos}", "train.device=cpu"])
        runners, _ = bench._runners(cfg, device, 101, ["baseline", method])
        return cfg, next(r for r in runners if r.name == method)

    variants = {
        f"skd_srl n={n} ({2 * n} clips)": (runner("skd_srl", n), 2 * n),
        f"baseline_da n={2 * n} ({2 * n} clips)": (runner("baseline_da", 2 * n), 2 * n),
        f"baseline_da n={n} ({n} clips)": (runner("baseline_da", n), n),
    }
    for _ in range(args.warmup):
        for (cfg, r), _ in variants.values():
            r.step(cfg, device, args.precision)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, ((cfg, r), _) in variants.items():
            start = time.perf_counter()
            r.step(cfg, device, args.precision)
            seconds[name].append(time.perf_counter() - start)
    step = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.config}, {args.precision}, {torch.get_num_threads()} threads, median of "
          f"{args.steps} alternating steps, " + ("freed host memory reused" if reused else "system malloc"))
    for name, (_, clips) in variants.items():
        print(f"{name:30s} step {step[name]:7.2f} s  {clips / step[name]:7.2f} clips/s")
    skd, da_2n, da_n = step.values()
    print(f"skd_srl per video / baseline_da per video: {skd / da_n:.2f}x = 2 views x "
          f"{da_2n / (2 * da_n):.2f} (batch of 2n clips) x {skd / da_2n:.2f} (method at equal batch)")


if __name__ == "__main__":
    main()
