"""Learning-rate schedules, epoch by epoch against hand-written expectations."""

from __future__ import annotations

import io
import math

import pytest
import torch

from vidkd.config import OptimConfig, load_config
from vidkd.engine.schedule import LRSchedule
from vidkd.errors import VidkdError


def lrs_for(schedule: LRSchedule, val_top1: list[float]) -> list[float]:
    """The lr each epoch trained with, validating after every epoch."""
    lrs = []
    for epoch, value in enumerate(val_top1):
        lrs.append(schedule.lr_at(epoch))
        schedule.step(value, epoch)
    return lrs


def test_plateau_divides_after_the_tenth_epoch_without_improvement():
    """The paper's rule (SPEC "Optimisation"): drop after the 10th non-improving epoch."""
    values = (
        [10.0] + [10.0] * 10  # epochs 1-11: equal is not an improvement; 10 of them after 1
        + [20.0] + [15.0] * 9  # epoch 12 improves; 9 bad epochs only: no drop
        + [25.0] + [25.0] * 10  # epoch 22 improves, 23-32 do not: drop after 32
        + [5.0]
    )
    expected = [0.01] * 11 + [0.001] * 21 + [0.0001]
    schedule = LRSchedule(OptimConfig(), epochs=len(values))
    assert lrs_for(schedule, values) == pytest.approx(expected, rel=1e-12)
    assert schedule.drops == [11, 32]

    # PyTorch's ReduceLROnPlateau(patience=10) is not this rule: it waits one epoch more
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", 0.1, 10)
    torch_lrs = []
    for value in values[:12]:
        torch_lrs.append(optimizer.param_groups[0]["lr"])
        torch_plateau.step(value)
    assert torch_lrs[11] == 0.01 != expected[11]


def test_plateau_threshold_is_absolute_points():
    cfg = OptimConfig(plateau_patience=2, plateau_threshold=1.0)
    # 50 best; 50.5 is not > 51 (bad 1); 51.5 is (best 51.5); 51.6 and 51.7 are not > 52.5
    values = [50.0, 50.5, 51.5, 51.6, 51.7, 60.0]
    assert lrs_for(LRSchedule(cfg, 6), values) == pytest.approx([0.01] * 5 + [0.001])


def test_plateau_cooldown_and_min_lr():
    cfg = OptimConfig(plateau_patience=1, plateau_cooldown=2, min_lr=5e-4)
    # drop after epoch 2; epochs 3 and 4 cool down; epoch 5 drops again, clamped at min_lr
    values = [50.0, 40.0, 40.0, 40.0, 40.0, 40.0, 40.0]
    expected = [0.01, 0.01, 0.001, 0.001, 0.001, 5e-4, 5e-4]
    assert lrs_for(LRSchedule(cfg, 7), values) == pytest.approx(expected)


def test_warmup_ramps_linearly_and_is_not_counted_by_the_plateau():
    cfg = OptimConfig(plateau_patience=1, warmup_epochs=3)
    values = [50.0, 40.0, 40.0, 40.0, 40.0]  # epochs 2 and 3 are warm-up: not counted
    assert lrs_for(LRSchedule(cfg, 5), values) == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.001])


def test_cosine_from_lr_to_min_lr_after_warmup():
    cfg = OptimConfig(schedule="cosine", lr=0.01, min_lr=0.001, warmup_epochs=1)
    half = 0.5 * (0.01 - 0.001)
    expected = [
        0.01 / 2,  # warm-up epoch: (0 + 1) / (1 + 1) of the first cosine value
        0.01,
        0.001 + half * (1 + math.cos(math.pi / 4)),
        0.001 + half,
        0.001 + half * (1 + math.cos(3 * math.pi / 4)),
    ]
    # validation scores do not move a cosine schedule
    assert lrs_for(LRSchedule(cfg, 5), [90.0, 10.0, 10.0, 10.0, 10.0]) == pytest.approx(expected)


