"""Learning-rate schedules, set once per epoch (SPEC "Optimisation").

``plateau`` is the paper's rule, stated exactly (SKD-SRL section IV-A: "divided by 10 when
validation accuracy has not improved for 10 epochs"):

- a validation *improves* when its video top-1 is above the best so far by more than
  ``plateau_threshold`` points (0 by default: strictly above);
- after the ``plateau_patience``-th validation in a row that does not improve, the lr is
  multiplied by ``plateau_factor`` (never below ``min_lr``) for the next epoch, and the
  count restarts; the ``plateau_cooldown`` validations after a drop are not counted.

PyTorch's ``ReduceLROnPlateau(patience=10)`` differs: it drops after the *11th* such
epoch and, by default, needs a 1e-4 relative gain to count an improvement.

``cosine`` anneals from ``lr`` to ``min_lr`` over the epochs after warm-up; ``multistep``
multiplies ``lr`` by ``gamma`` once for each milestone reached. ``warmup_epochs`` ramps
any of them linearly: epoch ``e < W`` (0-based) runs at ``(e + 1) / (W + 1)`` of its lr.
Validations during warm-up raise the plateau's best but are not counted against it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vidkd.config import OptimConfig


class LRSchedule:
    """The lr of each epoch; ``step`` feeds it each validation video top-1 (in %).

    ``state_dict`` / ``load_state_dict`` carry the plateau's state through a checkpoint,
    so a resumed run continues with the same learning rates.
    """

    def __init__(self, cfg: OptimConfig, epochs: int) -> None:
        self.cfg = cfg
        self.epochs = epochs
        self.plateau_lr = cfg.lr  # the plateau schedule's lr after its drops so far
        self.best = -math.inf
        self.bad_validations = 0  # validations in a row without improvement
        self.cooldown_left = 0
        self.drops: list[int] = []  # 1-based epochs after which the plateau lr was divided

    def lr_at(self, epoch: int) -> float:
        """The lr of 0-based ``epoch`` given the validations seen so far."""
        o = self.cfg
        if o.schedule == "plateau":
            lr = self.plateau_lr
        elif o.schedule == "cosine":
            span = max(self.epochs - o.warmup_epochs, 1)
            progress = min(max(epoch - o.warmup_epochs, 0) / span, 1.0)
            lr = o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # multistep: milestones count finished epochs, as in PyTorch's MultiStepLR
            lr = max(o.lr * o.gamma ** sum(m <= epoch for m in o.milestones), o.min_lr)
        if epoch < o.warmup_epochs:
            lr *= (epoch + 1) / (o.warmup_epochs + 1)
        return lr

    def start_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Set the lr of 0-based ``epoch`` on every parameter group; returns it."""
        lr = self.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self, val_video_top1: float, epoch: int) -> bool:
        """Take the validation after 0-based ``epoch``; True when the plateau lr was divided."""
        o = self.cfg
        if val_video_top1 > self.best + o.plateau_threshold:
            self.best = val_video_top1
            self.bad_validations = 0
        elif self.cooldown_left == 0 and epoch >= o.warmup_epochs:
            self.bad_validations += 1
        self.cooldown_left = max(self.cooldown_left - 1, 0)
        if o.schedule != "plateau" or self.bad_validations < o.plateau_patience:
            return False
        self.plateau_lr = max(self.plateau_lr * o.plateau_factor, o.min_lr)
        self.bad_validations = 0
        self.cooldown_left = o.plateau_cooldown
        self.drops.append(epoch + 1)
        return True

    def describe(self) -> str:
        """One line for ``results.json``: the rule that set this run's learning rates."""
        o = self.cfg
        if o.schedule == "plateau":
            text = (
                f"plateau: lr {o.lr:g} x{o.plateau_factor:g} after {o.plateau_patience} validations "
                f"in a row without val video top-1 above the best by more than "
                f"{o.plateau_threshold:g} points (cooldown {o.plateau_cooldown}, min_lr {o.min_lr:g})"
            )
        elif o.schedule == "cosine":
            span = self.epochs - o.warmup_epochs
            text = f"cosine: lr {o.lr:g} to {o.min_lr:g} over {span} epoch{'s' * (span != 1)}"
        else:
            text = (f"multistep: lr {o.lr:g} x{o.gamma:g} after epochs "
                    f"{', '.join(map(str, o.milestones))} (min_lr {o.min_lr:g})")
        if o.warmup_epochs:
            text += f"; linear warm-up over {o.warmup_epochs} epoch{'s' * (o.warmup_epochs != 1)}"
        return text

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.cfg.schedule, "plateau_lr": self.plateau_lr, "best": self.best,
            "bad_validations": self.bad_validations, "cooldown_left": self.cooldown_left,
            "drops": list(self.drops),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "num_bad_epochs" in state:  # a checkpoint written with torch's ReduceLROnPlateau
            state = {"plateau_lr": state["_last_lr"][0], "best": state["best"],
                     "bad_validations": state["num_bad_epochs"],
                     "cooldown_left": state["cooldown_counter"], "drops": []}
        self.plateau_lr = float(state["plateau_lr"])
        self.best = float(state["best"])
        self.bad_validations = int(state["bad_validations"])
        self.cooldown_left = int(state["cooldown_left"])
        self.drops = list(state.get("drops", []))
