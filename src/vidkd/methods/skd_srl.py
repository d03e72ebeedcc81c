"""``skd_srl``: self-knowledge distillation with Siamese representation learning.

Vu, Phung & Wang (2022), section III-B. For two views x1, x2 of each video:

    r_i = f(x_i);  p_i = FC(r_i);  z_i = g(r_i);  v_i = q(z_i)                      (Eq. 1)
    L_KL  = KL(P || softmax(p1/tau)) + KL(P || softmax(p2/tau)),
            P = softmax((p1 + p2)/tau) treated as a constant                        (Eq. 2)
    L_sim = 1/2 D(v1, stopgrad(z2)) + 1/2 D(v2, stopgrad(z1))                       (Eq. 3)
    D(v, z) = -(v / ||v||_2) . (z / ||z||_2)                                        (Eq. 4)
    L = CE(y, p1) + CE(y, p2) + alpha * L_KL + beta * L_sim                          (Eq. 5)

Both views run through the encoder as one batch of 2n. Only f and FC are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from vidkd.methods.base import Method
from vidkd.methods.kd import soft_kl
from vidkd.models.heads import Predictor, Projector
from vidkd.models.resnet3d import ResNet3D

if TYPE_CHECKING:
    from vidkd.config import MethodConfig


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """D(v, z) of Eq. 4, averaged over the batch; ``target`` is stop-gradient."""
    return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()


def skd_srl_loss(
    p1: Tensor,
    p2: Tensor,
    z1: Tensor,
    z2: Tensor,
    v1: Tensor,
    v2: Tensor,
    labels: Tensor,
    tau: float = 10.0,
    alpha: float = 0.1,
    beta: float = 1.0,
) -> dict[str, Tensor]:
    """Eq. 5 with its terms: ``loss``, ``ce`` (both views), ``kl`` (Eq. 2), ``sim`` (Eq. 3)."""
    ce = F.cross_entropy(p1, labels) + F.cross_entropy(p2, labels)
    soft_target_logits = (p1 + p2).detach()  # P is a constant (Eq. 2)
    kl = soft_kl(soft_target_logits, p1, tau) + soft_kl(soft_target_logits, p2, tau)
    sim = 0.5 * negative_cosine(v1, z2) + 0.5 * negative_cosine(v2, z1)
    return {"loss": ce + alpha * kl + beta * sim, "ce": ce, "kl": kl, "sim": sim}


class SKDSRL(Method):
    """Student + projector g + predictor q, trained on two views per video."""

    num_views = 2

    def __init__(
        self,
        student: ResNet3D,
        tau: float = 10.0,
        alpha: float = 0.1,
        beta: float = 1.0,
        projector_dim: int = 2048,
        predictor_hidden: int = 512,
    ) -> None:
        super().__init__(student)
        self.projector = Projector(student.feature_dim, projector_dim)
        self.predictor = Predictor(projector_dim, predictor_hidden)
        self.tau, self.alpha, self.beta = tau, alpha, beta

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> SKDSRL:
        return cls(
            student, config.tau, config.alpha, config.beta, config.projector_dim,
            config.predictor_hidden,
        )

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        representation = self.student.forward_features(clips)  # (2n, D), one pass
        logits = self.student.fc(self.student.dropout(representation))
        projection = self.projector(representation)
        prediction = self.predictor(projection)
        # views of one video are adjacent: rows 0, 2, 4... are view 1, rows 1, 3, 5... view 2
        p1, p2 = logits[0::2], logits[1::2]
        z1, z2 = projection[0::2], projection[1::2]
        v1, v2 = prediction[0::2], prediction[1::2]
        return skd_srl_loss(p1, p2, z1, z2, v1, v2, labels, self.tau, self.alpha, self.beta)
