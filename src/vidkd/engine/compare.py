"""Train every experiment row once per seed, then tabulate and plot them (``vidkd compare``).

Runs live under ``OUT/runs/<config name>-s<seed>``. A finished run (``results.json``) is
reused, a run with checkpoints is resumed, a run killed before its first checkpoint is
started over; so an interrupted compare continues where it stopped when run again. A row
whose teacher checkpoint does not exist yet has its teacher trained first, once, under
``OUT/runs/<teacher name>``: from ``--teacher TEACHER.yaml``, or from the teacher config
that the row's leading comment names ("train configs/demo/teacher.yaml first").
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidkd.config import MAX_SEED, ExperimentConfig, config_to_dict, load_config, show
from vidkd.engine.checkpoint import (
    BEST_STUDENT,
    LAST_STUDENT,
    latest_checkpoint,
    tested_student_file,
)
from vidkd.engine.rundir import (
    FREE,
    _matches,
    config_differences,
    holds_files,
    is_vidkd_run,
    moved_defaults,
    resolve_run_dir,
)
from vidkd.errors import VidkdError
from vidkd.files import atomic_write_text, read_json_lines
from vidkd.methods import METHODS
from vidkd.report import RowResults, markdown_report, read_results, results_csv

log = logging.getLogger("vidkd")

TrainFn = Callable[..., dict[str, Any]]


@dataclass
class PlannedRun:
    """One training run of the compare: a row's seed, or a teacher."""

    label: str  # the row (config name), or the teacher's name
    seed: int
    cfg: ExperimentConfig
    run_dir: Path
    is_teacher: bool = False

    @property
    def finished(self) -> bool:
        return (self.run_dir / "results.json").is_file()


@dataclass
class Row:
    """One experiment row: a config trained once per seed."""

    label: str
    config: Path
    runs: list[PlannedRun] = field(default_factory=list)


@dataclass
class Plan:
    out_dir: Path
    teachers: list[PlannedRun]
    rows: list[Row]

    @property
    def runs(self) -> list[PlannedRun]:
        return self.teachers + [run for row in self.rows for run in row.runs]


