"""What decides which model is kept and which numbers are printed, checked on one real run.

The run trains a tiny network for real, but validation is scripted: a fake ``evaluate``
returns hand-chosen video and clip top-1 values (which disagree on purpose), records the
student it was given, and leaves it in eval mode as a careless evaluator would. The
learning rates, the ``on_validation`` calls, the student scored on the test split and the
dropout during training are then compared with answers worked out here by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import _tiny_config

from vidkd.config import config_from_dict
from vidkd.engine import checkpoint
from vidkd.engine import train as train_module
from vidkd.engine.evaluate import EvalResult
from vidkd.methods import METHODS

EPOCHS = 6
PATIENCE = 2
# validation video top-1 drives the schedule, the hook and model selection; clip top-1
# (and "lower is better") would each give other learning rates
VAL_VIDEO_TOP1 = [50.0, 40.0, 40.0, 60.0, 60.0, 55.0]
VAL_CLIP_TOP1 = [50.0, 60.0, 70.0, 40.0, 30.0, 80.0]
# the paper's rule with patience 2, max mode, on VAL_VIDEO_TOP1: epochs 2 and 3 do not
# improve -> lr / 10 from epoch 4; epoch 5 equals the best (not an improvement)
EXPECTED_LR = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
EXPECTED_IMPROVED = [True, False, False, True, False, False]
BEST_EPOCH = 4


def result(video_top1: float, clip_top1: float) -> EvalResult:
    return EvalResult(clip_top1=clip_top1, clip_top5=100.0, video_top1=video_top1,
                      video_top5=100.0, num_videos=2, num_clips=1, failed=[], top_k=3)


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory, synthetic_cache) -> dict[str, Any]:
    return _scripted(tmp_path_factory.mktemp("scripted"), synthetic_cache, "best")


@pytest.fixture(scope="module")
def scripted_last_run(tmp_path_factory, synthetic_cache) -> dict[str, Any]:
    return _scripted(tmp_path_factory.mktemp("scripted-last"), synthetic_cache, "last")


def _scripted(out: Path, synthetic_cache: Path, student: str) -> dict[str, Any]:
    cfg = config_from_dict(_tiny_config(
        synthetic_cache, out, name="scripted", train={"epochs": EPOCHS},
        model={"dropout": 0.5}, optim={"plateau_patience": PATIENCE}, eval={"student": student},
    ))
    seen: dict[str, Any] = {"val_students": [], "test_students": [], "improved": [],
                            "dropout_zeroed": [], "dropout_training": []}

    def fake_evaluate(model, loader, num_classes, device, *args, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.eval()  # and never back: the loop must switch to training mode itself
        calls = len(seen["val_students"])
        if calls < EPOCHS:
            seen["val_students"].append(weights)
            return result(VAL_VIDEO_TOP1[calls], VAL_CLIP_TOP1[calls])
        seen["test_students"].append(weights)
        return result(33.0, 33.0)

    def recording_on_validation(self, improved: bool) -> None:
        seen["improved"].append(improved)
        original_on_validation(self, improved)

    def dropout_hook(module, inputs, output) -> None:
        kept = inputs[0] != 0
        seen["dropout_training"].append(module.training)
        seen["dropout_zeroed"].append(float((output[kept] == 0).float().mean()))

    def build_student(*args, **kwargs):
        student = original_build_student(*args, **kwargs)
        student.dropout.register_forward_hook(dropout_hook)
        return student

    method_class = METHODS["baseline"]
    original_on_validation = method_class.on_validation
    original_build_student = train_module.build_student
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "evaluate", fake_evaluate)
        patch.setattr(train_module, "build_student", build_student)
        patch.setattr(method_class, "on_validation", recording_on_validation)
        summary = train_module.train(cfg, progress=False)
    run = Path(out) / "scripted"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seen["epochs"] = [r for r in records if r["kind"] == "epoch"]
    seen["summary"] = summary
    seen["results"] = json.loads((run / "results.json").read_text())
    seen["run"] = run
    return seen


def test_schedule_steps_on_validation_video_top1_in_max_mode(scripted_run):
    assert [r["lr"] for r in scripted_run["epochs"]] == pytest.approx(EXPECTED_LR, rel=1e-12)
    assert [r["val_video_top1"] for r in scripted_run["epochs"]] == VAL_VIDEO_TOP1
    assert scripted_run["results"]["schedule"]["lr_drops_after_epochs"] == [3, 6]
    assert scripted_run["results"]["schedule"]["rule"].startswith(
        "plateau: lr 0.01 x0.1 after 2 validations in a row without val video top-1 above the best")


def test_on_validation_gets_whether_validation_improved(scripted_run):
    assert scripted_run["improved"] == EXPECTED_IMPROVED


def test_test_split_scores_the_best_validation_student(scripted_run):
    assert scripted_run["summary"]["best_epoch"] == BEST_EPOCH
    assert scripted_run["summary"]["best_val_video_top1"] == 60.0
    (tested,) = scripted_run["test_students"]
    best = scripted_run["val_students"][BEST_EPOCH - 1]
    last = scripted_run["val_students"][-1]
    assert tested.keys() == best.keys()
    assert all(torch.equal(tested[k], best[k]) for k in best)
    assert not all(torch.equal(last[k], best[k]) for k in best)  # training moved on after it
    # `vidkd eval RUN` and compare's confusion matrices score the same file
    assert scripted_run["results"]["tested_student"] == "best_student.safetensors"
    assert checkpoint.tested_student_file(scripted_run["run"]) == scripted_run["run"] / "best_student.safetensors"


def test_eval_student_last_scores_the_end_of_the_schedule(scripted_last_run):
    """eval.student=last: the test split scores the weights after the last epoch, although
    validation peaked at epoch 4 (best_student.safetensors still holds that one)."""
    run = scripted_last_run["run"]
    (tested,) = scripted_last_run["test_students"]
    last = scripted_last_run["val_students"][-1]  # the last epoch's validation saw the final weights
    best = scripted_last_run["val_students"][BEST_EPOCH - 1]
    assert all(torch.equal(tested[k], last[k]) for k in last)
    assert not all(torch.equal(tested[k], best[k]) for k in best)
    assert scripted_last_run["summary"]["best_epoch"] == BEST_EPOCH
    assert scripted_last_run["results"]["tested_student"] == "student.safetensors"
    assert checkpoint.tested_student_file(run) == run / "student.safetensors"
    # a results.json that is damaged (or not written yet): the run's config.yaml decides
    (run / "results.json").write_text('{"tested_student": "../../elsewhere"')
    assert checkpoint.tested_student_file(run) == run / "student.safetensors"


def test_dropout_is_active_in_every_training_step(scripted_run):
    steps = len(scripted_run["dropout_training"])
    assert steps >= EPOCHS  # the student's dropout ran in every epoch
    assert all(scripted_run["dropout_training"])
    zeroed = scripted_run["dropout_zeroed"]
    assert all(0.2 < fraction < 0.8 for fraction in zeroed), zeroed  # p = 0.5


def test_results_state_videos_and_clips_per_step(scripted_run):
    assert scripted_run["results"]["batch"] == {
        "videos_per_device_step": 4, "clips_per_device_step": 4, "devices": 1,
        "videos_per_step": 4, "clips_per_step": 4,
    }
