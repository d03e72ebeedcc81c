"""Networks: the 3D ResNet family (Hara et al. 2018) and SKD-SRL's training-only heads."""

from vidkd.models.heads import Predictor, Projector
from vidkd.models.resnet3d import ResNet3D, resnet3d

__all__ = ["Predictor", "Projector", "ResNet3D", "resnet3d"]