#: seeds one `vidkd compare` trains per config: each is a whole training run
MAX_SEEDS = 100


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` (or ``"0-2"``) -> ``[0, 1, 2]``."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            low, high = int(first), int(last or first)
            if not 0 <= low <= MAX_SEED or not 0 <= high <= MAX_SEED:
                raise VidkdError(f"--seeds {show(text)}: each seed must be between 0 and {MAX_SEED}")
            if high < low:
                raise VidkdError(f"--seeds {show(text)}: the range {part} runs backwards; write "
                                 f"{high}-{low}")
            if len(seeds) + high - low + 1 > MAX_SEEDS:  # checked before the range is built
                raise VidkdError(f"--seeds {show(text)}: at most {MAX_SEEDS} seeds, e.g. --seeds 0-4")
            seeds += range(low, high + 1)
    except ValueError:
        raise VidkdError(f"--seeds {show(text)}: expected integers separated by commas, e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise VidkdError(f"--seeds {show(text)}: give at least one seed, each once, e.g. --seeds 0,1,2")
    return seeds


_TRAIN_FIRST = re.compile(
    r"train\s+`?([\w./-]+?)`?\s+first|teacher:\s*`?([\w./-]+\.ya?ml)`?", re.IGNORECASE
)


def teacher_config_named(config: Path) -> Path | None:
    """The teacher config that ``config``'s leading comment names ("train X first" or
    "Teacher: X.yaml"), if it exists.

    ``X`` may be a path (``configs/demo/teacher.yaml``), a file name next to the config
    (``teacher_r34.yaml``) or a bare name (``r50_baseline``).
    """
    comment = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# "))
    for match in _TRAIN_FIRST.finditer(" ".join(comment)):
        token = (match.group(1) or match.group(2)).rstrip(".")
        names = [token] if token.endswith((".yaml", ".yml")) else [token + ".yaml", token]
        for name in names:
            for candidate in (Path(name), config.parent / name, config.parent / Path(name).name):
                if candidate.is_file():
                    return candidate
    return None


def _needs_teacher(cfg: ExperimentConfig) -> bool:
    method = METHODS.get(cfg.method.name)
    return bool(method is not None and method.needs_teacher)


def plan_compare(
    configs: list[Path], seeds: list[int], out_dir: Path, overrides: list[str] | None = None,
    teacher: Path | None = None,
) -> Plan:
    """Every run the compare needs, teachers first; nothing is trained or written."""
    overrides = list(overrides or [])
    runs_dir = out_dir / "runs"
    for option in ("name", "train.seed", "train.out_dir"):
        if any(item.split("=", 1)[0].strip() == option for item in overrides):
            raise VidkdError(f"--set {option}=... is chosen by vidkd compare itself; remove it")
    teachers: dict[Path, PlannedRun] = {}
    teacher_checkpoint: Path | None = None
    if teacher is not None:
        if not teacher.is_file():
            raise VidkdError(f"--teacher {teacher} not found; pass a student .safetensors or a teacher config YAML")
        if teacher.suffix not in (".yaml", ".yml"):
            teacher_checkpoint = teacher

    def teacher_run(teacher_config: Path) -> PlannedRun:
        key = teacher_config.resolve()
        if key not in teachers:
            cfg = load_config(teacher_config, [*overrides, f"train.out_dir={runs_dir}"])
            if _needs_teacher(cfg):
                raise VidkdError(
                    f"teacher config {teacher_config} needs a teacher itself; train it first and pass "
                    "its checkpoint with --teacher CKPT"
                )
            teachers[key] = PlannedRun(cfg.name, cfg.train.seed, cfg, resolve_run_dir(runs_dir, cfg.name), True)
        return teachers[key]

    rows: list[Row] = []
    for config in configs:
        base = load_config(config, overrides)
        if any(row.label == base.name for row in rows):
            raise VidkdError(
                f"{config}: its name '{base.name}' is already the name of another row; give each "
                "config its own name"
            )
        extra: list[str] = []
        if _needs_teacher(base):
            named = Path(base.method.teacher.checkpoint).expanduser() if base.method.teacher.checkpoint else None
            if teacher_checkpoint is not None:
                extra = [f"method.teacher.checkpoint={teacher_checkpoint}"]
            elif teacher is not None:
                run = teacher_run(teacher)
                extra = [f"method.teacher.checkpoint={_teacher_student(run)}"]
            elif named is None or not named.is_file():
                teacher_config = teacher_config_named(config)
                if teacher_config is None:
                    raise VidkdError(
                        f"{config}: teacher checkpoint {named} does not exist and the config's first "
                        "comment names no teacher config ('train TEACHER.yaml first'); pass "
                        "--teacher CKPT (a trained student) or --teacher TEACHER.yaml (trained first)"
                    )
                run = teacher_run(teacher_config)
                extra = [f"method.teacher.checkpoint={_teacher_student(run)}"]
        row = Row(base.name, config)
        for seed in seeds:
            name = f"{base.name}-s{seed}"
            cfg = load_config(config, [*overrides, *extra, f"train.seed={seed}", f"name={name}",
                                       f"train.out_dir={runs_dir}"])
            row.runs.append(PlannedRun(base.name, seed, cfg, resolve_run_dir(runs_dir, name)))
        rows.append(row)
    teacher_names = {run.cfg.name for run in teachers.values()}
    clash = teacher_names & {run.cfg.name for row in rows for run in row.runs}
    if clash:
        raise VidkdError(f"run name {sorted(clash)[0]} is both a teacher and a row; rename one config")
    return Plan(out_dir, list(teachers.values()), rows)


def _teacher_student(run: PlannedRun) -> Path:
    """The student file a planned teacher run will test (``eval.student``), which its
    students learn from."""
    return run.run_dir / (BEST_STUDENT if run.cfg.eval.student == "best" else LAST_STUDENT)


def _settings_changed(stored: dict[str, Any], wanted: dict[str, Any],
                      stored_cwd: str | None = None) -> list[str]:
    """Fields (outside bookkeeping; the epoch budget counts) where a finished run differs from
    the config asked for. A field the stored config lacks (a run from an older vidkd) is no
    change when the config asks for its default."""
    return _described(_blocking(stored, wanted, stored_cwd), stored, wanted)


def _blocking(stored: dict[str, Any], wanted: dict[str, Any],
              stored_cwd: str | None) -> dict[str, list[Any]]:
    """The config differences that keep a finished run from being reused."""
    changed = config_differences(stored, wanted, config_to_dict(ExperimentConfig()), stored_cwd)
    return {key: pair for key, pair in changed.items()
            if key == "train.epochs" or not _matches(key, FREE)}


def _described(blocking: dict[str, list[Any]], stored: dict[str, Any],
               wanted: dict[str, Any]) -> list[str]:
    found = [f"{key}: {was!r} -> {now!r}" for key, (was, now) in blocking.items()]
    clips = _test_clips(stored), _test_clips(wanted)  # free on --resume, not in a results table
    if clips[0] != clips[1]:
        found.append(f"test clips: {clips[0]} -> {clips[1]}")
    students = [config.get("eval", {}).get("student", "best") for config in (stored, wanted)]
    if students[0] != students[1]:  # free on --resume, but the table reports the tested one
        found.append(f"eval.student: {students[0]!r} -> {students[1]!r}")
    return found


def _test_clips(config: dict[str, Any]) -> int:
    """Clips a video was scored with: ``eval.test_clips``, else ``data.test_clips``."""
    defaults = ExperimentConfig()
    chosen = config.get("eval", {}).get("test_clips")
    return chosen if chosen is not None else config.get("data", {}).get("test_clips", defaults.data.test_clips)


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-epoch records from ``metrics.jsonl`` (the last one of each epoch)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    epochs: dict[int, dict[str, Any]] = {}
    for record in read_json_lines(path)[0]:  # a line cut short by a kill is left out
        if record.get("kind") == "epoch":
            epochs[int(record["epoch"])] = record
    return [epochs[e] for e in sorted(epochs)]


def time_left(plan: Plan) -> tuple[float | None, int]:
    """Seconds left (None before any epoch finished) and epochs left, from finished epochs.

    Each unfinished run costs its epochs left times the mean epoch time of its own row (of
    every run, before its row has finished an epoch).
    """
    by_label: dict[str, list[float]] = {}
    left: list[tuple[str, int]] = []
    for run in plan.runs:
        records = epoch_records(run.run_dir)
        by_label.setdefault(run.label, []).extend(
            float(r["epoch_seconds"]) for r in records if "epoch_seconds" in r
        )
        if not run.finished:
            left.append((run.label, max(run.cfg.train.epochs - len(records), 0)))
    every = [s for times in by_label.values() for s in times]
    epochs_left = sum(n for _, n in left)
    if not every:
        return None, epochs_left
    overall = sum(every) / len(every)
    seconds = sum(n * (sum(by_label[label]) / len(by_label[label]) if by_label[label] else overall)
                  for label, n in left)
    return seconds, epochs_left


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(plan: Plan, run: PlannedRun) -> str:
    runs = plan.runs
    done = sum(r.finished for r in runs)
    position = runs.index(run) + 1
    if run.is_teacher:
        where = f"teacher {run.label} (for the rows that need it)"
    else:
        index = next(i for i, row in enumerate(plan.rows) if row.label == run.label) + 1
        where = f"row {index}/{len(plan.rows)} {run.label}, seed {run.seed}"
    seconds, epochs_left = time_left(plan)
    eta = ("time left unknown until the first epoch finishes" if seconds is None
           else f"about {_duration(seconds)} left ({epochs_left} epochs)")
    return f"compare: {where}: run {position} of {len(runs)} ({done} done); {eta}"


def run_plan(plan: Plan, train_fn: TrainFn | None = None, progress: bool = True) -> None:
    """Train what is missing: reuse finished runs, resume interrupted ones."""
    if train_fn is None:
        from vidkd.engine.train import train as train_fn
    for run in plan.runs:
        if run.finished:
            results = read_results(run.run_dir)
            stored, wanted = results.get("config", {}), config_to_dict(run.cfg)
            blocking = _blocking(stored, wanted, results.get("cwd"))
            changed = _described(blocking, stored, wanted)
            if changed:
                moved = moved_defaults(stored, {k: v for k, v in blocking.items() if k != "train.epochs"})
                raise VidkdError(
                    f"{run.run_dir} finished with other settings ({'; '.join(changed[:4])})"
                    + (moved or "; delete that run to retrain it, or write the compare to another --out")
                )
        elif holds_files(run.run_dir) and not is_vidkd_run(run.run_dir):
            raise VidkdError(
                f"{run.run_dir} holds files that are not a vidkd run; nothing was touched. Move "
                "them, or write the compare to another --out"
            )
    shared_cache: dict = {}  # data.cache=memory: the runs on one dataset decode it once
    for run in plan.runs:
        if run.finished:
            continue
        resume = latest_checkpoint(run.run_dir / "checkpoints") is not None
        overwrite = not resume and holds_files(run.run_dir)  # killed before its first checkpoint
        log.info("%s%s", progress_line(plan, run),
                 "; resuming from its last checkpoint" if resume else "")
        started = time.perf_counter()
        train_fn(run.cfg, resume=resume, overwrite=overwrite, progress=progress,
                 shared_cache=shared_cache)
        log.info("compare: %s finished in %s", run.cfg.name, _duration(time.perf_counter() - started))


def collect(plan: Plan) -> list[RowResults]:
    """Each row's finished runs, seed by seed."""
    return [
        RowResults(row.label, str(row.config), [run.seed for run in row.runs],
                   [read_results(run.run_dir) for run in row.runs], [run.run_dir for run in row.runs])
        for row in plan.rows
    ]


def rows_of_run_dirs(run_dirs: list[Path]) -> list[RowResults]:
    """The old form, ``vidkd compare RUN_DIR ...``: each finished run is a row of one seed."""
    rows = []
    for run_dir in run_dirs:
        results = read_results(run_dir)
        seed = int(results.get("config", {}).get("train", {}).get("seed", 0))
        rows.append(RowResults(results["name"], str(run_dir), [seed], [results], [run_dir]))
    names = [row.label for row in rows]
    for row in rows:  # two runs of one name (two machines, two --out): told apart by folder
        if names.count(row.label) > 1:
            row.label = f"{row.label} ({row.source})"
    return rows


def write_report(
    out_dir: Path, rows: list[RowResults], command: str, progress: bool = False,
    confusion: bool = True,
) -> list[Path]:
    """``results.md``, ``results.csv`` and the PNG plots; returns the files written.

    The confusion matrix of each row's best seed comes from scoring its tested student on
    the test split again (one test pass per row), with the run's own config.
    """
    from vidkd import plots
    from vidkd.engine.train import evaluate_student

    protocols = " / ".join(sorted({r["test"]["protocol"] for row in rows for r in row.results}))
    names = ["curves.png", "video_top1.png"]
    plots.training_curves(rows, [[epoch_records(d) for d in row.run_dirs] for row in rows],
                          out_dir / "curves.png")
    plots.accuracy_bars(rows, out_dir / "video_top1.png", protocols)
    if confusion:
        for row in rows:
            best = row.best
            run_dir = row.run_dirs[best]
            log.info("compare: confusion matrix of %s (seed %d, the best): scoring its test split",
                     row.label, row.seeds[best])
            cfg = load_config(run_dir / "config.yaml")
            result, description = evaluate_student(cfg, tested_student_file(run_dir), progress=progress)
            name = f"confusion-{plots.file_label(row.label)}.png"
            copies = 1
            while name in names:  # labels that differ only in characters a file name drops
                copies += 1
                name = f"confusion-{plots.file_label(row.label)}-{copies}.png"
            plots.confusion_figure(
                result.confusion, list(description["classes"]),
                f"{row.label}, seed {row.seeds[best]} (best of {len(row.seeds)})\ntest video top-1 "
                f"{result.video_top1:.2f}% ({result.protocol})", out_dir / name,
            )
            names.append(name)
    earlier = _listed_plots(out_dir / "results.md")
    atomic_write_text(out_dir / "results.csv", results_csv(rows))
    atomic_write_text(out_dir / "results.md", markdown_report(rows, command, names))
    for name in sorted(earlier - set(names)):  # an earlier compare's plot of a row not here
        stale = out_dir / name
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
            log.info("compare: removed %s (its row is not in this compare)", stale)
    return [out_dir / "results.md", out_dir / "results.csv", *(out_dir / n for n in names)]


def _listed_plots(results_md: Path) -> set[str]:
    """The confusion plots that an earlier ``vidkd compare`` listed as its own files in this
    ``results.md`` (nothing, for a file it did not write)."""
    try:
        text = results_md.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    if not text.startswith("# vidkd compare\n") or "\n## Files\n" not in text:
        return set()
    files = text.split("\n## Files\n", 1)[1]
    return set(re.findall(r"^- `(confusion-[^`/\\]+\.png)`$", files, flags=re.MULTILINE))
