"""``kd``: Hinton et al. (2015) knowledge distillation from a frozen, trained teacher.

L = CE(y, s) + alpha * KL(softmax(t / tau) || softmax(s / tau))   [x tau^2 if switched on]

The SKD-SRL paper (Table II) distils a 3D ResNet-50 teacher into a 3D ResNet-18 student
and leaves out the tau^2 factor, which SPEC keeps behind ``kd_tau_squared``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidkd.methods.base import Method
from vidkd.models.resnet3d import ResNet3D

if TYPE_CHECKING:
    from vidkd.config import MethodConfig


def soft_kl(target_logits: Tensor, input_logits: Tensor, tau: float) -> Tensor:
    """KL(softmax(target / tau) || softmax(input / tau)), summed over classes, batch mean.

    The target side is detached: it is a constant for the loss.
    """
    target = F.softmax(target_logits.detach() / tau, dim=1)
    log_input = F.log_softmax(input_logits / tau, dim=1)
    return F.kl_div(log_input, target, reduction="batchmean")


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    tau: float = 10.0,
    alpha: float = 0.1,
    tau_squared: bool = False,
) -> dict[str, Tensor]:
    """Hinton KD: ``loss = ce + alpha * [tau^2] * kl``; returns ``loss``, ``ce``, ``kl``."""
    ce = F.cross_entropy(student_logits, labels)
    kl = soft_kl(teacher_logits, student_logits, tau)
    weight = alpha * (tau * tau if tau_squared else 1.0)
    return {"loss": ce + weight * kl, "ce": ce, "kl": kl}


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class KD(Method):
    """Student trained against a frozen teacher network of any depth."""

    needs_teacher = True

    def __init__(
        self, student: ResNet3D, teacher: nn.Module, tau: float, alpha: float, tau_squared: bool
    ) -> None:
        super().__init__(student)
        self.teacher = freeze(teacher)
        self.tau, self.alpha, self.tau_squared = tau, alpha, tau_squared

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> KD:
        if teacher is None:
            raise ValueError("kd needs a teacher network")
        return cls(student, teacher, config.tau, config.alpha, config.kd_tau_squared)

    def train(self, mode: bool = True) -> KD:
        super().train(mode)
        self.teacher.eval()  # the teacher's BN statistics stay frozen
        return self

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(clips)
        student_logits = self.student(clips)
        return kd_loss(student_logits, teacher_logits, labels, self.tau, self.alpha, self.tau_squared)
