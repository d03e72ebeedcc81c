"""Rebuild a shipped network from the description stored in its file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from vidkd.models.generative import ARCHITECTURE as ATTENTION_RESNET3D
from vidkd.models.generative import AttentionResNet3D
from vidkd.models.resnet3d import resnet3d


def build_from_description(description: Mapping[str, Any]) -> nn.Module:
    """The untrained network a student file describes (its weights load strictly into it).

    A description without ``architecture`` (every file before generative KD) is a plain
    3D ResNet; ``"attention_resnet3d"`` wraps that ResNet as an
    :class:`~vidkd.models.generative.AttentionResNet3D` with the file's ``channels`` and
    ``cvae`` fields.
    """
    encoder = resnet3d(
        description["depth"],
        description["num_classes"],
        shortcut=description["shortcut"],
        no_max_pool=description["no_max_pool"],
        width_multiplier=description["width_multiplier"],
        dropout=description.get("dropout", 0.0),
        conv1_t_size=description.get("conv1_t_size", 7),  # files before the option: Hara's 7
        conv1_t_stride=description.get("conv1_t_stride", 1),
    )
    architecture = description.get("architecture", "resnet3d")
    if architecture == "resnet3d":
        return encoder
    if architecture == ATTENTION_RESNET3D:
        return AttentionResNet3D(
            encoder, description["num_classes"], channels=int(description["channels"]),
            cvae=bool(description["cvae"]),
        )
    raise ValueError(
        f"unknown architecture {architecture!r}; this vidkd builds resnet3d and {ATTENTION_RESNET3D}"
    )
