"""The ``vidkd`` command: parse, load a config, call the engine.

    vidkd train --config configs/demo/skd_srl.yaml [--set optim.lr=0.05] [--resume]
    vidkd eval RUN_DIR | --config C --checkpoint runs/x/student.safetensors
    vidkd compare RUN_DIR [RUN_DIR ...]
    vidkd prepare SRC DST --short-side 128 [--workers N]
    vidkd check DATASET | --config C [--report vidkd-check.tsv] [--skip-list PATH]
    vidkd bench CONFIG [--steps N] [--json FILE] [--size S --frames T --batch B]

User errors (missing files, bad keys, empty datasets, unwritable outputs) print one line
naming the thing and the fix, and exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vidkd.errors import VidkdError

log = logging.getLogger("vidkd")


def _add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", "-c", required=required, help="experiment YAML under configs/")
    parser.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[],
        metavar="SECTION.KEY=VALUE",
        help="override config fields, e.g. --set optim.lr=0.05 train.epochs=30 (repeatable)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from vidkd.config import load_config
    from vidkd.engine.train import train

    cfg = load_config(args.config, args.overrides)
    summary = train(
        cfg, resume=args.resume, overwrite=args.overwrite, force=args.force, progress=not args.quiet
    )
    test = summary["test"]
    print(f"{summary['name']}: {summary['method']} on {summary['dataset']}, {summary['model']}")
    print(f"  video top-1 ({test['protocol']}): {test['video_top1']:.2f}%   "
          f"clip top-1: {test['clip_top1']:.2f}%   (best val epoch {summary['best_epoch']})")
    if summary["paper_top1"] is not None:
        print(f"  paper: {summary['paper_top1']:.1f}%")
    return 0


def _run_dir_config(run_dir: Path) -> Path:
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise VidkdError(f"{run_dir} has no config.yaml; pass a run directory written by `vidkd train`")
    return config


def cmd_eval(args: argparse.Namespace) -> int:
    from vidkd.config import load_config
    from vidkd.engine.train import evaluate_student

    if args.run_dir:
        run_dir = Path(args.run_dir)
        config_path = Path(args.config) if args.config else _run_dir_config(run_dir)
        checkpoint = Path(args.checkpoint) if args.checkpoint else run_dir / "best_student.safetensors"
        if not checkpoint.is_file():
            checkpoint = run_dir / "student.safetensors"
    else:
        if not args.config or not args.checkpoint:
            raise VidkdError("vidkd eval needs a RUN_DIR, or both --config and --checkpoint")
        config_path, checkpoint = Path(args.config), Path(args.checkpoint)
    cfg = load_config(config_path, args.overrides)
    result, description = evaluate_student(cfg, checkpoint, progress=not args.quiet)
    print(f"{checkpoint}: 3D ResNet-{description['depth']} ({description['method']}) on {cfg.data.dataset} test split")
    for line in result.lines():
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vidkd.report import compare_runs

    print(compare_runs([Path(p) for p in args.run_dirs]))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from vidkd.data.prepare import prepare_dataset

    report = prepare_dataset(
        Path(args.src), Path(args.dst), args.short_side, args.workers, progress=not args.quiet,
        codec=args.codec, crf=args.crf, gop=args.gop,
    )
    report_path = Path(args.report) if args.report else report.dst / "prepare-report.tsv"
    report.write(report_path)
    print(f"{report.dst}: {report.transcoded} videos transcoded, {report.skipped} already done, "
          f"{len(report.failed)} failed, {report.copied} annotation files copied "
          f"({report.frames} frames, {report.seconds:.1f}s)")
    for source, problem in report.failed.items():
        print(f"  failed: {source}: {problem}")
    if report.failed:
        print(f"  report: {report_path}")
    return 0 if report.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    from vidkd.data.check import check_config, check_directory

    if args.config:
        if args.dataset:
            raise VidkdError("vidkd check takes a DATASET folder or --config, not both")
        from vidkd.config import load_config

        cfg = load_config(args.config, args.overrides)
        report = check_config(cfg.data, args.workers, progress=not args.quiet)
    elif args.dataset:
        report = check_directory(Path(args.dataset), args.workers, progress=not args.quiet)
    else:
        raise VidkdError("vidkd check needs a DATASET folder or --config CONFIG")
    report.write(Path(args.report))
    if args.skip_list:
        report.write_skip_list(Path(args.skip_list))
    print(f"{report.source}: {report.checked} videos decoded ({report.frames} frames, "
          f"{report.seconds:.1f}s), {len(report.problems)} unreadable")
    for path, problem in report.problems.items():
        print(f"  {path}: {problem}")
    if not report.ok:
        print(f"  report: {args.report}; skip them in training with --set data.skip_list={args.report}")
    return 0 if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from vidkd.config import load_config
    from vidkd.engine.bench import format_report, run_bench

    if args.config_path and args.config:
        raise VidkdError("vidkd bench takes CONFIG or --config, not both")
    overrides = list(args.overrides)
    if args.size is not None:
        overrides += [f"data.crop_size={args.size}", f"data.short_side={args.size}"]
    if args.frames is not None:
        overrides.append(f"data.clip_len={args.frames}")
    if args.batch is not None:
        overrides.append(f"train.batch_size={args.batch}")
    cfg = load_config(args.config_path or args.config, overrides)
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    report = run_bench(cfg, steps=args.steps, warmup=args.warmup, precisions=precisions,
                       loader_batches=args.loader_batches, methods=methods)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"written: {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidkd",
        description="Self-knowledge distillation for compact video action-recognition networks.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one experiment config")
    _add_config_args(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="delete an earlier run of this name first")
    p.add_argument("--force", action="store_true",
                   help="with --resume: continue although optimiser, seed or loss settings changed "
                        "(recorded in the run's history.jsonl)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="clip- and video-level top-1/top-5 of a trained student")
    p.add_argument("run_dir", nargs="?", help="a run directory written by `vidkd train`")
    _add_config_args(p, required=False)
    p.add_argument("--checkpoint", help="a student .safetensors (default: RUN_DIR/best_student)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="table of finished runs side by side")
    p.add_argument("run_dirs", nargs="+", help="run directories holding results.json")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("prepare", help="transcode a dataset to small H.264 files for fast decoding")
    p.add_argument("src", help="the dataset's video root (class folders, any depth)")
    p.add_argument("dst", help="where the mirrored, transcoded tree goes (resumable)")
    p.add_argument("--short-side", type=int, default=128, help="shorter side in pixels (even)")
    p.add_argument("--workers", "-j", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--codec", default=None, help="encoder (default: libx264, else mpeg4)")
    p.add_argument("--crf", type=int, default=18, help="libx264 constant rate factor")
    p.add_argument("--gop", type=int, default=16, help="frames between key frames (seek cost)")
    p.add_argument("--report", help="TSV of failed sources (default: DST/prepare-report.tsv)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("check", help="decode every video; report the unreadable ones (exit 1)")
    p.add_argument("dataset", nargs="?", help="a folder of videos (any depth), or use --config")
    _add_config_args(p, required=False)
    p.add_argument("--report", default="vidkd-check.tsv",
                   help="TSV 'path<TAB>problem' of unreadable videos; doubles as data.skip_list "
                        "(default: %(default)s)")
    p.add_argument("--skip-list", help="also write the unreadable paths alone, one a line")
    p.add_argument("--workers", "-j", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="clips/s, cost vs baseline, fraction of matmul peak, loader "
                                     "rate and schedule time on this device")
    p.add_argument("config_path", nargs="?", metavar="CONFIG", help="experiment YAML")
    _add_config_args(p, required=False)
    p.add_argument("--steps", type=int, default=3, help="timed steps per method and precision")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated (default: %(default)s)")
    p.add_argument("--methods", help="comma-separated subset of methods (default: all that run)")
    p.add_argument("--size", type=int, help="crop size (and short side) instead of the config's")
    p.add_argument("--frames", type=int, help="clip length instead of the config's")
    p.add_argument("--batch", type=int, help="videos per step instead of the config's")
    p.add_argument("--loader-batches", type=int, default=2, help="batches decoded for the loader rate")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="vidkd: %(message)s", stream=sys.stderr,
    )
    try:
        return args.func(args)
    except VidkdError as error:
        print(f"vidkd: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidkd: interrupted; `vidkd train --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
