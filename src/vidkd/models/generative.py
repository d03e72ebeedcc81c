"""Modules of generative model-based feature KD (AAAI 2024; SPEC "Methods" 7).

All act on the last-stage feature map F of a 3D ResNet, shape (N, C, T, H, W), which is a
ReLU output (non-negative):

- :class:`ChannelTimeAttention`: A(F) in (0, 1), shape (N, C, T): a 1x3x3 conv over H x W
  for every time step, mean over H x W, a temporal 1D conv, a sigmoid.
- :func:`attended_features`: F * A rescaled, per sample, to keep the sum of F; the
  classifier sees its global average pool.
- :class:`ConditionalVAE`: encoder q(z | F, A) = N(mu, diag sigma^2) and decoder
  p(F | z, A). The latent z is laid out like A, (N, C, T), so the prior N(A, I) of the paper
  has one unit Gaussian per channel and time step, centred on the attention value.
- :class:`AttentionResNet3D`: a :class:`~vidkd.models.resnet3d.ResNet3D` encoder, an
  optional 1x1x1 adapter (to a teacher's channel count), the attention module, its own
  classifier and, for a phase-1 teacher, the CVAE. ``forward(clips) -> logits``.

The authors' code (``aaai24/Generative-based-KD``, I3D backbone at 224 px) collapses H x W
with a convolution whose kernel is the whole 7x7 map and expands it back with the
transposed convolution; the maps here change size with the crop (1x1 to 4x4), so the
spatial steps are 1x3x3 convolutions with a mean over H x W (encoder and attention) and a
broadcast over H x W (decoder).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vidkd.models.resnet3d import ResNet3D

ARCHITECTURE = "attention_resnet3d"
"""The ``architecture`` field of an :class:`AttentionResNet3D` student file's description."""


def attended_features(features: Tensor, attention: Tensor, eps: float = 1e-6) -> Tensor:
    """F * A rescaled per sample to keep the sum of F: F * A * sum(F) / max(sum(F * A), eps).

    ``features`` (N, C, T, H, W) non-negative, ``attention`` (N, C, T) in (0, 1); sums run
    over C, T, H, W of each sample. The ``eps`` floor only acts on an all-zero map, whose
    attended map is then zero too (sum kept). The authors' code divides by the sum over
    the whole batch; per sample keeps a clip's logits independent of its batch.
    """
    weighted = features * attention[..., None, None]
    total = features.sum(dim=(1, 2, 3, 4), keepdim=True)
    weighted_total = weighted.sum(dim=(1, 2, 3, 4), keepdim=True)
    return weighted * (total / weighted_total.clamp_min(eps))


class ChannelTimeAttention(nn.Module):
    """Channel x time attention A(F) in (0, 1) (SPEC 7; the paper's attention module).

    1x3x3 conv (C -> C/4) + ReLU per time step, mean over H x W, temporal Conv1d (k = 3,
    C/4 -> C), sigmoid computed in float32 and kept inside [eps, 1 - eps] so that A never
    reaches 0 or 1 exactly, even for saturated inputs.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        hidden = max(channels // 4, 1)
        self.spatial = nn.Conv3d(channels, hidden, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.relu = nn.ReLU(inplace=True)
        self.temporal = nn.Conv1d(hidden, channels, kernel_size=3, padding=1)
        self.eps = eps

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, T, H, W) -> (N, C, T)."""
        per_step = self.relu(self.spatial(features)).mean(dim=(3, 4))  # (N, C/4, T)
        logits = self.temporal(per_step).float()
        return torch.sigmoid(logits).clamp(self.eps, 1.0 - self.eps)


