"""Training-only heads of SKD-SRL (section III-B): projector g and predictor q.

After SimSiam (Chen & He 2021): the predictor's output layer has no BN and no activation.
"""

from __future__ import annotations

from torch import Tensor, nn


class Projector(nn.Module):
    """g: one linear layer r -> z (2048-d by default)."""

    def __init__(self, in_dim: int, out_dim: int = 2048) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, representation: Tensor) -> Tensor:
        return self.linear(representation)


class Predictor(nn.Module):
    """q: Linear(d, h) + BN + ReLU + Linear(h, d); nothing after the last layer."""

    def __init__(self, dim: int = 2048, hidden_dim: int = 512) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, projection: Tensor) -> Tensor:
        return self.layers(projection)
