"""``frskd``: Feature Refinement via Self-Knowledge Distillation (Ji et al., CVPR 2021), in 3D.

A self-teacher (:class:`~vidkd.models.self_teacher.SelfTeacher`) refines the classifier's
stage outputs F_1..F_4 into O_1..O_4 and predicts its own logits t; the classifier (logits s)
learns from both (paper Eq. 4-6; SPEC method 6):

    L_ce   = CE(y, s) + CE(y, t)
    L_kd   = tau^2 * KL(softmax(t / tau) || softmax(s / tau)),    t a constant          (Eq. 5)
    L_at   = sum_i mean((a(F_i) - a(O_i))^2),                     O_i a constant        (Eq. 4)
    a(F)   = L2-normalise(channel-mean of F^2, flattened over T x H x W)
    L      = L_ce + alpha * L_kd + beta * L_at                                           (Eq. 6)

The self-teacher is trained by its own CE only (it reads the stage outputs without a
detach, so that CE also reaches the classifier, as in the authors' code). Only the
classifier is kept for inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidkd.methods.base import Method
from vidkd.methods.kd import soft_kl
from vidkd.models.resnet3d import ResNet3D
from vidkd.models.self_teacher import SelfTeacher

if TYPE_CHECKING:
    from vidkd.config import MethodConfig

DEFAULT_BETA = 100.0  # the authors' 2D value; configs set the value chosen for 3D


def attention_map(features: Tensor) -> Tensor:
    """a(F): channel-mean of F^2, flattened over T x H x W, L2-normalised per sample -> (N, THW).

    Computed in at least float32, so that squares of half-precision features cannot overflow.
    """
    features = features.to(torch.promote_types(features.dtype, torch.float32))
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_distance(student_features: Tensor, refined_features: Tensor) -> Tensor:
    """mean((a(F) - a(O))^2) over batch and positions; ``refined_features`` is a constant."""
    difference = attention_map(student_features) - attention_map(refined_features.detach())
    return difference.pow(2).mean()


def frskd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_features: Sequence[Tensor],
    refined_features: Sequence[Tensor],
    labels: Tensor,
    tau: float = 4.0,
    alpha: float = 2.0,
    beta: float = DEFAULT_BETA,
) -> dict[str, Tensor]:
    """Eq. 6 with its terms: ``loss``, ``ce`` (classifier), ``teacher_ce`` (self-teacher),
    ``kd`` (tau^2 * KL, Eq. 5) and ``attention`` (summed over stages, Eq. 4)."""
    if len(student_features) != len(refined_features):
        raise ValueError(
            f"{len(student_features)} stage features but {len(refined_features)} refined maps"
        )
    ce = F.cross_entropy(student_logits, labels)
    teacher_ce = F.cross_entropy(teacher_logits, labels)
    kd = tau * tau * soft_kl(teacher_logits, student_logits, tau)  # soft_kl detaches t
    attention = sum(
        (attention_distance(f, o) for f, o in zip(student_features, refined_features, strict=True)),
        start=student_logits.new_zeros(()),
    )
    loss = ce + teacher_ce + alpha * kd + beta * attention
    return {"loss": loss, "ce": ce, "teacher_ce": teacher_ce, "kd": kd, "attention": attention}


class FRSKD(Method):
    """Classifier + BiFPN-style self-teacher over its four stage outputs (training only)."""

    full_augment = False  # the FRSKD paper trains with standard crop + flip

    def __init__(
        self,
        student: ResNet3D,
        tau: float = 4.0,
        alpha: float = 2.0,
        beta: float = DEFAULT_BETA,
        teacher_width: int = 2,
    ) -> None:
        super().__init__(student)
        self.self_teacher = SelfTeacher(student.stage_channels, student.fc.out_features, teacher_width)
        self.tau, self.alpha, self.beta = tau, alpha, beta

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> FRSKD:
        return cls(student, config.tau, config.alpha, config.beta)

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        stages = self.student.forward_stages(clips)
        student_logits = self.student.pool_and_classify(stages[-1])
        refined, teacher_logits = self.self_teacher(stages)
        return frskd_loss(student_logits, teacher_logits, stages, refined, labels,
                          self.tau, self.alpha, self.beta)
