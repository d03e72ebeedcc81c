"""``baseline_da``: the baseline loss with the full SKD-SRL augmentation set (Table II)."""

from __future__ import annotations

from vidkd.methods.baseline import Baseline


class BaselineDA(Baseline):
    """L = CE(y, softmax(FC(f(T(x))))) with T the SPEC augmentation set."""

    full_augment = True
