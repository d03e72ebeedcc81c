"""The ``vidkd`` command: parse, load a config, call the engine.

    vidkd train --config configs/demo/skd_srl.yaml [--set optim.lr=0.05] [--resume]
    vidkd eval RUN_DIR | --config C --checkpoint runs/x/student.safetensors
    vidkd compare RUN_DIR [RUN_DIR ...] [--out DIR]
    vidkd compare CONFIG [CONFIG ...] --seeds 0,1,2 --out DIR [--teacher CKPT|YAML]
    vidkd predict CHECKPOINT VIDEO_OR_DIR [...] [--clips N] [--json FILE]
    vidkd export CHECKPOINT --format onnx|torchscript --out FILE [--video V]
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
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vidkd.errors import VidkdError
from vidkd.files import (
    absolute_paths,
    atomic_write_text,
    check_output,
    escape_path,
    json_written_by,
    text_starting_with,
)

log = logging.getLogger("vidkd")

# Keys that every --json report of a command had before reports named their writer
# (`written_by`): such a report may be replaced by the same command.
EVAL_KEYS = frozenset({"video_top1", "clip_top1", "protocol", "num_videos", "failed_videos"})
PREDICT_KEYS = frozenset({"checkpoint", "protocol", "clips", "classes", "videos", "failed"})
BENCH_KEYS = frozenset({"methods", "peak_gflops", "precisions", "projection", "loader", "device"})


#: what ``vidkd bench --precisions`` can time (the values of train.precision)
BENCH_PRECISIONS = ("fp32", "bf16", "fp16")


def _count(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least``, else one line naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}; pass {least} or more")
        return value

    return parse


def _tolerance(text: str) -> float:
    """An argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a tolerance; pass a number above 0, e.g. 1e-4")
    return value


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
    scored = ("the last student" if summary.get("tested_student") == "student.safetensors"
              else f"the student of epoch {summary['best_epoch']}, the best on validation")
    print(f"  video top-1 ({test['protocol']}): {test['video_top1']:.2f}%   "
          f"clip top-1: {test['clip_top1']:.2f}%   ({scored})")
    if test["failed_videos"]:
        print(f"  scored {test['num_videos']} test videos; {test['failed_videos']} could not be "
              "decoded (results.json: failed_videos)")
    if summary["paper_top1"] is not None:
        print(f"  paper: {summary['paper_top1']:.1f}%")
    return 0


def json_output(path: str | None, command: str, before: frozenset[str]) -> Path | None:
    """The checked ``--json`` path of ``vidkd COMMAND`` (None without ``--json``)."""
    if path is None:
        return None
    if not path.strip():
        raise VidkdError("--json '': pass a file name, or leave --json out")
    return check_output(path, "--json", json_written_by(f"vidkd {command}", before),
                        f"a `vidkd {command}` JSON report")


def write_json(path: Path, command: str, report: dict) -> None:
    """``report``, stamped ``written_by: vidkd COMMAND``, to a path from :func:`json_output`."""
    text = json.dumps({"written_by": f"vidkd {command}", **report}, indent=2)
    write_output(path, lambda target: atomic_write_text(target, text), "--json")


def write_output(path: Path, write: Callable[[Path], object], option: str) -> None:
    """Write an output whose path was checked before the work; a failure now (a full disk,
    a folder made read-only meanwhile) is one line, and the results printed above stand."""
    try:
        write(path)
    except OSError as error:
        raise VidkdError(f"{option} {path} could not be written ({error.strerror or error}); "
                         "the results are printed above") from None


def _run_dir_config(run_dir: Path) -> Path:
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise VidkdError(f"{run_dir} has no config.yaml; pass a run directory written by `vidkd train`")
    return config