class CVAEDecoder(nn.Module):
    """p(F | z, A): per-time MLP on [z; A] (2C -> h -> h -> C), broadcast over H x W, then a
    depthwise 1x3x3 conv (its zero padding lets border and centre positions differ)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv1d(2 * channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv1d(hidden, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv1d(hidden, channels, 1),
        )
        self.spatial = nn.Conv3d(
            channels, channels, kernel_size=(1, 3, 3), padding=(0, 1, 1), groups=channels
        )

    def forward(self, latent: Tensor, attention: Tensor, spatial_size: tuple[int, int]) -> Tensor:
        """z, A (N, C, T) -> F-hat (N, C, T, H, W) with (H, W) = ``spatial_size``."""
        per_step = self.mlp(torch.cat([latent, attention.to(latent.dtype)], dim=1))
        height, width = spatial_size
        grid = per_step[..., None, None].expand(-1, -1, -1, height, width).contiguous()
        return self.spatial(grid)


class ConditionalVAE(nn.Module):
    """Conditional VAE on the feature map F, conditioned on the attention A (SPEC 7).

    Encoder: depthwise 1x3x3 conv + ReLU, mean over H x W, then a per-time MLP on [F; A]
    (2C -> h -> h -> 2C) giving mu and log sigma^2, each (N, C, T). Decoder:
    :class:`CVAEDecoder`. ``hidden`` defaults to C, as the authors' MLPs.
    """

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or channels
        self.channels = channels
        self.spatial = nn.Sequential(
            nn.Conv3d(channels, channels, kernel_size=(1, 3, 3), padding=(0, 1, 1),
                      groups=channels),
            nn.ReLU(inplace=True),
        )
        self.encoder = nn.Sequential(
            nn.Conv1d(2 * channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv1d(hidden, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv1d(hidden, 2 * channels, 1),
        )
        self.decoder = CVAEDecoder(channels, hidden)

    def encode(self, features: Tensor, attention: Tensor) -> tuple[Tensor, Tensor]:
        """F (N, C, T, H, W), A (N, C, T) -> mu, log sigma^2, each (N, C, T)."""
        per_step = self.spatial(features).mean(dim=(3, 4))
        stats = self.encoder(torch.cat([per_step, attention.to(per_step.dtype)], dim=1))
        mean, log_var = stats.chunk(2, dim=1)
        return mean, log_var

    def forward(
        self, features: Tensor, attention: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction F-hat = decode(mu + sigma * eps, A), with mu and log sigma^2.

        ``noise`` is eps (N, C, T); drawn from N(0, I) when not given.
        """
        mean, log_var = self.encode(features, attention)
        if noise is None:
            noise = torch.randn_like(mean)
        latent = mean + noise.to(mean.dtype) * torch.exp(0.5 * log_var)
        reconstruction = self.decoder(latent, attention, tuple(features.shape[-2:]))
        return reconstruction, mean, log_var


class AttentionResNet3D(nn.Module):
    """3D ResNet encoder -> [1x1x1 adapter] -> attention -> attended pool -> FC [+ CVAE].

    ``encoder`` is a :class:`ResNet3D`; its own ``fc`` is replaced by ``nn.Identity`` (the
    classifier here sees the attended map, possibly at another width). ``channels`` is the
    width that attention, classifier and CVAE see: the encoder's by default; another value
    adds ``adapter``, a 1x1x1 conv + BN + ReLU (non-negative like a stage output) from the
    encoder's width to it, as a phase-2 student that matches its teacher's width.
    """

    def __init__(
        self, encoder: ResNet3D, num_classes: int, channels: int | None = None,
        cvae: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder.fc = nn.Identity()
        self.channels = channels or encoder.feature_dim
        self.adapter: nn.Module = nn.Identity()
        if self.channels != encoder.feature_dim:
            self.adapter = nn.Sequential(
                nn.Conv3d(encoder.feature_dim, self.channels, kernel_size=1, bias=False),
                nn.BatchNorm3d(self.channels),
                nn.ReLU(inplace=True),
            )
        self.attention = ChannelTimeAttention(self.channels)
        self.dropout = nn.Dropout(encoder.dropout.p)
        self.fc = nn.Linear(self.channels, num_classes)
        self.cvae: ConditionalVAE | None = ConditionalVAE(self.channels) if cvae else None

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def feature_map(self, clips: Tensor) -> Tensor:
        """Clips -> F, the (adapted) last-stage map (N, channels, T', H', W')."""
        return self.adapter(self.encoder.forward_map(clips))

    def classify(self, features: Tensor, attention: Tensor) -> Tensor:
        """Logits from the global average pool of the attended, sum-keeping map."""
        pooled = attended_features(features, attention).mean(dim=(2, 3, 4))
        return self.fc(self.dropout(pooled))

    def forward(self, clips: Tensor) -> Tensor:
        """Clips (N, C, T, H, W) -> class logits (N, num_classes)."""
        features = self.feature_map(clips)
        return self.classify(features, self.attention(features))

    def description(self) -> dict[str, Any]:
        """Fields that, with the encoder's, let ``build_from_description`` rebuild this."""
        return {"architecture": ARCHITECTURE, "channels": self.channels,
                "cvae": self.cvae is not None}
