"""``self_kd``: "Teaching yourself" (Vu, Le & Wang, IEEE Access 2021).

The teacher is a frozen copy of the student, refreshed with the student's weights at the
end of every epoch in which validation accuracy improved; the loss is Hinton's (``kd``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from vidkd.methods.base import Method
from vidkd.methods.kd import freeze, kd_loss
from vidkd.models.resnet3d import ResNet3D

if TYPE_CHECKING:
    from vidkd.config import MethodConfig

self_kd_loss = kd_loss
"""The self-KD loss is Hinton's: ``self_kd_loss(student_logits, teacher_logits, labels, ...)``."""


class SelfKD(Method):
    """Student distilled from its own best-so-far snapshot."""

    def __init__(self, student: ResNet3D, tau: float, alpha: float, tau_squared: bool) -> None:
        super().__init__(student)
        self.teacher = freeze(copy.deepcopy(student))
        self.tau, self.alpha, self.tau_squared = tau, alpha, tau_squared
        self.refreshes = 0

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> SelfKD:
        return cls(student, config.tau, config.alpha, config.kd_tau_squared)

    def train(self, mode: bool = True) -> SelfKD:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def refresh_teacher(self) -> None:
        """Copy the student's weights and BN statistics into the teacher."""
        self.teacher.load_state_dict(self.student.state_dict())
        self.refreshes += 1

    def on_validation(self, improved: bool) -> None:
        if improved:
            self.refresh_teacher()

    def training_state(self) -> dict[str, Any]:
        return {"refreshes": self.refreshes}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.refreshes = int(state.get("refreshes", 0))

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(clips)
        student_logits = self.student(clips)
        return self_kd_loss(
            student_logits, teacher_logits, labels, self.tau, self.alpha, self.tau_squared
        )
