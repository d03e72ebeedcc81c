"""3D ResNets of Hara, Kataoka & Satoh, "Can spatiotemporal 3D CNNs retrace the history of
2D CNNs and ImageNet?" (CVPR 2018); see SPEC "Backbone: 3D ResNet".

Shaped like torchvision's ``models/video/resnet.py`` (one network class with an injected block
class, thin factories) but with the parameter names of Hara's released code
(``kenshohara/3D-ResNets-PyTorch``, ``models/resnet.py``), so its checkpoints load directly:
``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``layer2.0.downsample.0`` / ``.1``, ``fc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEPTHS",
    "BasicBlock",
    "Bottleneck",
    "ResNet3D",
    "ZeroPadShortcut",
    "load_hara_state_dict",
    "resnet3d",
]

SHORTCUTS = ("A", "B")
STAGE_WIDTHS = (64, 128, 256, 512)
#: elements of stem output that one stem convolution computes while training on a CPU
#: (``ResNet3D.stem_conv``): half the size at which oneDNN's weight gradient slows down
STEM_CHUNK_ELEMENTS = 1 << 26


def conv3x3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    """3x3x3 convolution, padding 1, no bias."""
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    """1x1x1 convolution, no bias."""
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Shortcut type A (Hara et al. 2018): parameter-free identity, subsampled by ``stride`` in
    T, H, W and zero-padded to ``out_planes`` channels.

    Hara's code concatenates zeros to ``out.data``, which cuts the gradient through the identity
    path; this one keeps it (same forward values, SPEC "Backbone: 3D ResNet").
    """

    def __init__(self, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.out_planes = out_planes
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        n, c, t, h, w = out.shape
        if self.out_planes < c:
            raise ValueError(f"cannot zero-pad {c} channels down to {self.out_planes}")
        zero_pads = out.new_zeros(n, self.out_planes - c, t, h, w)
        return torch.cat([out, zero_pads], dim=1)

    def extra_repr(self) -> str:
        return f"out_planes={self.out_planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (depths 10/18/34)."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (strided) -> 1x1x1 convolutions, 4x expansion (depths 50/101/152)."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


Block = type[BasicBlock] | type[Bottleneck]

DEPTHS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
"""Depth -> (block class, blocks per stage), as in Hara et al. 2018, Table 1."""


class ResNet3D(nn.Module):
    """3D ResNet (Hara et al. 2018; SPEC "Backbone: 3D ResNet").

    Stem: conv 7x7x7 stride (1, 2, 2) -> BN -> ReLU -> max-pool 3x3x3 stride 2 (identity when
    ``no_max_pool``); Hara's ``conv1_t_size`` and ``conv1_t_stride`` set the stem conv's
    temporal kernel (padding ``conv1_t_size // 2``) and stride; four stages (stages 2-4 stride 2 in T, H, W); global average pool gives
    the representation ``r`` of size :attr:`feature_dim`; ``fc`` maps it to class logits.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int,
        shortcut: str = "B",
        no_max_pool: bool = False,
        width_multiplier: float = 1.0,
        in_channels: int = 3,
        dropout: float = 0.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 1,
    ) -> None:
        super().__init__()
        if conv1_t_size < 1 or conv1_t_stride < 1:
            raise ValueError(
                f"conv1_t_size and conv1_t_stride must be at least 1, got {conv1_t_size} and "
                f"{conv1_t_stride}"
            )
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if len(layers) != 4:
            raise ValueError(f"layers must give 4 stage lengths, got {list(layers)}")
        widths = [max(1, round(w * width_multiplier)) for w in STAGE_WIDTHS]
        self.shortcut = shortcut
        self.no_max_pool = no_max_pool
        self.in_planes = widths[0]

        self.conv1 = nn.Conv3d(
            in_channels, widths[0], kernel_size=(conv1_t_size, 7, 7),
            stride=(conv1_t_stride, 2, 2), padding=(conv1_t_size // 2, 3, 3), bias=False,
        )
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if no_max_pool else nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        )
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.feature_dim: int = widths[3] * block.expansion
        #: channels c_1..c_4 of the four stage outputs (x4 for bottlenecks)
        self.stage_channels: tuple[int, ...] = tuple(w * block.expansion for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self.in_planes != out_planes:
            if self.shortcut == "A":
                downsample = ZeroPadShortcut(out_planes, stride)
            else:
                downsample = nn.Sequential(
                    conv1x1x1(self.in_planes, out_planes, stride), nn.BatchNorm3d(out_planes)
                )
        stage = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = out_planes
        stage += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Clips (N, C, T, H, W) -> the four stage outputs F_1..F_4 (``layer1``..``layer4``).

        For feature distillation (FRSKD); ``forward`` pools F_4, so one pass serves both.
        """
        x = self.maxpool(self.relu(self.bn1(self.stem_conv(x))))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        return stages

    def stem_conv(self, x: Tensor) -> Tensor:
        """``conv1(x)``; when training on a CPU, a slice of the batch per call.

        oneDNN's CPU weight gradient of the stem (3 input channels) takes over twice as long a
        clip once the stem output of a batch passes about 2^27 elements: 17.6 ms a clip up to
        40 clips of 16x112x112 with the 7x7x7 stem, 39 ms from 44 clips on (AVX-512 kernels),
        which a two-view method's batch of 64 crosses. Slices of at most
        :data:`STEM_CHUNK_ELEMENTS` output elements keep every call below that size, at no
        cost a clip. Clips do not interact before ``bn1``, which still normalises the whole
        batch, so the output is the same function of ``x``; autograd sums the slices' weight
        gradients.
        """
        conv = self.conv1
        training = self.training and torch.is_grad_enabled() and conv.weight.requires_grad
        if x.device.type != "cpu" or not training or x.dim() != 5:
            return conv(x)
        per_clip = conv.out_channels
        for size, k, s, p in zip(x.shape[2:], conv.kernel_size, conv.stride, conv.padding,
                                 strict=True):
            per_clip *= max(0, (size + 2 * p - k) // s + 1)
        clips = max(1, STEM_CHUNK_ELEMENTS // max(1, per_clip))
        if x.shape[0] <= clips:
            return conv(x)
        return torch.cat([conv(part) for part in x.split(clips)])

    def pool_and_classify(self, last_stage: Tensor) -> Tensor:
        """F_4 -> class logits: global average pool, dropout, ``fc`` (the tail of ``forward``)."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(last_stage), 1)))

    def forward_map(self, x: Tensor) -> Tensor:
        """Clips (N, C, T, H, W) -> last-stage feature map F_4 (N, feature_dim, T', H', W')."""
        return self.forward_stages(x)[-1]

    def forward_features(self, x: Tensor) -> Tensor:
        """Clips (N, C, T, H, W) -> pooled representation r of shape (N, feature_dim)."""
        return torch.flatten(self.avgpool(self.forward_map(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Clips (N, C, T, H, W) -> class logits (N, num_classes)."""
        return self.fc(self.dropout(self.forward_features(x)))


def resnet3d(
    depth: int,
    num_classes: int,
    shortcut: str = "B",
    no_max_pool: bool = False,
    width_multiplier: float = 1.0,
    in_channels: int = 3,
    dropout: float = 0.0,
    conv1_t_size: int = 7,
    conv1_t_stride: int = 1,
) -> ResNet3D:
    """3D ResNet-``depth`` (10, 18, 34, 50, 101 or 152) of Hara et al. 2018.

    ``shortcut`` is "B" (1x1x1 conv + BN, default) or "A" (zero-padded identity).
    ``width_multiplier`` scales the stage widths 64/128/256/512 (rounded, at least 1).
    ``conv1_t_size`` / ``conv1_t_stride``: the stem conv's temporal kernel and stride, as in
    Hara's code (7 and 1 there and here).
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    block, layers = DEPTHS[depth]
    return ResNet3D(
        block,
        layers,
        num_classes,
        shortcut=shortcut,
        no_max_pool=no_max_pool,
        width_multiplier=width_multiplier,
        in_channels=in_channels,
        dropout=dropout,
        conv1_t_size=conv1_t_size,
        conv1_t_stride=conv1_t_stride,
    )


def load_hara_state_dict(model: ResNet3D, state_dict: Mapping[str, Tensor]) -> ResNet3D:
    """Load a state dict saved by Hara's code into ``model`` (strict), stripping the leading
    ``module.`` that ``nn.DataParallel`` adds to every key. Returns ``model``."""
    prefix = "module."
    cleaned = {
        (key[len(prefix) :] if key.startswith(prefix) else key): value
        for key, value in state_dict.items()
    }
    model.load_state_dict(cleaned, strict=True)
    return model
