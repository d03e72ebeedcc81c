"""FRSKD's self-teacher (Ji et al., CVPR 2021, section 3.1), carried to 3D; SPEC method 6.

A BiFPN-style network over the classifier's four stage outputs F_1..F_4 (c_i channels):

    L_i   = lateral_i(F_i)                                  1x1x1 block, c_i -> d_i = 2 c_i
    P_4   = L_4
    P_i   = DS(fuse(L_i, up_i(P_{i+1})))          i = 3, 2, 1   (top-down)
    O_1   = P_1
    O_i   = DS(fuse(L_i, P_i, down_i(O_{i-1})))   i = 2, 3      (bottom-up)
    O_4   = DS(fuse(L_4, down_4(O_3)))
    t     = FC(avgpool(O_4))

``up_i``: nearest resize to stage i's exact T x H x W, then a 1x1x1 block d_{i+1} -> d_i.
``down_i``: 3x3x3 max-pool stride 2 (padding 1), resized to stage i's exact T x H x W, then a
1x1x1 block d_{i-1} -> d_i. ``fuse``: learned non-negative weights, w = relu(raw),
sum_j w_j x_j / (sum_j w_j + 1e-6) (BiFPN's fast normalised fusion). ``DS``: depthwise 3x3x3
conv + pointwise 1x1x1 conv + BN + ReLU. A "block" is conv + BN + ReLU.

The refined maps O_1..O_4 have the stage sizes of F_1..F_4, so the attention maps of both
line up for feature distillation. Sizes come from the features themselves, so any input
size the student accepts (odd sizes, ``no_max_pool``, bottleneck widths) works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBlock", "DepthwiseSeparableBlock", "WeightedFusion", "SelfTeacher"]

FUSION_EPSILON = 1e-6


class ConvBlock(nn.Sequential):
    """1x1x1 conv (no bias) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class DepthwiseSeparableBlock(nn.Sequential):
    """Depthwise 3x3x3 conv + pointwise 1x1x1 conv + BN + ReLU (size preserving)."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv3d(channels, channels, kernel_size=3, padding=1, groups=channels, bias=False),
            nn.Conv3d(channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )


class WeightedFusion(nn.Module):
    """sum_j w_j x_j / (sum_j w_j + 1e-6) with w = relu(raw weights), raw weights start at 1."""

    def __init__(self, num_inputs: int) -> None:
        super().__init__()
        self.raw_weights = nn.Parameter(torch.ones(num_inputs))

    def normalized_weights(self) -> Tensor:
        """The non-negative weights that sum to (almost) 1, as used in :meth:`forward`."""
        weights = F.relu(self.raw_weights)
        return weights / (weights.sum() + FUSION_EPSILON)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != self.raw_weights.numel():
            raise ValueError(f"expected {self.raw_weights.numel()} inputs, got {len(inputs)}")
        weights = self.normalized_weights()
        fused = weights[0] * inputs[0]
        for weight, x in zip(weights[1:], inputs[1:], strict=True):
            fused = fused + weight * x
        return fused


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest resampling of (N, C, T, H, W) to exactly ``size`` = (T, H, W); no-op if equal."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="nearest")


class TopDownResample(nn.Module):
    """Coarser node -> finer stage: resize to its T x H x W, then a 1x1x1 block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.block(resize_to(x, size))


class BottomUpResample(nn.Module):
    """Finer node -> coarser stage: 3x3x3 max-pool stride 2, resize to its T x H x W, 1x1x1 block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.block = ConvBlock(in_channels, out_channels)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.block(resize_to(self.pool(x), size))


class SelfTeacher(nn.Module):
    """FRSKD self-teacher over four stage outputs; returns refined maps O_1..O_4 and logits t."""

    def __init__(self, stage_channels: Sequence[int], num_classes: int, width: int = 2) -> None:
        super().__init__()
        if len(stage_channels) != 4:
            raise ValueError(f"expected 4 stage widths, got {list(stage_channels)}")
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.stage_channels = tuple(stage_channels)
        dims = [width * c for c in stage_channels]
        self.dims = tuple(dims)
        self.lateral = nn.ModuleList(ConvBlock(c, d) for c, d in zip(stage_channels, dims, strict=True))
        # top-down nodes for stages 1..3 (index 0..2), each fed by the node one stage coarser
        self.up = nn.ModuleList(TopDownResample(dims[i + 1], dims[i]) for i in range(3))
        self.up_fusion = nn.ModuleList(WeightedFusion(2) for _ in range(3))
        self.up_conv = nn.ModuleList(DepthwiseSeparableBlock(dims[i]) for i in range(3))
        # bottom-up nodes for stages 2..4 (index 1..3), each fed by the output one stage finer
        self.down = nn.ModuleList(BottomUpResample(dims[i - 1], dims[i]) for i in range(1, 4))
        self.down_fusion = nn.ModuleList(WeightedFusion(3 if i < 3 else 2) for i in range(1, 4))
        self.down_conv = nn.ModuleList(DepthwiseSeparableBlock(dims[i]) for i in range(1, 4))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(dims[3], num_classes)

    def fusions(self) -> list[WeightedFusion]:
        """Every fusion node, top-down then bottom-up."""
        return [*self.up_fusion, *self.down_fusion]

    def forward(self, stages: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """F_1..F_4 -> (O_1..O_4, self-teacher logits t)."""
        if len(stages) != 4:
            raise ValueError(f"expected 4 stage outputs, got {len(stages)}")
        sizes = [tuple(f.shape[2:]) for f in stages]
        lateral = [block(f) for block, f in zip(self.lateral, stages, strict=True)]

        top_down: list[Tensor] = [lateral[3]]  # P_4, then P_3, P_2, P_1 prepended
        for i in (2, 1, 0):
            coarser = self.up[i](top_down[0], sizes[i])
            top_down.insert(0, self.up_conv[i](self.up_fusion[i]([lateral[i], coarser])))

        refined = [top_down[0]]  # O_1 = P_1
        for i in (1, 2, 3):
            finer = self.down[i - 1](refined[-1], sizes[i])
            inputs = [lateral[i], top_down[i], finer] if i < 3 else [lateral[i], finer]
            refined.append(self.down_conv[i - 1](self.down_fusion[i - 1](inputs)))

        logits = self.fc(torch.flatten(self.avgpool(refined[3]), 1))
        return refined, logits
