"""Networks: the 3D ResNet family (Hara et al. 2018), SKD-SRL's training-only heads and the
attention / CVAE modules of generative feature KD."""

from vidkd.models.build import build_from_description
from vidkd.models.generative import (
    AttentionResNet3D,
    ChannelTimeAttention,
    ConditionalVAE,
    attended_features,
)
from vidkd.models.heads import Predictor, Projector
from vidkd.models.resnet3d import ResNet3D, resnet3d

__all__ = ["AttentionResNet3D", "ChannelTimeAttention", "ConditionalVAE", "Predictor",
           "Projector", "ResNet3D", "attended_features", "build_from_description", "resnet3d"]