def cmd_eval(args: argparse.Namespace) -> int:
    from vidkd.config import load_config
    from vidkd.engine.train import evaluate_student

    json_path = json_output(args.json, "eval", EVAL_KEYS)
    if args.run_dir:
        run_dir = Path(args.run_dir)
        config_path = Path(args.config) if args.config else _run_dir_config(run_dir)
        if args.checkpoint:  # as given: a typo must not score another file
            checkpoint = Path(args.checkpoint)
        else:  # the student the run's own test numbers are of (eval.student)
            from vidkd.engine.checkpoint import tested_student_file

            checkpoint = tested_student_file(run_dir)
    else:
        if not args.config or not args.checkpoint:
            raise VidkdError("vidkd eval needs a RUN_DIR, or both --config and --checkpoint")
        config_path, checkpoint = Path(args.config), Path(args.checkpoint)
    cfg = load_config(config_path, args.overrides)
    result, description = evaluate_student(cfg, checkpoint, progress=not args.quiet)
    print(f"{checkpoint}: 3D ResNet-{description['depth']} ({description['method']}) on {cfg.data.dataset} test split")
    for line in result.lines():
        print("  " + line)
    if json_path is not None:
        write_json(json_path, "eval", {"checkpoint": str(checkpoint), **result.as_dict()})
    return 0


