from vidkd.models.resnet3d import ResNet3D, resnet3d

__all__ = ["ResNet3D", "resnet3d"]
