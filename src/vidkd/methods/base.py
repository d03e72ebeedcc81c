"""What the engine knows of a training method.

A method is an ``nn.Module`` that owns the student and any training-only modules (heads,
teachers). ``forward(clips, labels)`` returns a dict of scalar tensors with a ``"loss"``
key; the engine wraps the whole method in DDP, so one forward/backward covers every
trainable part. ``student`` is the network kept for evaluation and export.
"""

from __future__ import annotations

from torch import Tensor, nn

from vidkd.models.resnet3d import ResNet3D


class Method(nn.Module):
    """Base class: a student plus the loss of one row of the paper's tables."""

    #: clips per video in one training item (2 for two-view methods)
    num_views: int = 1
    #: whether the full SKD-SRL augmentation set is the default (else crop + flip)
    full_augment: bool = True

    def __init__(self, student: ResNet3D) -> None:
        super().__init__()
        self.student = student

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``clips``: (N * num_views, C, T, H, W), views of one video adjacent."""
        raise NotImplementedError

    def on_validation(self, improved: bool) -> None:
        """Called after each validation with whether validation top-1 improved."""
