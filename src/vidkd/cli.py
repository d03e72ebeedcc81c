"""The ``vidkd`` command: parse, load a config, call the engine.

    vidkd train --config configs/demo/skd_srl.yaml [--set optim.lr=0.05] [--resume]
    vidkd eval RUN_DIR | --config C --checkpoint runs/x/student.safetensors
    vidkd compare RUN_DIR [RUN_DIR ...]
    vidkd prepare SRC DST --short-side 128
    vidkd check DATASET

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
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=0.05 (repeatable)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from vidkd.config import load_config
    from vidkd.engine.train import train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidkd",
        description="Self-knowledge distillation for compact video action-recognition networks.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one experiment config")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
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
