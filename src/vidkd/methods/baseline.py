"""``baseline``: cross-entropy with crop + flip only (Table II, first row)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vidkd.methods.base import Method


class Baseline(Method):
    """L = CE(y, softmax(FC(f(x))))."""

    full_augment = False

    def forward(self, clips: Tensor, labels: Tensor) -> dict[str, Tensor]:
        logits = self.student(clips)
        ce = F.cross_entropy(logits, labels)
        return {"loss": ce, "ce": ce}