def _is_config(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml") and not path.is_dir()


def cmd_compare(args: argparse.Namespace) -> int:
    from vidkd.engine import compare
    from vidkd.files import writable_dir
    from vidkd.report import compare_runs

    items = [Path(p) for p in args.items]
    configs = [p for p in items if _is_config(p)]
    if configs and len(configs) != len(items):
        raise VidkdError(
            "vidkd compare takes either config files (to train and compare) or run directories "
            f"(finished runs), not both; {configs[0]} is a config, "
            f"{next(p for p in items if not _is_config(p))} is not"
        )
    command = "vidkd " + " ".join(shlex.quote(a) for a in args.argv)
    if not configs:
        if args.seeds is not None or args.teacher:
            raise VidkdError("--seeds and --teacher go with config files; run directories are already trained")
        out = writable_dir(args.out, "--out") if args.out else None
        print(compare_runs(items))
        if out is not None:
            files = compare.write_report(out, compare.rows_of_run_dirs(items), command, not args.quiet)
            print(f"wrote {', '.join(str(f) for f in files)}")
        return 0
    if not args.out:
        raise VidkdError("vidkd compare CONFIG ... trains runs and needs --out DIR for them and the report")
    seeds = compare.parse_seeds("0" if args.seeds is None else args.seeds)  # "" is no seed
    plan = compare.plan_compare(configs, seeds, Path(args.out).expanduser(), args.overrides,
                                Path(args.teacher) if args.teacher else None)
    out = writable_dir(args.out, "--out")  # once the plan holds: a refused one creates nothing
    compare.run_plan(plan, progress=not args.quiet)
    files = compare.write_report(out, compare.collect(plan), command, not args.quiet)
    print((out / "results.md").read_text().split("\n## Schedule")[0].rstrip())
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from vidkd.engine.checkpoint import load_student
    from vidkd.engine.distributed import resolve_device
    from vidkd.engine.hardware import apply_reuse_host_memory
    from vidkd.engine.predict import check_clips, class_names, find_videos, predict_videos
    check_clips(args.clips)
    json_path = json_output(args.json, "predict", PREDICT_KEYS)
    device = resolve_device(args.device, option="--device")
    # as train.reuse_host_memory's default: each video's activations reuse the last one's pages
    _, memory_note = apply_reuse_host_memory(True, device)
    if memory_note:
        log.info("%s", memory_note)
    model, description = load_student(Path(args.checkpoint), device)
    classes = class_names(description, args.checkpoint)
    videos = find_videos([Path(v) for v in args.videos])
    protocol = f"{args.clips} clips x 1 centre crop, softmax averaged"
    print(f"{escape_path(args.checkpoint)}: {len(classes)} classes; {len(videos)} videos; "
          f"video level = {protocol}")
    records, failed = [], 0
    for prediction in predict_videos(model, description, videos, args.clips, device, args.checkpoint):
        shown = escape_path(str(prediction.path))  # one line, whatever the name holds
        if prediction.error is not None:
            failed += 1
            print(f"{shown}: unreadable: {escape_path(prediction.error)}")
            records.append({"path": _json_path(prediction.path), "ok": False,
                            "error": _json_path(prediction.error)})
            continue
        top = prediction.top(classes, args.top)
        print(shown)
        for rank, (_, name, probability) in enumerate(top, 1):
            print(f"  {rank}. {name:<24} {probability * 100:6.2f}%")
        records.append({
            "path": _json_path(prediction.path), "ok": True, "top": [
                {"class": name, "index": index, "probability": probability}
                for index, name, probability in top
            ],
        })
    print(f"{len(videos) - failed} predicted, {failed} unreadable")
    if json_path is not None:
        write_json(json_path, "predict", {
            "checkpoint": str(args.checkpoint), "protocol": protocol, "clips": args.clips,
            "classes": classes, "videos": records, "failed": failed,
        })
    return 1 if failed else 0


def _json_path(path: Path | str) -> str:
    """A path (or a message naming one) for a JSON report: as it is, unless it holds a name
    that is not UTF-8 (a strict JSON reader refuses the lone surrogates), then escaped as
    in `vidkd check` reports (``\\xNN``)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return escape_path(text)
    return text


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from vidkd.engine import export
    from vidkd.engine.checkpoint import load_student
    from vidkd.engine.predict import class_names, clip_spec
    if args.format == "onnx":
        export.require_onnx()
    kind = {"onnx": "an ONNX file", "torchscript": "a TorchScript file"}[args.format]
    out = check_output(args.out, "--out", lambda path: export.is_export(path, args.format),
                       f"{kind} written by `vidkd export`", special=False)
    if args.video and not Path(args.video).exists():
        raise VidkdError(f"--video {args.video} not found; pass a readable video file")
    student, description = load_student(Path(args.checkpoint))
    spec = clip_spec(description, args.checkpoint)
    class_names(description, args.checkpoint)  # stored in the export: checked first
    clip, what = export.decoded_clip(description, Path(args.video) if args.video else None)
    runtime = {"onnx": "ONNX Runtime", "torchscript": "TorchScript"}[args.format]
    eager = export.eager_runner(student)
    exported: list = []  # the runner of the file that passed

    def verify(written: Path) -> None:
        """Print the file and its parity with PyTorch; refuse it (before it replaces --out)
        when a difference passes the tolerance or is not finite."""
        runner = export.load_runner(written, args.format)
        stored = export.read_metadata(written, args.format)
        low, high = stored["input_range"]
        print(f"{escape_path(args.checkpoint)} -> {escape_path(str(out))} ({args.format}, "
              f"{written.stat().st_size / 2**20:.2f} MiB): input N x 3 x {spec.clip_len} x "
              f"{spec.crop_size} x {spec.crop_size} in [{low:g}, {high:g}] (dynamic N), "
              f"{len(stored['classes'])} classes; protocol stored in the file's metadata")
        checks = [("random input, batch 3", export.example_input(description, 3, seed=1)),
                  (f"{what}, batch 1", clip),
                  ("random input, batch 1", export.example_input(description, 1, seed=2))]
        print(f"parity of {runtime} with PyTorch eager (max |logit difference|, tolerance {args.atol:g}):")
        differences = []
        for label, clips in checks:
            difference = export.max_difference(eager, runner, clips)
            differences.append(difference)
            print(f"  {label}: {difference:.2e} {'ok' if difference <= args.atol else 'TOO LARGE'}")
        kept = f"{escape_path(str(out))} was not written" + (" (the earlier file is kept)"
                                                             if out.exists() else "")
        if not all(math.isfinite(d) for d in differences):
            raise export.ParityError(f"the logits are not finite (NaN or inf) in PyTorch or "
                                     f"{runtime}: the student's weights are damaged; {kept}")
        if max(differences) > args.atol:
            raise export.ParityError(f"{runtime} differs from PyTorch by {max(differences):.2e} > "
                                     f"{args.atol:g}; {kept}")
        exported.append((runner, max(differences)))

    try:
        export.export_student(student, description, args.format, out, verify)
    except export.ParityError as error:
        print(f"vidkd: error: {error}", file=sys.stderr)
        return 1
    runner, worst = exported[0]
    threads = torch.get_num_threads()
    print(f"latency per clip (ms; median of {args.repeats} calls after 2 warm-up; CPU, {threads} threads):")
    print(f"  {'':<16}{'batch 1':>10}{'batch 8':>10}")
    for label, timed in (("PyTorch eager", eager), (runtime, runner)):
        times = [export.latency_per_clip(timed, export.example_input(description, batch), args.repeats)
                 for batch in (1, 8)]
        print(f"  {label:<16}" + "".join(f"{t * 1000:>10.2f}" for t in times))
    print(f"{runtime} reproduces PyTorch's logits to {args.atol:g} (worst {worst:.2e})")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from vidkd.data.check import check_workers
    from vidkd.data.prepare import prepare_dataset

    check_workers(args.workers)
    report_path = check_output(args.report or Path(args.dst) / "prepare-report.tsv", "--report",
                               text_starting_with("# vidkd prepare "), "a `vidkd prepare` report")
    report = prepare_dataset(
        Path(args.src), Path(args.dst), args.short_side, args.workers, progress=not args.quiet,
        codec=args.codec, crf=args.crf, gop=args.gop,
    )
    write_output(report_path, report.write, "--report")
    print(f"{report.dst}: {report.transcoded} videos transcoded, {report.skipped} already done, "
          f"{len(report.failed)} failed, {report.copied} annotation files copied "
          f"({report.frames} frames, {report.seconds:.1f}s)")
    for source, problem in report.failed.items():
        print(f"  failed: {escape_path(source)}: {problem}")
    if report.failed:
        print(f"  report: {report_path}")
    return 0 if report.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    from vidkd.data.check import check_config, check_directory, check_workers

    check_workers(args.workers)
    report_path = check_output(args.report, "--report", text_starting_with("# vidkd check "),
                               "a `vidkd check` report")
    skip_path = None
    if args.skip_list:
        check_header = text_starting_with("# vidkd check ")  # a skip list has the report's header
        skip_path = check_output(args.skip_list, "--skip-list",
                                 lambda path: check_header(path) or absolute_paths(path),
                                 "a skip list written by `vidkd check`")
        if os.path.realpath(skip_path) == os.path.realpath(report_path):
            raise VidkdError(f"--skip-list {skip_path} is the --report file too: pass two paths "
                             "(the report is a skip list already)")
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
    write_output(report_path, report.write, "--report")
    if skip_path is not None:
        write_output(skip_path, report.write_skip_list, "--skip-list")
    print(f"{report.source}: {report.checked} videos decoded ({report.frames} frames, "
          f"{report.seconds:.1f}s), {len(report.problems)} unreadable")
    for path, problem in report.problems.items():
        print(f"  {escape_path(path)}: {problem}")
    if not report.ok:
        shown = os.path.abspath(report_path)
        print(f"  report: {shown}; skip them in training with --set data.skip_list={shown}")
    return 0 if report.ok else 1


def _names(text: str, option: str, known: tuple[str, ...]) -> list[str]:
    """A comma-separated list of ``known`` names, or one line naming what is not one."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        what = f"unknown {', '.join(unknown)}" if unknown else "names nothing"
        raise VidkdError(f"{option} {text!r}: {what}; pass some of {','.join(known)}")
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    from vidkd.config import load_config
    from vidkd.engine.bench import format_report, run_bench
    from vidkd.methods import METHODS

    if args.config_path and args.config:
        raise VidkdError("vidkd bench takes CONFIG or --config, not both")
    json_path = json_output(args.json, "bench", BENCH_KEYS)
    precisions = tuple(_names(args.precisions, "--precisions", BENCH_PRECISIONS))
    methods = _names(args.methods, "--methods", tuple(METHODS)) if args.methods is not None else None
    overrides = list(args.overrides)
    if args.size is not None:
        overrides += [f"data.crop_size={args.size}", f"data.short_side={args.size}"]
    if args.frames is not None:
        overrides.append(f"data.clip_len={args.frames}")
    if args.batch is not None:
        overrides.append(f"train.batch_size={args.batch}")
    cfg = load_config(args.config_path or args.config, overrides)
    report = run_bench(cfg, steps=args.steps, warmup=args.warmup, precisions=precisions,
                       loader_batches=args.loader_batches, methods=methods)
    print(format_report(report))
    if json_path is not None:
        write_json(json_path, "bench", report)
        print(f"written: {json_path}")
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
    p.add_argument("--checkpoint", help="a student .safetensors (default: the one the run tested, "
                   "RUN_DIR/best_student.safetensors unless eval.student=last)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="train configs over seeds and tabulate them, or tabulate finished runs")
    p.add_argument("items", nargs="+", metavar="CONFIG_OR_RUN_DIR",
                   help="experiment YAMLs (trained once per seed; the first is the baseline row), "
                        "or run directories holding results.json")
    p.add_argument("--seeds", help="with configs: seeds to train, e.g. 0,1,2 (default: 0)")
    p.add_argument("--out", help="where runs/, results.md, results.csv and the PNG plots go (needed with CONFIGs; optional with run directories)")
    p.add_argument("--teacher", help="with configs: a trained teacher (.safetensors) for the rows "
                                     "that need one, or a teacher config (.yaml) trained first")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="SECTION.KEY=VALUE", help="override fields of every config (and teacher)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="top-5 classes of videos with a trained student")
    p.add_argument("checkpoint", help="a student .safetensors written by `vidkd train`")
    p.add_argument("videos", nargs="+", metavar="VIDEO_OR_DIR",
                   help="video files, frame folders, or folders searched for them")
    p.add_argument("--clips", type=int, default=10,
                   help="clips per video, spread uniformly, softmax averaged (default: %(default)s)")
    p.add_argument("--top", type=_count(1), default=5, help="classes shown per video (default: %(default)s)")
    p.add_argument("--json", help="also write the predictions as JSON to this file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="the student alone as ONNX or TorchScript, checked and timed")
    p.add_argument("checkpoint", help="a student .safetensors written by `vidkd train`")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="the file to write (e.g. student.onnx, student.pt)")
    p.add_argument("--video", help="a video whose decoded clip is checked too (default: a generated one)")
    p.add_argument("--atol", type=_tolerance, default=1e-4, help="largest logit difference accepted")
    p.add_argument("--repeats", type=_count(1), default=10, help="timed calls per latency figure")
    p.set_defaults(func=cmd_export)

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
    p.add_argument("--steps", type=_count(1), default=3, help="timed steps per method and precision")
    p.add_argument("--warmup", type=_count(0), default=3,
                   help="untimed steps first, per method and precision; glibc's heap takes a few "
                        "steps to settle on a new clip shape (default: %(default)s)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated (default: %(default)s)")
    p.add_argument("--methods", help="comma-separated subset of methods (default: all that run)")
    p.add_argument("--size", type=_count(1), help="crop size (and short side) instead of the config's")
    p.add_argument("--frames", type=_count(1), help="clip length instead of the config's")
    p.add_argument("--batch", type=_count(1), help="videos per step instead of the config's")
    p.add_argument("--loader-batches", type=_count(0), default=2,
                   help="batches decoded for the loader rate (0: not measured)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_bench)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every temporary file is cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="vidkd: %(message)s", stream=sys.stderr,
    )
    handlers = {}
    if argv is None and threading.current_thread() is threading.main_thread():
        # the `vidkd` process itself (not a caller's): a kill, a closed terminal or a
        # scheduler's stop unwinds like Ctrl-C, so no half-written temporary stays behind
        for number in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(number) is signal.SIG_DFL:  # `nohup` ignores SIGHUP: keep that
                handlers[number] = signal.signal(number, _terminate)
    try:
        return _run(args)
    finally:
        for number, previous in handlers.items():
            signal.signal(number, previous)


def _run(args: argparse.Namespace) -> int:
    """The subcommand, with vidkd's errors, a closed pipe and interrupts as one line each."""
    try:
        return args.func(args)
    except VidkdError as error:
        print(f"vidkd: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vidkd check DIR | head`: the reader has gone; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 1
    except KeyboardInterrupt as error:
        again = {"compare": "; the same `vidkd compare` command continues where it stopped",
                 "train": "; `vidkd train --resume` continues from the last checkpoint"}
        print(f"vidkd: interrupted{again.get(args.command, '')}", file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
