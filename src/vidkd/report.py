"""Result tables: finished runs side by side, with the paper's number when the config has one;
rows of several seeds as mean ± std (``results.md``) and one CSV line per run."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidkd.errors import VidkdError


def read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    if not run_dir.is_dir():
        raise VidkdError(f"run directory {run_dir} does not exist: pass a run of `vidkd train`")
    if not path.is_file():
        raise VidkdError(f"{path} not found; the run has not finished (`vidkd train --resume` completes it)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        results = None
    if not isinstance(results, dict):
        raise VidkdError(
            f"{path} is damaged (not a JSON object); `vidkd train --resume` on the run scores it "
            "again and rewrites it"
        )
    return results


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _config_section(r: dict[str, Any], section: str) -> dict[str, Any]:
    """One section of the config a run recorded in ``results.json``; {} where it has none."""
    config = r.get("config")
    value = config.get(section) if isinstance(config, dict) else None
    return value if isinstance(value, dict) else {}


def results_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table; the protocol of the accuracy columns is stated in the header."""
    protocols = sorted({r["test"]["protocol"] for r in results})
    header = ["run", "method", "model", "augment", "epochs", "lr", "video top-1", "video top-5",
              "clip top-1", "paper top-1", "s/epoch"]
    rows = [
        [
            r["name"], r["method"], r["model"], r.get("augment", "-"), str(r["epochs"]),
            str(_config_section(r, "optim").get("lr", "-")),
            _fmt(r["test"]["video_top1"]), _fmt(r["test"]["video_top5"]),
            _fmt(r["test"]["clip_top1"]), _fmt(r.get("paper_top1"), ".1f"),
            _fmt(r.get("mean_epoch_seconds"), ".1f"),
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    datasets = sorted({r["dataset"] for r in results})
    lines.append(
        f"test split of {', '.join(datasets)}; accuracy in %, video level = softmax averaged over "
        f"{' / '.join(protocols)}; augment = operators besides the random crop; lr = initial "
        "learning rate"
    )
    top_k = results[0]["test"].get("top5_k", 5)
    if top_k != 5:
        lines[-1] += f"; top-5 means top-{top_k} (only {top_k} classes)"
    for r in results:
        for note in r.get("notes", []):
            lines.append(f"note ({r['name']}): {note}")
    return "\n".join(lines)


def compare_runs(run_dirs: list[Path]) -> str:
    return results_table([read_results(run_dir) for run_dir in run_dirs])


# --------------------------------------------------------------------------- multi-seed rows


@dataclass
class RowResults:
    """One experiment row of a compare: the ``results.json`` of each seed's run."""

    label: str
    source: str  # the config (or run directory) the row came from
    seeds: list[int]
    results: list[dict[str, Any]]
    run_dirs: list[Path]

    def values(self, key: str) -> list[float]:
        return [float(r["test"][key]) for r in self.results]

    @property
    def best(self) -> int:
        """Index of the seed with the highest video top-1 (the first on ties)."""
        scores = self.values("video_top1")
        return scores.index(max(scores))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std of one value is 0."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _spread(values: list[float], signed: bool = False) -> str:
    spec = "+.2f" if signed else ".2f"
    mean, std = mean_std(values)
    each = ", ".join(format(v, spec) for v in values)
    if len(values) == 1:
        return format(mean, spec)
    return f"{format(mean, spec)} ± {std:.2f} ({each})"


def paired_differences(row: RowResults, baseline: RowResults, key: str = "video_top1") -> list[float]:
    """``row - baseline`` seed by seed, over the seeds both rows ran."""
    base = dict(zip(baseline.seeds, baseline.values(key), strict=True))
    return [value - base[seed] for seed, value in zip(row.seeds, row.values(key), strict=True)
            if seed in base]


def _schedule(r: dict[str, Any]) -> dict[str, str]:
    data, optim, train = (_config_section(r, s) for s in ("data", "optim", "train"))
    return {
        "clips": f"{data.get('clip_len', '?')}x{data.get('crop_size', '?')}x{data.get('crop_size', '?')}"
                 f" (stride {data.get('frame_stride', '?')}, short side {data.get('short_side', '?')})",
        "epochs": str(r["epochs"]),
        "batch": str(train.get("batch_size", "?")),
        "optimiser": f"SGD momentum {optim.get('momentum', '?')}, wd {optim.get('weight_decay', '?')}; "
                     + _lr_rule(r, optim),
    }


def _lr_rule(r: dict[str, Any], optim: dict[str, Any]) -> str:
    """The run's own account of its lr schedule, else (older runs) the plateau it ran."""
    schedule = r.get("schedule")
    rule = schedule.get("rule") if isinstance(schedule, dict) else None
    if isinstance(rule, str) and rule:
        return rule
    return (f"plateau: lr {optim.get('lr', '?')} x{optim.get('plateau_factor', '?')} after "
            f"{optim.get('plateau_patience', '?')} validations")


def markdown_report(rows: list[RowResults], command: str, plots: list[str]) -> str:
    """``results.md``: mean ± std over seeds per row, paired differences, paper, protocol, schedule."""
    first = rows[0]
    every = [r for row in rows for r in row.results]
    protocols = sorted({r["test"]["protocol"] for r in every})
    datasets = sorted({r["dataset"] for r in every})
    videos = sorted({str(r["test"].get("num_videos", "?")) for r in every})
    top_k = every[0]["test"].get("top5_k", 5)
    seeds = sorted({s for row in rows for s in row.seeds})
    lines = [
        "# vidkd compare", "",
        f"Made by `{command}`.", "",
        f"Protocol: test split of {', '.join(datasets)} ({' / '.join(videos)} videos); accuracy in %; "
        f"video level = softmax averaged over {' / '.join(protocols)}; clip level = each clip alone. "
        f"Each cell is the mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}, "
        "then each seed's value in seed order"
        + (f"; top-5 means top-{top_k} (only {top_k} classes)" if top_k != 5 else "") + ".",
        "",
        f"| row | method | video top-1 | video top-{top_k} | clip top-1 | "
        f"video top-1 minus {first.label} (paired by seed) | paper top-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.results[0]
        if row is first:
            diff = "(baseline row)"
        else:
            diffs = paired_differences(row, first)
            diff = _spread(diffs, signed=True) if diffs else "no common seed"
        paper = r.get("paper_top1")
        lines.append(
            f"| {row.label} | {r['method']} | {_spread(row.values('video_top1'))} | "
            f"{_spread(row.values('video_top5'))} | {_spread(row.values('clip_top1'))} | {diff} | "
            f"{'-' if paper is None else format(paper, '.1f')} |"
        )
    lines += ["", "## Schedule", "",
              "| row | model | augment | clips | epochs | batch | optimiser | tested student per seed | s/epoch |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row.results[0]
        s = _schedule(r)
        seconds = [x["mean_epoch_seconds"] for x in row.results if x.get("mean_epoch_seconds")]
        lines.append(
            f"| {row.label} | {r['model']} | {r.get('augment', '-')} | {s['clips']} | {s['epochs']} | "
            f"{s['batch']} | {s['optimiser']} | {', '.join(map(_tested, row.results))} | "
            f"{_fmt(sum(seconds) / len(seconds) if seconds else None, '.1f')} |"
        )
    lines += ["", "Paper numbers are the SKD-SRL paper's (Tables I and II: full dataset, 16x112x112, "
              "200 epochs); they are not reproduced by a different schedule or dataset."]
    notes = sorted({note for r in every for note in r.get("notes", [])})
    lines += [f"Note: {note}" for note in notes]
    lines += ["", "## Files", "", "- `results.csv`: one line per run (the numbers of its `results.json`)"]
    lines += [f"- `{name}`" for name in plots]
    lines += ["", "![video top-1](video_top1.png)", ""] if "video_top1.png" in plots else [""]
    return "\n".join(lines)


def _tested(r: dict[str, Any]) -> str:
    """The student a run's test numbers are of: the last, or the best validation's epoch."""
    return "last" if r.get("tested_student") == "student.safetensors" else f"epoch {r['best_epoch']}"


CSV_FIELDS = ("row", "seed", "run", "method", "dataset", "model", "augment", "epochs", "lr",
              "best_epoch", "tested_student", "video_top1", "video_top5", "clip_top1", "clip_top5", "num_videos", "protocol",
              "paper_top1", "mean_epoch_seconds", "run_dir")


def results_csv(rows: list[RowResults]) -> str:
    """``results.csv``: one line per run, numbers exactly as in its ``results.json``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        for seed, r, run_dir in zip(row.seeds, row.results, row.run_dirs, strict=True):
            test = r["test"]
            writer.writerow([
                row.label, seed, r["name"], r["method"], r["dataset"], r["model"], r.get("augment", ""),
                r["epochs"], _config_section(r, "optim").get("lr", ""), r["best_epoch"],
                r.get("tested_student", "best_student.safetensors"),
                repr(test["video_top1"]), repr(test["video_top5"]),
                repr(test["clip_top1"]), repr(test["clip_top5"]), test.get("num_videos", ""),
                test["protocol"], "" if r.get("paper_top1") is None else repr(r["paper_top1"]),
                "" if r.get("mean_epoch_seconds") is None else repr(r["mean_epoch_seconds"]), str(run_dir),
            ])
    return buffer.getvalue()
