"""Step by step: time, minor page faults and resident memory of one method's training steps.

Shows what ``train.reuse_host_memory`` does over a stretch of training: the first steps
fault their tensors in while glibc's heap settles, later ones reuse the same pages. Every
``--epoch-steps`` steps it runs an evaluation pass of another shape and then trims the heap,
as the engine does after each epoch's validation.

    .venv/bin/python benchmarks/host_memory.py configs/ucf101/r18_skd_srl.yaml --batch 16
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from vidkd.config import load_config
from vidkd.engine import bench, hardware
from vidkd.methods import METHODS


def resident_mb() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--method", default="skd_srl",
                        choices=[name for name, cls in METHODS.items() if not cls.needs_teacher])
    parser.add_argument("--batch", type=int, default=16, help="videos per step")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--epoch-steps", type=int, default=6,
                        help="steps between evaluation pass + trim (an epoch's end)")
    parser.add_argument("--eval-clips", type=int, default=10, help="clips in the evaluation pass")
    parser.add_argument("--system-malloc", action="store_true",
                        help="let glibc return freed memory to the OS (train.reuse_host_memory=false)")
    args = parser.parse_args()
    device = torch.device("cpu")
    cfg = load_config(args.config, [f"train.batch_size={args.batch}", "train.device=cpu"])
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    reused, note = hardware.apply_reuse_host_memory(not args.system_malloc, device)
    runners, _ = bench._runners(cfg, device, 101, ["baseline", args.method])
    runner = next(r for r in runners if r.name == args.method)
    d = cfg.data
    print(f"{args.method}, {d.clip_len}x{d.crop_size}x{d.crop_size}, batch {args.batch} videos, fp32, "
          f"{torch.get_num_threads()} threads, "
          + ("freed host memory reused" if reused else f"system malloc{f' ({note})' if note else ''}"))
    evaluation_clips = torch.rand(args.eval_clips, 3, d.clip_len, d.crop_size, d.crop_size)
    for step in range(args.steps):
        faults, start = minor_faults(), time.perf_counter()
        runner.step(cfg, device, "fp32")
        line = (f"step {step:3d} {time.perf_counter() - start:6.2f} s {minor_faults() - faults:8d} "
                f"faults {resident_mb():6d} MB")
        if step % args.epoch_steps == args.epoch_steps - 1:
            student = runner.method.student
            student.eval()
            with torch.no_grad():
                student(evaluation_clips.contiguous(memory_format=torch.channels_last_3d))
            student.train()
            hardware.trim_host_memory()
            line += f"  | evaluation pass + trim: {resident_mb():6d} MB"
        print(line, flush=True)


if __name__ == "__main__":
    main()
