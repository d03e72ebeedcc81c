"""Training methods, one file each; ``METHODS`` maps a config name to its class."""

from __future__ import annotations

from vidkd.methods.base import Method
from vidkd.methods.baseline import Baseline
from vidkd.methods.baseline_da import BaselineDA
from vidkd.methods.frskd import FRSKD, frskd_loss
from vidkd.methods.generative_kd import (
    GenerativeKD,
    GenerativeKDTeacher,
    cvae_loss,
    feature_representation_loss,
    generative_kd_loss,
)
from vidkd.methods.kd import KD, kd_loss
from vidkd.methods.self_kd import SelfKD, self_kd_loss
from vidkd.methods.skd_srl import SKDSRL, skd_srl_loss

METHODS: dict[str, type[Method]] = {
    "baseline": Baseline,
    "baseline_da": BaselineDA,
    "kd": KD,
    "self_kd": SelfKD,
    "skd_srl": SKDSRL,
    "frskd": FRSKD,
    "generative_kd_teacher": GenerativeKDTeacher,
    "generative_kd": GenerativeKD,
}

__all__ = ["METHODS", "Method", "Baseline", "BaselineDA", "KD", "SelfKD", "SKDSRL", "FRSKD",
           "GenerativeKDTeacher", "GenerativeKD", "kd_loss", "self_kd_loss", "skd_srl_loss",
           "frskd_loss", "cvae_loss", "feature_representation_loss", "generative_kd_loss"]
