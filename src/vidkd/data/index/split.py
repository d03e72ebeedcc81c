"""The group-disjoint validation split."""

from __future__ import annotations

import random
from collections.abc import Sequence

from vidkd.data.records import VideoRecord


def split_train_val(
    records: Sequence[VideoRecord], fraction: float = 0.1, seed: int = 0
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split ``records`` into train and a group-disjoint validation set of about ``fraction``.

    Records sharing a ``group`` land on the same side (``None``: a group of its own).
    Groups are shuffled with ``seed`` and taken while that brings the validation size closer
    to ``fraction * len(records)``; at least one group goes to validation and at least one
    stays in train whenever there are two groups. Both sides keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups: dict[object, list[int]] = {}
    for position, record in enumerate(records):
        key = ("group", record.group) if record.group is not None else ("video", position)
        groups.setdefault(key, []).append(position)
    order = list(groups)
    random.Random(seed).shuffle(order)
    target = fraction * len(records)
    val_positions: set[int] = set()
    for key in order:
        new_size = len(val_positions) + len(groups[key])
        if new_size < len(records) and abs(new_size - target) < abs(len(val_positions) - target):
            val_positions.update(groups[key])
    if not val_positions and len(order) > 1:  # fraction too small for any group: take the smallest
        val_positions.update(min((groups[key] for key in order), key=len))
    train = [record for position, record in enumerate(records) if position not in val_positions]
    val = [record for position, record in enumerate(records) if position in val_positions]
    return train, val
