"""What the engine knows of a training method.

A method is an ``nn.Module`` that owns the student and any training-only modules (heads,
teachers). ``forward(clips, labels)`` returns a dict of scalar tensors with a ``"loss"``
key; the engine wraps the whole method in DDP, so one forward/backward covers every
trainable part. ``student`` is the network kept for evaluation and export.

The whole interface, in the order the engine calls it:

- ``from_config(student, method_config, teacher)``: build the method from its config
  section; ``teacher`` is the loaded network when ``needs_teacher`` is set.
- ``on_epoch_start(epoch)``: before each training epoch (0-based), e.g. for loss ramps.
- ``forward(clips, labels)``: the losses of one batch.
- ``on_validation(improved)``: after each validation.
- ``training_state()`` / ``load_training_state(state)``: plain data (not weights) that a
  checkpoint must carry for an exact resume.
- ``student_description()``: fields added to the shipped student's description, so that
  ``load_student`` can rebuild a student that is more than a plain 3D ResNet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from vidkd.models.resnet3d import ResNet3D

if TYPE_CHECKING:
    from vidkd.config import MethodConfig


class Method(nn.Module):
    """Base class: a student plus the loss of one row of the paper's tables."""

    #: clips per video in one training item (2 for two-view methods)
    num_views: int = 1
    #: whether the full SKD-SRL augmentation set is the default (else crop + flip)
    full_augment: bool = True
    #: whether the engine loads ``method.teacher.checkpoint`` and passes it to ``from_config``
    needs_teacher: bool = False

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> Method:
        """The method around ``student`` with the loss weights of ``config``."""
        return cls(student)

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (0-based), also after a resume."""

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``clips``: (N * num_views, C, T, H, W), views of one video adjacent."""
        raise NotImplementedError

    def on_validation(self, improved: bool) -> None:
        """Called after each validation with whether validation top-1 improved."""

    def training_state(self) -> dict[str, Any]:
        """Plain data beyond the weights that a checkpoint keeps (``weights_only``-safe)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned."""

    def student_description(self) -> dict[str, Any]:
        """Extra fields of the shipped student's description (JSON-serialisable)."""
        return {}