def test_multistep_milestones_count_finished_epochs():
    cfg = OptimConfig(schedule="multistep", milestones=[2, 4], gamma=0.1)
    values = [90.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    assert lrs_for(LRSchedule(cfg, 6), values) == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])


def test_multistep_stops_at_min_lr():
    """0.01 x 0.1 per milestone would reach 1e-4 at epoch 2; min_lr 5e-4 is the floor."""
    cfg = OptimConfig(schedule="multistep", milestones=[1, 2], gamma=0.1, min_lr=5e-4)
    assert lrs_for(LRSchedule(cfg, 4), [10.0] * 4) == pytest.approx([0.01, 0.001, 5e-4, 5e-4])


def test_state_dict_resumes_the_same_learning_rates():
    cfg = OptimConfig(plateau_patience=2, plateau_cooldown=1)
    values = [30.0, 20.0, 20.0, 35.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0]
    unbroken = lrs_for(LRSchedule(cfg, 10), values)
    first = LRSchedule(cfg, 10)
    lrs = lrs_for(first, values[:5])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # checkpoints are read with weights_only=True
    buffer.seek(0)
    resumed = LRSchedule(cfg, 10)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for epoch, value in enumerate(values[5:], start=5):
        lrs.append(resumed.lr_at(epoch))
        resumed.step(value, epoch)
    assert lrs == unbroken and resumed.drops == [3, 6, 9]  # 7 is a cooldown epoch


def test_start_epoch_sets_every_parameter_group():
    optimizer = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                                 {"params": [torch.zeros(1, requires_grad=True)]}], lr=0.5)
    LRSchedule(OptimConfig(warmup_epochs=1), 3).start_epoch(optimizer, 0)
    assert [group["lr"] for group in optimizer.param_groups] == [0.005, 0.005]


def test_defaults_are_the_papers_plateau():
    o = load_config(None).optim
    assert (o.schedule, o.plateau_patience, o.plateau_factor, o.plateau_threshold,
            o.plateau_cooldown, o.warmup_epochs, o.min_lr) == ("plateau", 10, 0.1, 0.0, 0, 0, 0.0)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.schedule=step"], "choose one of plateau, cosine, multistep"),
    (["optim.schedule=multistep"], "'optim.milestones' is \\[\\]; it must be set when"),
    (["optim.schedule=multistep", "optim.milestones=[30, 20]"], "'optim.milestones' .* increasing"),
    (["optim.schedule=multistep", "optim.milestones=30"], "'optim.milestones' must be a list"),
    (["optim.milestones=[30]"], "empty unless optim.schedule is multistep"),
    (["optim.warmup_epochs=200"], "'optim.warmup_epochs' is 200; it must be .* below train.epochs"),
    (["optim.plateau_patience=0"], "'optim.plateau_patience' is 0; it must be at least 1"),
    (["optim.plateau_threshold=-1"], "'optim.plateau_threshold'"),
    (["optim.plateau_cooldown=-1"], "'optim.plateau_cooldown'"),
    (["optim.min_lr=0.01"], "'optim.min_lr' is 0.01; it must be 0 or more and below optim.lr"),
    (["optim.gamma=1"], "'optim.gamma'"),
])
def test_schedule_fields_are_checked(overrides, message):
    with pytest.raises(VidkdError, match=message):
        load_config(None, overrides)


def test_multistep_config_loads():
    o = load_config(None, ["optim.schedule=multistep", "optim.milestones=[30, 60]"]).optim
    assert o.milestones == [30, 60] and LRSchedule(o, 90).lr_at(60) == pytest.approx(1e-4)


def test_reads_a_checkpoint_written_with_torch_reduce_lr_on_plateau():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", 0.1, 1)
    for value in (50.0, 40.0, 40.0, 30.0):  # dropped once (after 2 bad), then 1 bad epoch
        torch_plateau.step(value)
    schedule = LRSchedule(OptimConfig(), 10)
    schedule.load_state_dict(torch_plateau.state_dict())
    assert (schedule.plateau_lr, schedule.best, schedule.bad_validations) == (
        pytest.approx(0.001), 50.0, 1)
