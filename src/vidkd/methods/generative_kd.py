"""Generative model-based feature knowledge distillation (AAAI 2024; SPEC "Methods" 7).

Two phases, two method names. F is the last-stage feature map (N, C, T, H, W), A = att(F)
the channel x time attention in (0, 1), F-hat a CVAE reconstruction, mu and log sigma^2
the CVAE posterior, logits = FC(pool(F * A rescaled to keep sum F)).

``generative_kd_teacher`` (phase 1, feature representation), on the teacher:

    L_cvae = MSE(F-hat, F) + 0.1 * KL(N(mu, sigma^2) || N(A, I))
    L      = CE(y, logits) + L_cvae

F is the CVAE's data (a constant target); A keeps its gradient, so the prior mean and the
CVAE's condition shape the attention module ("a generative model-based attention module is
trained to represent feature semantics"). The shipped file holds encoder, attention, CVAE
and classifier.

``generative_kd`` (phase 2, generative-based feature distillation), student s against the
frozen phase-1 teacher t, one forward and one backward per batch:

    L_cvae,s = MSE(F-hat_s, F_s) + 0.1 * KL(N(mu_s, sigma_s^2) || N(A_s, I))
    L_gen    = MSE(F-hat_s, F-hat_t)                  F-hat_t: teacher CVAE on (F_s, A_s)
    L_att    = MSE(A_s, A_t)
    L_rec    = MSE(dec_s(z, A_s), F_s),  z ~ N(A_s, I)
    L        = CE(y, logits_s) + w(e) * L_rec + beta * L_att + L_cvae,s + 0.01 * L_gen

with beta = 0.1 and w(e) = 0.5 * min(e + 1, 20) / 20 at 0-based epoch e. As in the authors'
code (``aaai24/Generative-based-KD``, ``train_Top_I3D_KD.py``), the CVAE terms train only
the student CVAE (their stage 1 freezes the network: here F_s and A_s enter the CVAE
detached) and the other terms train only the network (their stage 2 freezes the CVAE:
here L_rec runs the decoder with detached weights); both CVAEs see the student's map and
attention and share one noise draw. The student's 1x1x1 adapter (when the widths differ)
lifts F_s to the teacher's width, so A_s and A_t, F-hat_s and F-hat_t have one shape. The
shipped student keeps encoder, adapter, attention and classifier; the CVAE is training-only.
One deviation: the authors train the student CVAE with Adam (lr 1e-4), here it shares the
run's SGD (``optim.*``) with the network, so that one optimizer state is checkpointed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vidkd.errors import VidkdError
from vidkd.methods.base import Method
from vidkd.methods.kd import freeze
from vidkd.models.generative import AttentionResNet3D, ConditionalVAE
from vidkd.models.resnet3d import ResNet3D

if TYPE_CHECKING:
    from vidkd.config import MethodConfig


def gaussian_kl_to_attention(mean: Tensor, log_var: Tensor, attention: Tensor) -> Tensor:
    """KL(N(mu, diag sigma^2) || N(A, I)), averaged over the batch and the C x T latents.

    Closed form per latent element: 0.5 * (sigma^2 + (mu - A)^2 - 1 - log sigma^2). The mean
    (not the sum) over latent elements follows the authors' ``loss_cvae``.
    """
    dtype = torch.promote_types(mean.dtype, torch.float32)  # exp of bf16 is too coarse
    mean, log_var, attention = mean.to(dtype), log_var.to(dtype), attention.to(dtype)
    per_element = 0.5 * (log_var.exp() + (mean - attention).pow(2) - 1.0 - log_var)
    return per_element.mean()


def cvae_loss(
    reconstruction: Tensor, features: Tensor, mean: Tensor, log_var: Tensor, attention: Tensor,
    kl_weight: float = 0.1,
) -> dict[str, Tensor]:
    """L_cvae = MSE(F-hat, F) + kl_weight * KL(N(mu, sigma^2) || N(A, I)) (SPEC 7).

    Returns ``loss``, ``mse``, ``kl``. Nothing is detached here: pass F (and A) detached where
    they are constants.
    """
    mse = F.mse_loss(reconstruction, features.to(reconstruction.dtype))
    kl = gaussian_kl_to_attention(mean, log_var, attention)
    return {"loss": mse + kl_weight * kl, "mse": mse, "kl": kl}


def feature_representation_loss(
    logits: Tensor, labels: Tensor, reconstruction: Tensor, features: Tensor, mean: Tensor,
    log_var: Tensor, attention: Tensor, kl_weight: float = 0.1,
) -> dict[str, Tensor]:
    """Phase 1: L = CE(y, logits) + MSE(F-hat, stopgrad F) + kl_weight * KL(N(mu, s^2) || N(A, I)).

    Returns ``loss``, ``ce``, ``cvae_mse``, ``cvae_kl``. F is detached (the CVAE's data); A
    is not (the prior mean trains the attention module).
    """
    ce = F.cross_entropy(logits, labels)
    cvae = cvae_loss(reconstruction, features.detach(), mean, log_var, attention, kl_weight)
    return {"loss": ce + cvae["loss"], "ce": ce, "cvae_mse": cvae["mse"], "cvae_kl": cvae["kl"]}


def generative_kd_loss(
    logits: Tensor,
    labels: Tensor,
    student_attention: Tensor,
    teacher_attention: Tensor,
    features: Tensor,
    generated: Tensor,
    reconstruction: Tensor,
    teacher_reconstruction: Tensor,
    mean: Tensor,
    log_var: Tensor,
    recon_weight: float,
    attention_weight: float = 0.1,
    generative_weight: float = 0.01,
    kl_weight: float = 0.1,
) -> dict[str, Tensor]:
    """Phase 2 (module docstring): ``loss = ce + recon_weight * recon + attention_weight *
    attention_kd + cvae_mse + kl_weight * cvae_kl + generative_weight * generative_kd``.

    ``features`` F_s; ``generated`` the student decoder's output from z ~ N(A_s, I);
    ``reconstruction``, ``mean``, ``log_var`` the student CVAE on (F_s, A_s);
    ``teacher_reconstruction`` the teacher CVAE on the same. ``recon_weight`` is the ramped
    w(e). Teacher tensors are constants (detached here), and so are F_s and A_s inside the
    CVAE terms; ``recon`` keeps the gradient to both ``generated`` and F_s.
    Returns ``loss``, ``ce``, ``recon``, ``attention_kd``, ``cvae_mse``, ``cvae_kl``,
    ``generative_kd``.
    """
    ce = F.cross_entropy(logits, labels)
    recon = F.mse_loss(generated, features.to(generated.dtype))
    attention_kd = F.mse_loss(student_attention, teacher_attention.detach())
    cvae = cvae_loss(reconstruction, features.detach(), mean, log_var, student_attention.detach(),
                     kl_weight)
    generative_kd = F.mse_loss(reconstruction, teacher_reconstruction.detach())
    loss = (ce + recon_weight * recon + attention_weight * attention_kd + cvae["loss"]
            + generative_weight * generative_kd)
    return {"loss": loss, "ce": ce, "recon": recon, "attention_kd": attention_kd,
            "cvae_mse": cvae["mse"], "cvae_kl": cvae["kl"], "generative_kd": generative_kd}


def recon_ramp(epoch: int, ramp_epochs: int = 20) -> float:
    """Share of the reconstruction weight at 0-based ``epoch``: min(epoch + 1, ramp) / ramp.

    The authors' code weighs epoch k (1-based) by min(k, 20) / 20: 1/20 in the first epoch,
    full from the 20th on.
    """
    return min(epoch + 1, ramp_epochs) / ramp_epochs


class GenerativeKDTeacher(Method):
    """Phase 1: the teacher network with its attention module and CVAE, CE + L_cvae."""

    full_augment = False  # crop + flip, as the authors' code (multi-scale crop + flip)

    def __init__(self, student: ResNet3D, kl_weight: float = 0.1) -> None:
        super().__init__(AttentionResNet3D(student, student.fc.out_features, cvae=True))
        self.kl_weight = kl_weight

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> GenerativeKDTeacher:
        return cls(student, config.cvae_kl_weight)

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        network = self.student
        features = network.feature_map(clips)
        attention = network.attention(features)
        logits = network.classify(features, attention)
        reconstruction, mean, log_var = network.cvae(features.detach(), attention)
        return feature_representation_loss(
            logits, labels, reconstruction, features, mean, log_var, attention, self.kl_weight
        )

    def student_description(self) -> dict[str, Any]:
        return self.student.description()


def phase_one_problem(teacher: nn.Module) -> str | None:
    """Why ``teacher`` is not a phase-1 network (None when it is)."""
    if not isinstance(teacher, AttentionResNet3D):
        return "it holds a plain 3D ResNet, without attention module and CVAE"
    if teacher.cvae is None:
        return "it holds an attention network without CVAE (a generative_kd student)"
    return None


class GenerativeKD(Method):
    """Phase 2: a student with its own attention module and CVAE learns from a frozen
    phase-1 teacher (module docstring)."""

    needs_teacher = True
    full_augment = False

    def __init__(
        self,
        student: ResNet3D,
        teacher: AttentionResNet3D,
        recon_weight: float = 0.5,
        recon_ramp_epochs: int = 20,
        attention_weight: float = 0.1,
        generative_weight: float = 0.01,
        kl_weight: float = 0.1,
    ) -> None:
        problem = phase_one_problem(teacher)
        if problem is not None:
            raise TypeError(f"generative_kd needs a phase-1 teacher: {problem}")
        super().__init__(
            AttentionResNet3D(student, student.fc.out_features, channels=teacher.channels)
        )
        self.teacher = freeze(teacher)
        self.cvae = ConditionalVAE(teacher.channels)
        self.recon_weight, self.recon_ramp_epochs = recon_weight, recon_ramp_epochs
        self.attention_weight, self.generative_weight = attention_weight, generative_weight
        self.kl_weight = kl_weight
        self.epoch = 0

    @classmethod
    def from_config(
        cls, student: ResNet3D, config: MethodConfig, teacher: nn.Module | None = None
    ) -> GenerativeKD:
        if teacher is None:
            raise ValueError("generative_kd needs the phase-1 teacher network")
        path = Path(config.teacher.checkpoint or "?")
        problem = phase_one_problem(teacher)
        if problem is not None:
            raise VidkdError(
                f"teacher checkpoint {path} is not a phase-1 generative KD teacher ({problem}); "
                "train one with method.name=generative_kd_teacher (e.g. "
                "configs/demo/generative_kd_teacher.yaml) and set method.teacher.checkpoint to "
                "the student file its run tested (results.json: tested_student)"
            )
        if not isinstance(teacher, AttentionResNet3D):  # phase_one_problem said it is
            raise TypeError(type(teacher).__name__)
        if teacher.encoder.no_max_pool != student.no_max_pool:
            raise VidkdError(
                f"teacher checkpoint {path} was trained with model.no_max_pool="
                f"{str(teacher.encoder.no_max_pool).lower()}, the student has "
                f"{str(student.no_max_pool).lower()}; their feature maps must have one size, so "
                "use the teacher's setting"
            )
        # the stem's temporal output size depends on its stride and on its kernel's parity
        stems = [(net.conv1.kernel_size[0], net.conv1.stride[0]) for net in (teacher.encoder, student)]
        if len({(size % 2, stride) for size, stride in stems}) > 1:
            (t_size, t_stride), (s_size, s_stride) = stems
            raise VidkdError(
                f"teacher checkpoint {path} was trained with model.conv1_t_size={t_size} and "
                f"model.conv1_t_stride={t_stride}, the student has {s_size} and {s_stride}; "
                "their feature maps must have one size, so use the teacher's settings"
            )
        return cls(
            student, teacher, config.recon_weight, config.recon_ramp_epochs,
            config.attention_kd_weight, config.generative_kd_weight, config.cvae_kl_weight,
        )

    def train(self, mode: bool = True) -> GenerativeKD:
        super().train(mode)
        self.teacher.eval()  # the teacher's BN statistics stay frozen
        return self

    @property
    def current_recon_weight(self) -> float:
        """w(e) = recon_weight * min(e + 1, ramp) / ramp for the current epoch e."""
        return self.recon_weight * recon_ramp(self.epoch, self.recon_ramp_epochs)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def training_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher_features = self.teacher.feature_map(clips)
            teacher_attention = self.teacher.attention(teacher_features)
        features = self.student.feature_map(clips)
        attention = self.student.attention(features)
        logits = self.student.classify(features, attention)
        # CVAE terms: the student's map and attention are the data (network frozen)
        data, condition = features.detach(), attention.detach()
        noise = torch.randn_like(condition)  # one draw for both CVAEs
        reconstruction, mean, log_var = self.cvae(data, condition, noise)
        with torch.no_grad():
            teacher_reconstruction, _, _ = self.teacher.cvae(data, condition, noise)
        # reconstruction term: decode z ~ N(A_s, I) with the decoder's weights held constant
        latent = attention + torch.randn_like(attention)
        constant_decoder = {name: p.detach() for name, p in self.cvae.decoder.named_parameters()}
        generated = functional_call(
            self.cvae.decoder, constant_decoder, (latent, attention, tuple(features.shape[-2:]))
        )
        recon_weight = self.current_recon_weight
        losses = generative_kd_loss(
            logits, labels, attention, teacher_attention, features, generated, reconstruction,
            teacher_reconstruction, mean, log_var, recon_weight, self.attention_weight,
            self.generative_weight, self.kl_weight,
        )
        losses["recon_weight"] = logits.new_tensor(recon_weight)  # logged: the ramp per epoch
        return losses

    def student_description(self) -> dict[str, Any]:
        return self.student.description()
