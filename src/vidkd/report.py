"""Result tables: finished runs side by side, with the paper's number when the config has one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidkd.errors import VidkdError


def read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    if not path.is_file():
        raise VidkdError(f"{path} not found; the run has not finished (`vidkd train --resume` completes it)")
    return json.loads(path.read_text())


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def results_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table; the protocol of the accuracy columns is stated in the header."""
    protocols = sorted({r["test"]["protocol"] for r in results})
    header = ["run", "method", "model", "augment", "epochs", "video top-1", "video top-5", "clip top-1",
              "paper top-1", "s/epoch"]
    rows = [
        [
            r["name"], r["method"], r["model"], r.get("augment", "-"), str(r["epochs"]),
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
        f"{' / '.join(protocols)}; augment = operators besides the random crop"
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
