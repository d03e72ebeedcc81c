"""The methods as modules: frozen teachers, self-KD refresh, the 2n-batch forward of SKD-SRL,
short training runs that lower each loss, and the student-only shipped checkpoint (SPEC
"Methods" 1-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import sgd_steps
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

import vidkd.methods.skd_srl as skd_srl_module
from vidkd.config import config_from_dict
from vidkd.engine.checkpoint import load_student, save_student
from vidkd.engine.train import build_method, train
from vidkd.errors import VidkdError
from vidkd.methods import KD, SKDSRL, Baseline, BaselineDA, SelfKD, kd_loss
from vidkd.models.heads import Predictor, Projector
from vidkd.models.resnet3d import ResNet3D, resnet3d

NUM_CLASSES = 4
CLIP_SHAPE = (3, 4, 32, 32)  # C, T, H, W


def tiny_student(depth: int = 10, num_classes: int = NUM_CLASSES) -> ResNet3D:
    return resnet3d(depth, num_classes, width_multiplier=0.125)


def description(depth: int, num_classes: int = NUM_CLASSES) -> dict[str, Any]:
    return {"depth": depth, "num_classes": num_classes, "shortcut": "B", "no_max_pool": False,
            "width_multiplier": 0.125}


def method_config(name: str, **method: Any):
    return config_from_dict(
        {"model": {"depth": 10, "width_multiplier": 0.125},
         "method": {"name": name, "projector_dim": 64, "predictor_hidden": 16, **method}},
        "test",
    )


def fixed_batch(videos: int, views: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(videos * views, *CLIP_SHAPE, generator=generator)
    labels = torch.arange(videos) % NUM_CLASSES
    return clips, labels


def trainable(method: nn.Module) -> list[nn.Parameter]:
    return [p for p in method.parameters() if p.requires_grad]


@pytest.fixture
def teacher_file(tmp_path: Path) -> Path:
    """A trained-teacher stand-in: a depth-18 network shipped with ``save_student``."""
    torch.manual_seed(1)
    path = tmp_path / "teacher" / "student.safetensors"
    save_student(path, tiny_student(depth=18), description(18))
    return path


# ---- method attributes and heads ----------------------------------------------------------

def test_views_and_augmentation_defaults() -> None:
    student = tiny_student()
    assert Baseline(student).num_views == 1 and not Baseline(student).full_augment
    assert BaselineDA(student).num_views == 1 and BaselineDA(student).full_augment
    assert SKDSRL(student, projector_dim=64, predictor_hidden=16).num_views == 2
    assert SelfKD(student, 10.0, 0.1, False).num_views == 1


def test_skd_srl_heads_have_the_spec_shape() -> None:
    """g: one linear layer r -> 2048; q: Linear(2048, 512) + BN + ReLU + Linear(512, 2048)."""
    student = tiny_student()
    method = SKDSRL(student)
    assert isinstance(method.projector, Projector) and isinstance(method.predictor, Predictor)
    projector_layers = [m for m in method.projector.modules() if not isinstance(m, Projector)]
    assert len(projector_layers) == 1 and isinstance(projector_layers[0], nn.Linear)
    assert (projector_layers[0].in_features, projector_layers[0].out_features) == (
        student.feature_dim, 2048)
    layers = list(method.predictor.layers)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features) == (2048, 512)
    assert layers[1].num_features == 512
    assert (layers[3].in_features, layers[3].out_features) == (512, 2048)
    # nothing after the output layer: the predictor's output is the last Linear's output
    features = torch.randn(4, 2048)
    method.predictor.eval()
    torch.testing.assert_close(method.predictor(features),
                               layers[3](layers[2](layers[1](layers[0](features)))))


# ---- frozen teachers (kd, self_kd) --------------------------------------------------------

def kd_method(teacher_file: Path, **method: Any) -> KD:
    cfg = method_config("kd", teacher={"checkpoint": str(teacher_file)}, **method)
    built = build_method(cfg, NUM_CLASSES)
    assert isinstance(built, KD)
    return built


def test_kd_builds_a_teacher_of_another_depth_from_its_checkpoint(teacher_file: Path) -> None:
    method = kd_method(teacher_file, tau=4.0, alpha=0.5, kd_tau_squared=True)
    assert len(method.teacher.layer1) == 2 and len(method.student.layer1) == 1  # 18 vs 10
    saved = load_file(str(teacher_file))
    for key, value in method.teacher.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert (method.tau, method.alpha, method.tau_squared) == (4.0, 0.5, True)
    with pytest.raises(VidkdError, match="classes"):
        build_method(method_config("kd", teacher={"checkpoint": str(teacher_file)}), 7)
    with pytest.raises(VidkdError, match="teacher"):
        build_method(method_config("kd"), NUM_CLASSES)


def test_kd_teacher_keeps_its_own_stem(tmp_path: Path) -> None:
    """A teacher shipped with a (3, 2) stem teaches a student with Hara's 7x7x7 stem: the
    teacher is rebuilt from its file's description, not from the student's config."""
    torch.manual_seed(2)
    path = tmp_path / "teacher" / "student.safetensors"
    teacher = resnet3d(18, NUM_CLASSES, width_multiplier=0.125, conv1_t_size=3, conv1_t_stride=2)
    save_student(path, teacher, {**description(18), "conv1_t_size": 3, "conv1_t_stride": 2})
    method = kd_method(path)
    assert method.teacher.conv1.weight.shape[2:] == (3, 7, 7)
    assert method.teacher.conv1.stride == (2, 2, 2)
    assert method.student.conv1.weight.shape[2:] == (7, 7, 7)
    clips, labels = fixed_batch(4, 1)
    with torch.no_grad():
        expected = teacher.eval()(clips)
        torch.testing.assert_close(method.teacher(clips), expected)
    method.train()
    method(clips, labels)["loss"].backward()
    assert all(p.grad is not None for p in method.student.parameters())


def self_kd_method() -> SelfKD:
    built = build_method(method_config("self_kd", tau=4.0, alpha=0.5), NUM_CLASSES)
    assert isinstance(built, SelfKD)
    return built


@pytest.mark.parametrize("kind", ["kd", "self_kd"])
def test_teacher_gets_no_gradient_and_stays_in_eval(kind: str, teacher_file: Path) -> None:
    method = kd_method(teacher_file) if kind == "kd" else self_kd_method()
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    assert teacher_ids.isdisjoint(id(p) for p in trainable(method))
    assert all(not p.requires_grad for p in method.teacher.parameters())
    method.train()
    assert method.student.training
    assert not any(m.training for m in method.teacher.modules())
    running = {k: v.clone() for k, v in method.teacher.state_dict().items()}

    clips, labels = fixed_batch(4, 1)
    losses = method(clips, labels)
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.student.parameters())
    # eval-mode teacher: its BN statistics did not move during a training forward
    for key, value in method.teacher.state_dict().items():
        torch.testing.assert_close(value, running[key], rtol=0, atol=0)
    # and its logits are what the loss was built from
    with torch.no_grad():
        teacher_logits = method.teacher(clips)
        student_logits = method.student(clips)
    expected = kd_loss(student_logits, teacher_logits, labels, method.tau, method.alpha,
                       method.tau_squared)
    torch.testing.assert_close(losses["kl"].detach(), expected["kl"])


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_self_kd_refreshes_teacher_only_when_validation_improved() -> None:
    torch.manual_seed(0)
    method = self_kd_method()
    assert method.teacher is not method.student
    assert _same_state(method.teacher, method.student)  # starts as a copy of the student
    clips, labels = fixed_batch(4, 1)

    sgd_steps(method, clips, labels, steps=2)
    assert not _same_state(method.teacher, method.student)
    method.on_validation(False)
    assert not _same_state(method.teacher, method.student)
    assert method.refreshes == 0

    method.on_validation(True)
    assert _same_state(method.teacher, method.student)  # weights and BN statistics
    assert method.refreshes == 1
    assert all(not p.requires_grad for p in method.teacher.parameters())
    method.train()
    assert not method.teacher.training
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.teacher(clips), method.student(clips))

    # a copy, not an alias: the next student step leaves the teacher behind
    sgd_steps(method, clips, labels, steps=1)
    assert not _same_state(method.teacher, method.student)


# ---- SKD-SRL: one 2n forward, view pairing --------------------------------------------------

def test_skd_srl_runs_both_views_as_one_batch_of_2n() -> None:
    torch.manual_seed(0)
    method = SKDSRL(tiny_student(), projector_dim=64, predictor_hidden=16).train()
    videos = 3
    clips, labels = fixed_batch(videos, 2)
    forward_batches: list[int] = []
    backward_calls: list[int] = []

    def on_forward(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        forward_batches.append(inputs[0].shape[0])
        output.register_hook(lambda grad: backward_calls.append(grad.shape[0]))

    fc_batches: list[int] = []
    handles = [
        method.student.conv1.register_forward_hook(on_forward),
        method.student.fc.register_forward_hook(
            lambda m, i, o: fc_batches.append(i[0].shape[0])),
    ]
    try:
        losses = method(clips, labels)
        losses["loss"].backward()
    finally:
        for handle in handles:
            handle.remove()
    assert forward_batches == [2 * videos]
    assert backward_calls == [2 * videos]
    assert fc_batches == [2 * videos]


def test_skd_srl_pairs_adjacent_rows_as_two_views_of_one_video(monkeypatch) -> None:
    """Rows 0, 2, 4 are view 1 and rows 1, 3, 5 view 2 of videos 0, 1, 2."""
    torch.manual_seed(0)
    method = SKDSRL(tiny_student(), tau=4.0, alpha=0.5, beta=2.0, projector_dim=64,
                    predictor_hidden=16)
    captured: dict[str, Any] = {}
    real_loss = skd_srl_module.skd_srl_loss

    def capture(p1, p2, z1, z2, v1, v2, labels, tau, alpha, beta):
        captured.update(p1=p1, p2=p2, z1=z1, z2=z2, v1=v1, v2=v2, labels=labels,
                        weights=(tau, alpha, beta))
        return real_loss(p1, p2, z1, z2, v1, v2, labels, tau, alpha, beta)

    monkeypatch.setattr(skd_srl_module, "skd_srl_loss", capture)
    clips, labels = fixed_batch(3, 2)
    method.eval()  # per-sample outputs, so each view can be recomputed on its own
    with torch.no_grad():
        losses = method(clips, labels)
        student = method.student
        r1, r2 = student.forward_features(clips[0::2]), student.forward_features(clips[1::2])
        z1, z2 = method.projector(r1), method.projector(r2)
        expected = {"p1": student(clips[0::2]), "p2": student(clips[1::2]), "z1": z1, "z2": z2,
                    "v1": method.predictor(z1), "v2": method.predictor(z2)}
    for key, value in expected.items():
        torch.testing.assert_close(captured[key], value, msg=key)
    assert torch.equal(captured["labels"], labels)
    assert captured["weights"] == (4.0, 0.5, 2.0)
    assert not torch.allclose(captured["p1"], captured["p2"])
    recomputed = real_loss(*(expected[k] for k in ("p1", "p2", "z1", "z2", "v1", "v2")),
                           labels, 4.0, 0.5, 2.0)
    torch.testing.assert_close(losses["loss"], recomputed["loss"])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_skd_srl_identical_views_give_identical_logits(mode: str, monkeypatch) -> None:
    torch.manual_seed(0)
    method = SKDSRL(tiny_student(), projector_dim=64, predictor_hidden=16)
    method.train(mode == "train")
    captured: dict[str, Tensor] = {}
    real_loss = skd_srl_module.skd_srl_loss

    def capture(p1, p2, *rest):
        captured.update(p1=p1, p2=p2)
        return real_loss(p1, p2, *rest)

    monkeypatch.setattr(skd_srl_module, "skd_srl_loss", capture)
    videos, labels = fixed_batch(3, 1)
    method(videos.repeat_interleave(2, dim=0), labels)
    torch.testing.assert_close(captured["p1"], captured["p2"])
    # and a batch with the views grouped per view (not interleaved) would not pair up
    method(torch.cat([videos, videos.flip(0)]), labels)
    assert not torch.allclose(captured["p1"], captured["p2"])


# ---- a short training run lowers each method's loss ---------------------------------------

@pytest.mark.parametrize("name", ["baseline", "baseline_da", "kd", "self_kd", "skd_srl"])
def test_short_training_run_lowers_the_loss(name: str, teacher_file: Path) -> None:
    torch.manual_seed(0)
    extra = {"teacher": {"checkpoint": str(teacher_file)}} if name == "kd" else {}
    method = build_method(method_config(name, **extra), NUM_CLASSES)
    clips, labels = fixed_batch(8, method.num_views, seed=1)
    history = sgd_steps(method, clips, labels, steps=30)
    first, last = history[0], history[-1]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["ce"] < 0.5 * first["ce"], (first, last)
    if name == "skd_srl":
        assert last["sim"] < first["sim"]


# ---- only the student is shipped ------------------------------------------------------------

def test_skd_srl_run_ships_encoder_and_fc_only(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "name": "skd-srl-tiny",
            "data": {
                "dataset": "synthetic",
                "synthetic": {"num_classes": 3, "train_per_class": 6, "test_per_class": 2,
                              "size": 32, "cache_dir": str(tmp_path / "cache")},
                "clip_len": 4, "short_side": 32, "crop_size": 32, "test_clips": 2,
                "val_clips": 1, "num_workers": 0,
            },
            "model": {"depth": 10, "width_multiplier": 0.125},
            "method": {"name": "skd_srl", "projector_dim": 64, "predictor_hidden": 16},
            "train": {"epochs": 1, "batch_size": 4, "out_dir": str(tmp_path / "runs"),
                      "device": "cpu"},
        },
        "test",
    )
    summary = train(cfg, progress=False)
    assert summary["method"] == "skd_srl"
    run_dir = tmp_path / "runs" / "skd-srl-tiny"
    shipped = run_dir / "student.safetensors"
    expected_keys = set(resnet3d(10, 3, width_multiplier=0.125).state_dict())
    with safe_open(str(shipped), framework="pt") as handle:
        keys = set(handle.keys())
    assert not any(k.startswith(("projector", "predictor", "teacher", "student.", "module."))
                   for k in keys)
    assert keys == expected_keys

    student, meta = load_student(shipped)
    assert meta["depth"] == 10 and meta["num_classes"] == 3 and meta["method"] == "skd_srl"
    student.eval()
    with torch.no_grad():
        assert student(torch.randn(2, 3, 4, 32, 32)).shape == (2, 3)

    # the resumable checkpoint, unlike the shipped file, keeps the training-only heads
    last = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text().strip()
    checkpoint = load_file(str(last / "model.safetensors"))
    assert any(k.startswith("projector.") for k in checkpoint)
    assert any(k.startswith("predictor.") for k in checkpoint)
    shipped_weights = load_file(str(shipped))
    for key, value in shipped_weights.items():
        torch.testing.assert_close(checkpoint[f"student.{key}"], value, rtol=0, atol=0)
