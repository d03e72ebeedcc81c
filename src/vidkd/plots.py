"""PNG figures of a compare, drawn with matplotlib's Agg canvas (no display needed).

- :func:`training_curves`: per row, train loss and validation video top-1 against epoch,
  one line per seed;
- :func:`accuracy_bars`: test video top-1 per row, mean with a sample-std error bar and
  each seed as a dot (and the paper's number as a cross when the row has one);
- :func:`confusion_figure`: video-level confusion counts of one run, with class names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vidkd.report import RowResults, mean_std


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # the Agg canvas: no GUI backend is touched

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def file_label(label: str) -> str:
    """A row label made safe for a file name."""
    return re.sub(r"[^\w.-]+", "_", label).strip("_") or "row"


def training_curves(rows: list[RowResults], curves: list[list[list[dict[str, Any]]]], path: Path) -> None:
    """``curves[row][seed]`` = that run's epoch records from ``metrics.jsonl``."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(max(4.0 * len(rows), 5.0), 6.0)
    axes = figure.subplots(2, len(rows), squeeze=False, sharex="col")
    for column, (row, row_curves) in enumerate(zip(rows, curves, strict=True)):
        loss_axis, val_axis = axes[0][column], axes[1][column]
        for seed, records in zip(row.seeds, row_curves, strict=True):
            epochs = [r["epoch"] for r in records if "train_loss" in r]
            loss_axis.plot(epochs, [r["train_loss"] for r in records if "train_loss" in r],
                           marker=".", label=f"seed {seed}")
            val = [(r["epoch"], r["val_video_top1"]) for r in records if "val_video_top1" in r]
            val_axis.plot([e for e, _ in val], [v for _, v in val], marker=".", label=f"seed {seed}")
        loss_axis.set_title(row.label)
        loss_axis.set_ylabel("train loss")
        val_axis.set_ylabel("val video top-1 (%)")
        val_axis.set_ylim(0, 100)
        val_axis.set_xlabel("epoch")
        val_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        for axis in (loss_axis, val_axis):
            axis.grid(alpha=0.3)
        loss_axis.legend(fontsize="small")
    figure.savefig(path)


def accuracy_bars(rows: list[RowResults], path: Path, protocol: str) -> None:
    figure = _figure(max(1.6 * len(rows) + 2.0, 5.0), 4.5)
    axis = figure.subplots()
    positions = list(range(len(rows)))
    means, stds = zip(*(mean_std(row.values("video_top1")) for row in rows), strict=True)
    axis.bar(positions, means, yerr=stds, capsize=6, color="#7aa6c2", edgecolor="#2b5673",
             label="mean ± sample std over seeds")
    for x, row in zip(positions, rows, strict=True):
        values = row.values("video_top1")
        axis.scatter([x] * len(values), values, color="#1b1b1b", s=14, zorder=3,
                     label="one seed" if x == 0 else None)
        axis.annotate(f"{means[x]:.1f}", (x, means[x] + stds[x]), textcoords="offset points",
                      xytext=(0, 4), ha="center", fontsize="small")
    papers = [(x, row.results[0].get("paper_top1")) for x, row in zip(positions, rows, strict=True)]
    papers = [(x, p) for x, p in papers if p is not None]
    if papers:
        axis.scatter([x for x, _ in papers], [p for _, p in papers], marker="x", color="#c0392b",
                     s=50, zorder=4, label="paper")
    axis.set_xticks(positions, [row.label for row in rows], rotation=20 if len(rows) > 3 else 0,
                    ha="right" if len(rows) > 3 else "center")
    axis.set_ylabel("test video top-1 (%)")
    axis.set_title(f"video top-1, {protocol}", fontsize="medium")
    axis.set_ylim(0, 100)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="small", loc="upper left")
    figure.savefig(path)


def confusion_figure(matrix: list[list[int]], classes: list[str], title: str, path: Path) -> None:
    """Rows are the true class, columns the predicted one; counts written in each cell.
    ``title`` may hold a line break."""
    count = len(classes)
    side = min(max(4.0, 0.45 * count + 2.5), 30.0)
    figure = _figure(side + 1.0, side)
    axis = figure.subplots()
    image = axis.imshow(matrix, cmap="Blues", interpolation="nearest")
    from matplotlib.ticker import MaxNLocator

    bar = figure.colorbar(image, ax=axis, shrink=0.8, label="videos")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    font = max(3.0, min(9.0, 200.0 / max(count, 1)))
    axis.set_xticks(range(count), classes, rotation=90, fontsize=font)
    axis.set_yticks(range(count), classes, fontsize=font)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title, fontsize="medium")
    if count <= 30:
        peak = max((max(line) for line in matrix), default=0)
        for i, line in enumerate(matrix):
            for j, value in enumerate(line):
                if value:
                    axis.text(j, i, str(value), ha="center", va="center", fontsize=font,
                              color="white" if value > peak / 2 else "black")
    figure.savefig(path)
