"""Generative model-based feature KD (SPEC "Methods" 7): the losses against hand values,
gradient isolation of each term, the reconstruction ramp and its resume, short training runs,
the shipped files, and the phase-1 file checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import sgd_steps
from safetensors import safe_open
from torch import Tensor, nn

from vidkd.config import config_from_dict
from vidkd.engine.checkpoint import load_student, save_student
from vidkd.engine.train import build_method, train
from vidkd.errors import VidkdError
from vidkd.methods import (
    METHODS,
    GenerativeKD,
    GenerativeKDTeacher,
    cvae_loss,
    feature_representation_loss,
    generative_kd_loss,
)
from vidkd.methods.generative_kd import gaussian_kl_to_attention, recon_ramp
from vidkd.models import AttentionResNet3D, resnet3d

NUM_CLASSES = 4
CLIP_SHAPE = (3, 4, 32, 32)  # C, T, H, W
TINY = 0.125


# ---- plain-math references ------------------------------------------------------------

def flat(tensor: Tensor) -> list[float]:
    return tensor.detach().flatten().tolist()


def mse(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)


def mean_ce(rows: list[list[float]], labels: list[int]) -> float:
    total = 0.0
    for row, label in zip(rows, labels, strict=True):
        log_norm = math.log(sum(math.exp(v) for v in row))
        total += log_norm - row[label]
    return total / len(rows)


def normal_kl(mu1: float, sigma1: float, mu2: float, sigma2: float) -> float:
    """KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)), the textbook univariate closed form."""
    return (math.log(sigma2 / sigma1) + (sigma1**2 + (mu1 - mu2) ** 2) / (2 * sigma2**2)
            - 0.5)


def hand_kl(mean: Tensor, log_var: Tensor, attention: Tensor) -> float:
    """KL(N(mu, diag sigma^2) || N(A, I)), mean over batch and C x T latent elements."""
    values = [normal_kl(m, math.exp(0.5 * lv), a, 1.0)
              for m, lv, a in zip(flat(mean), flat(log_var), flat(attention), strict=True)]
    return sum(values) / len(values)


def t(values: Any, requires_grad: bool = False) -> Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


# Small inputs: 2 samples, C = 2, T = 2, H x W = 1 x 2; 3 classes
LOGITS = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
LABELS = [1, 2]
MEAN = [[[0.3, -0.2], [1.0, 0.5]], [[-0.7, 0.1], [0.2, 0.9]]]
LOG_VAR = [[[0.0, -0.5], [0.4, -1.2]], [[0.8, 0.1], [-0.3, 0.0]]]
ATT_S = [[[0.2, 0.7], [0.9, 0.4]], [[0.5, 0.1], [0.6, 0.3]]]
ATT_T = [[[0.3, 0.6], [0.8, 0.5]], [[0.4, 0.2], [0.9, 0.1]]]


def feature_tensors(seed: int = 0) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 2, 2, 1, 2)
    return {name: torch.rand(shape, generator=generator, dtype=torch.float64)
            for name in ("features", "generated", "reconstruction", "teacher_reconstruction")}


# ---- KL and L_cvae ------------------------------------------------------------------------

def test_kl_reference_on_trivial_numbers() -> None:
    assert normal_kl(0.0, 1.0, 0.0, 1.0) == 0.0
    assert normal_kl(1.0, 1.0, 0.0, 1.0) == pytest.approx(0.5)
    assert normal_kl(0.0, math.exp(0.5), 0.0, 1.0) == pytest.approx(0.5 * (math.e - 2))


def test_kl_matches_the_closed_form_for_diagonal_gaussians_with_prior_mean_a() -> None:
    value = gaussian_kl_to_attention(t(MEAN), t(LOG_VAR), t(ATT_S)).item()
    assert value == pytest.approx(hand_kl(t(MEAN), t(LOG_VAR), t(ATT_S)), rel=1e-12)
    # torch.distributions agrees, and the prior is N(A, I), not N(0, I)
    posterior = torch.distributions.Normal(t(MEAN), torch.exp(0.5 * t(LOG_VAR)))
    prior = torch.distributions.Normal(t(ATT_S), torch.ones(2, 2, 2, dtype=torch.float64))
    assert value == pytest.approx(torch.distributions.kl_divergence(posterior, prior).mean().item())
    standard = hand_kl(t(MEAN), t(LOG_VAR), torch.zeros(2, 2, 2))
    assert abs(value - standard) > 1e-3


def test_cvae_loss_is_mse_plus_weighted_kl() -> None:
    tensors = feature_tensors()
    for kl_weight in (0.1, 1.0):
        out = cvae_loss(tensors["reconstruction"], tensors["features"], t(MEAN), t(LOG_VAR),
                        t(ATT_S), kl_weight)
        expected_mse = mse(flat(tensors["reconstruction"]), flat(tensors["features"]))
        expected_kl = hand_kl(t(MEAN), t(LOG_VAR), t(ATT_S))
        assert set(out) == {"loss", "mse", "kl"}
        assert out["mse"].item() == pytest.approx(expected_mse, rel=1e-12)
        assert out["kl"].item() == pytest.approx(expected_kl, rel=1e-12)
        assert out["loss"].item() == pytest.approx(expected_mse + kl_weight * expected_kl,
                                                   rel=1e-12)
    default = cvae_loss(tensors["reconstruction"], tensors["features"], t(MEAN), t(LOG_VAR),
                        t(ATT_S))
    assert default["loss"].item() == pytest.approx(
        default["mse"].item() + 0.1 * default["kl"].item(), rel=1e-12)


# ---- phase-1 loss ---------------------------------------------------------------------------

def test_feature_representation_loss_terms_and_gradients() -> None:
    tensors = feature_tensors()
    features = tensors["features"].clone().requires_grad_(True)
    attention = t(ATT_S, requires_grad=True)
    mean = t(MEAN, requires_grad=True)
    out = feature_representation_loss(
        t(LOGITS), torch.tensor(LABELS), tensors["reconstruction"], features, mean,
        t(LOG_VAR), attention, kl_weight=0.1)
    ce = mean_ce(LOGITS, LABELS)
    cvae_mse = mse(flat(tensors["reconstruction"]), flat(features))
    kl = hand_kl(t(MEAN), t(LOG_VAR), t(ATT_S))
    assert set(out) == {"loss", "ce", "cvae_mse", "cvae_kl"}
    assert out["ce"].item() == pytest.approx(ce, rel=1e-12)
    assert out["cvae_mse"].item() == pytest.approx(cvae_mse, rel=1e-12)
    assert out["cvae_kl"].item() == pytest.approx(kl, rel=1e-12)
    assert out["loss"].item() == pytest.approx(ce + cvae_mse + 0.1 * kl, rel=1e-12)
    out["loss"].backward()
    assert features.grad is None  # F is the CVAE's data
    # A is the prior mean: d(0.1 * KL)/dA = 0.1 * (A - mu) / n
    n = attention.numel()
    torch.testing.assert_close(attention.grad, 0.1 * (t(ATT_S) - t(MEAN)) / n)
    torch.testing.assert_close(mean.grad, 0.1 * (t(MEAN) - t(ATT_S)) / n)


# ---- phase-2 loss ---------------------------------------------------------------------------

def phase_two_inputs(requires_grad: bool = False) -> dict[str, Tensor]:
    tensors = {k: v.clone().requires_grad_(requires_grad) for k, v in feature_tensors().items()}
    return {
        "logits": t(LOGITS, requires_grad), "labels": torch.tensor(LABELS),
        "student_attention": t(ATT_S, requires_grad),
        "teacher_attention": t(ATT_T, requires_grad), **tensors,
        "mean": t(MEAN, requires_grad), "log_var": t(LOG_VAR, requires_grad),
    }


def hand_phase_two(inputs: dict[str, Tensor], recon_weight: float, beta: float, gen: float,
                   kl_weight: float) -> dict[str, float]:
    ce = mean_ce(LOGITS, LABELS)
    recon = mse(flat(inputs["generated"]), flat(inputs["features"]))
    attention_kd = mse(flat(inputs["student_attention"]), flat(inputs["teacher_attention"]))
    cvae_mse = mse(flat(inputs["reconstruction"]), flat(inputs["features"]))
    cvae_kl = hand_kl(inputs["mean"], inputs["log_var"], inputs["student_attention"])
    generative_kd = mse(flat(inputs["reconstruction"]), flat(inputs["teacher_reconstruction"]))
    loss = (ce + recon_weight * recon + beta * attention_kd + cvae_mse + kl_weight * cvae_kl
            + gen * generative_kd)
    return {"loss": loss, "ce": ce, "recon": recon, "attention_kd": attention_kd,
            "cvae_mse": cvae_mse, "cvae_kl": cvae_kl, "generative_kd": generative_kd}


@pytest.mark.parametrize(("recon_weight", "beta", "gen", "kl_weight"),
                         [(0.025, 0.1, 0.01, 0.1), (0.5, 2.0, 0.3, 1.0)])
def test_generative_kd_loss_matches_every_term(recon_weight: float, beta: float, gen: float,
                                               kl_weight: float) -> None:
    inputs = phase_two_inputs()
    out = generative_kd_loss(**inputs, recon_weight=recon_weight, attention_weight=beta,
                             generative_weight=gen, kl_weight=kl_weight)
    expected = hand_phase_two(inputs, recon_weight, beta, gen, kl_weight)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, rel=1e-12), key
        assert out[key].dim() == 0


def test_generative_kd_loss_defaults_are_the_spec_weights() -> None:
    inputs = phase_two_inputs()
    out = generative_kd_loss(**inputs, recon_weight=0.5)
    assert out["loss"].item() == pytest.approx(
        hand_phase_two(inputs, 0.5, 0.1, 0.01, 0.1)["loss"], rel=1e-12)


def test_generative_kd_loss_gradients_follow_the_detach_rules() -> None:
    inputs = phase_two_inputs(requires_grad=True)
    recon_weight, beta, gen = 0.3, 0.1, 0.01
    out = generative_kd_loss(**inputs, recon_weight=recon_weight, attention_weight=beta,
                             generative_weight=gen, kl_weight=0.1)
    out["loss"].backward()
    # teacher tensors are constants
    assert inputs["teacher_attention"].grad is None
    assert inputs["teacher_reconstruction"].grad is None
    n_map = inputs["features"].numel()
    n_att = inputs["student_attention"].numel()
    f, g = inputs["features"].detach(), inputs["generated"].detach()
    r, rt = inputs["reconstruction"].detach(), inputs["teacher_reconstruction"].detach()
    # F gets gradient from the reconstruction term only (a constant inside L_cvae)
    torch.testing.assert_close(inputs["features"].grad, recon_weight * 2 * (f - g) / n_map)
    torch.testing.assert_close(inputs["generated"].grad, recon_weight * 2 * (g - f) / n_map)
    # A_s from attention distillation only (a constant prior mean inside L_cvae)
    torch.testing.assert_close(inputs["student_attention"].grad,
                               beta * 2 * (t(ATT_S) - t(ATT_T)) / n_att)
    # the student reconstruction from L_cvae's MSE and the generative distillation
    torch.testing.assert_close(inputs["reconstruction"].grad,
                               2 * (r - f) / n_map + gen * 2 * (r - rt) / n_map)


# ---- modules and methods ----------------------------------------------------------------------

def tiny_student(depth: int = 10, width: float = TINY, num_classes: int = NUM_CLASSES):
    return resnet3d(depth, num_classes, width_multiplier=width)


def phase_one(width: float = 2 * TINY, num_classes: int = NUM_CLASSES) -> GenerativeKDTeacher:
    return GenerativeKDTeacher(tiny_student(width=width, num_classes=num_classes))


def phase_two(**kwargs: Any) -> GenerativeKD:
    """A student at 1/8 width against a phase-1 teacher at 1/4 width (adapter 64 -> 128)."""
    return GenerativeKD(tiny_student(), phase_one().student, **kwargs)


def fixed_batch(videos: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(videos, *CLIP_SHAPE, generator=generator)
    return clips, torch.arange(videos) % NUM_CLASSES


def trainable(method: nn.Module) -> list[nn.Parameter]:
    return [p for p in method.parameters() if p.requires_grad]


def test_both_phases_are_registered_methods() -> None:
    assert METHODS["generative_kd_teacher"] is GenerativeKDTeacher
    assert METHODS["generative_kd"] is GenerativeKD
    assert GenerativeKD.needs_teacher and not GenerativeKDTeacher.needs_teacher


def test_phase_one_network_holds_encoder_attention_cvae_and_classifier() -> None:
    method = phase_one()
    assert isinstance(method.student, AttentionResNet3D) and method.student.cvae is not None
    prefixes = {key.split(".")[0] for key in method.student.state_dict()}
    assert prefixes == {"encoder", "attention", "fc", "cvae"}
    assert method.student_description() == {
        "architecture": "attention_resnet3d", "channels": 128, "cvae": True}


def test_phase_two_student_has_adapter_attention_and_classifier_cvae_aside() -> None:
    method = phase_two()
    assert method.student.channels == method.teacher.channels == 128
    assert method.student.encoder.feature_dim == 64
    prefixes = {key.split(".")[0] for key in method.student.state_dict()}
    assert prefixes == {"encoder", "adapter", "attention", "fc"}
    assert method.student.cvae is None and method.cvae.channels == 128
    assert method.student_description() == {
        "architecture": "attention_resnet3d", "channels": 128, "cvae": False}


def groups(method: GenerativeKD) -> dict[str, list[nn.Parameter]]:
    s = method.student
    return {
        "encoder": list(s.encoder.parameters()), "adapter": list(s.adapter.parameters()),
        "attention": list(s.attention.parameters()), "fc": list(s.fc.parameters()),
        "cvae_encoder": list(method.cvae.spatial.parameters())
        + list(method.cvae.encoder.parameters()),
        "cvae_decoder": list(method.cvae.decoder.parameters()),
        "teacher": list(method.teacher.parameters()),
    }


def reached(term: Tensor, parameters: list[nn.Parameter]) -> bool:
    """Whether ``term`` gives any of ``parameters`` a nonzero gradient."""
    wanted = [p for p in parameters if p.requires_grad]
    if not wanted:
        return False
    grads = torch.autograd.grad(term, wanted, retain_graph=True, allow_unused=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_phase_two_gradient_isolation_term_by_term() -> None:
    """CVAE terms train only the student CVAE; the other terms only the student network;
    the teacher gets nothing. Checked on gradients, term by term."""
    torch.manual_seed(0)
    method = phase_two().train()
    method.on_epoch_start(5)
    clips, labels = fixed_batch(4)
    losses = method(clips, labels)
    parts = groups(method)
    expected = {
        "ce": {"encoder", "adapter", "attention", "fc"},
        "recon": {"encoder", "adapter", "attention"},
        "attention_kd": {"encoder", "adapter", "attention"},
        "cvae_mse": {"cvae_encoder", "cvae_decoder"},
        "cvae_kl": {"cvae_encoder"},
        "generative_kd": {"cvae_encoder", "cvae_decoder"},
    }
    for term, receivers in expected.items():
        got = {name for name, params in parts.items() if reached(losses[term], params)}
        assert got == receivers, term
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(not p.requires_grad for p in method.teacher.parameters())


def test_phase_two_teacher_stays_frozen_in_eval_mode() -> None:
    torch.manual_seed(0)
    method = phase_two()
    running = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    assert teacher_ids.isdisjoint(id(p) for p in trainable(method))
    sgd_steps(method, *fixed_batch(4), steps=2)
    assert not any(m.training for m in method.teacher.modules())
    for key, value in method.teacher.state_dict().items():
        assert torch.equal(value, running[key]), key


def test_phase_two_feeds_the_loss_what_the_spec_names(monkeypatch) -> None:
    """A_t from the teacher; both CVAEs on the student's (F, A) with one noise draw; the
    reconstruction term decodes z ~ N(A_s, I) through the student's decoder."""
    import vidkd.methods.generative_kd as module

    torch.manual_seed(0)
    method = phase_two().eval()
    method.on_epoch_start(3)
    captured: dict[str, Any] = {}
    real = module.generative_kd_loss

    def capture(*args: Any) -> dict[str, Tensor]:
        names = ["logits", "labels", "student_attention", "teacher_attention", "features",
                 "generated", "reconstruction", "teacher_reconstruction", "mean", "log_var",
                 "recon_weight", "attention_weight", "generative_weight", "kl_weight"]
        captured.update(zip(names, args, strict=True))
        return real(*args)

    monkeypatch.setattr(module, "generative_kd_loss", capture)
    clips, labels = fixed_batch(3)
    torch.manual_seed(7)
    with torch.no_grad():
        method(clips, labels)
    torch.manual_seed(7)
    noise = torch.randn(3, 128, 1)
    prior_noise = torch.randn(3, 128, 1)
    with torch.no_grad():
        features = method.student.feature_map(clips)
        attention = method.student.attention(features)
        teacher_attention = method.teacher.attention(method.teacher.feature_map(clips))
        reconstruction, mean, log_var = method.cvae(features, attention, noise)
        teacher_reconstruction, _, _ = method.teacher.cvae(features, attention, noise)
        generated = method.cvae.decoder(attention + prior_noise, attention, (1, 1))
    for name, value in {"logits": method.student(clips), "student_attention": attention,
                        "teacher_attention": teacher_attention, "features": features,
                        "reconstruction": reconstruction, "mean": mean, "log_var": log_var,
                        "teacher_reconstruction": teacher_reconstruction,
                        "generated": generated}.items():
        torch.testing.assert_close(captured[name], value, msg=name)
    assert not torch.allclose(captured["reconstruction"], captured["teacher_reconstruction"])
    assert captured["recon_weight"] == pytest.approx(0.5 * 4 / 20)
    assert (captured["attention_weight"], captured["generative_weight"],
            captured["kl_weight"]) == (0.1, 0.01, 0.1)


# ---- the reconstruction ramp --------------------------------------------------------------------

@pytest.mark.parametrize(("epoch", "share"), [(0, 1 / 20), (1, 2 / 20), (9, 10 / 20),
                                              (18, 19 / 20), (19, 1.0), (20, 1.0), (150, 1.0)])
def test_recon_ramp_reaches_full_weight_at_the_20th_epoch(epoch: int, share: float) -> None:
    assert recon_ramp(epoch, 20) == pytest.approx(share)
    method = phase_two()
    method.on_epoch_start(epoch)
    assert method.current_recon_weight == pytest.approx(0.5 * share)


def test_recon_ramp_length_is_a_config_field_and_weights_the_loss() -> None:
    method = phase_two(recon_weight=0.4, recon_ramp_epochs=4)
    clips, labels = fixed_batch(4)
    method.eval()
    for epoch, share in [(0, 0.25), (2, 0.75), (3, 1.0), (7, 1.0)]:
        method.on_epoch_start(epoch)
        with torch.no_grad():
            out = method(clips, labels)
        assert out["recon_weight"].item() == pytest.approx(0.4 * share)
        total = (out["ce"] + 0.4 * share * out["recon"] + 0.1 * out["attention_kd"]
                 + out["cvae_mse"] + 0.1 * out["cvae_kl"] + 0.01 * out["generative_kd"])
        assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_recon_ramp_survives_a_resume_of_the_method_state() -> None:
    method = phase_two(recon_ramp_epochs=20)
    method.on_epoch_start(7)
    state = method.training_state()
    assert json.loads(json.dumps(state)) == state  # plain data, weights_only-safe
    resumed = phase_two(recon_ramp_epochs=20)
    assert resumed.current_recon_weight == pytest.approx(0.5 / 20)
    resumed.load_training_state(state)
    assert resumed.current_recon_weight == pytest.approx(0.5 * 8 / 20)


# ---- short training runs lower the loss ------------------------------------------------------

def test_phase_one_short_run_lowers_its_loss() -> None:
    torch.manual_seed(0)
    method = phase_one()
    history = sgd_steps(method, *fixed_batch(8, seed=1), steps=40)
    first, last = history[0], history[-1]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["ce"] < 0.5 * first["ce"] and last["cvae_kl"] < first["cvae_kl"]
    # the CVAE's target F moves while CE trains the encoder (first steps); then it settles
    # and the reconstruction error falls
    assert last["cvae_mse"] < history[10]["cvae_mse"], (history[10], last)


def test_phase_two_short_run_lowers_its_loss() -> None:
    torch.manual_seed(0)
    method = phase_two()
    method.on_epoch_start(19)  # full reconstruction weight
    history = sgd_steps(method, *fixed_batch(8, seed=1), steps=30)
    first, last = history[0], history[-1]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["ce"] < 0.5 * first["ce"]
    for term in ("cvae_mse", "generative_kd", "recon"):
        assert last[term] < first[term], term


# ---- phase-1 file checks -----------------------------------------------------------------------

def description(depth: int, width: float, num_classes: int) -> dict[str, Any]:
    return {"depth": depth, "num_classes": num_classes, "shortcut": "B", "no_max_pool": False,
            "width_multiplier": width, "dropout": 0.0}


def method_config(checkpoint: str | None, **method: Any):
    return config_from_dict(
        {"model": {"depth": 10, "width_multiplier": TINY},
         "method": {"name": "generative_kd", "teacher": {"checkpoint": checkpoint}, **method}},
        "test",
    )


def ship_phase_one(path: Path, num_classes: int = NUM_CLASSES) -> GenerativeKDTeacher:
    torch.manual_seed(1)
    method = phase_one(num_classes=num_classes)
    save_student(path, method.student, {**description(10, 2 * TINY, num_classes),
                                        **method.student_description()})
    return method


def one_line_error(checkpoint: Path | None) -> str:
    with pytest.raises(VidkdError) as error:
        build_method(method_config(None if checkpoint is None else str(checkpoint)), NUM_CLASSES)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_phase_two_loads_the_phase_one_file_as_a_frozen_teacher(tmp_path: Path) -> None:
    path = tmp_path / "teacher" / "best_student.safetensors"
    shipped = ship_phase_one(path)
    method = build_method(method_config(str(path), attention_kd_weight=0.2,
                                        recon_ramp_epochs=5), NUM_CLASSES)
    assert isinstance(method, GenerativeKD)
    assert (method.attention_weight, method.recon_ramp_epochs) == (0.2, 5)
    for key, value in shipped.student.state_dict().items():
        assert torch.equal(method.teacher.state_dict()[key], value), key
    assert method.teacher.cvae is not None and method.student.channels == 128


def test_missing_phase_one_file_is_one_clear_line(tmp_path: Path) -> None:
    message = one_line_error(tmp_path / "nowhere" / "best_student.safetensors")
    assert "not found" in message and "nowhere" in message and "teacher" in message
    assert "method.teacher.checkpoint" in one_line_error(None)


def test_plain_student_as_phase_one_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_student(path, tiny_student(width=2 * TINY), description(10, 2 * TINY, NUM_CLASSES))
    message = one_line_error(path)
    assert str(path) in message and "plain 3D ResNet" in message
    assert "method.name=generative_kd_teacher" in message


def test_phase_two_student_as_phase_one_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "student.safetensors"
    method = phase_two()
    save_student(path, method.student, {**description(10, TINY, NUM_CLASSES),
                                        **method.student_description()})
    message = one_line_error(path)
    assert str(path) in message and "without CVAE" in message


def test_phase_one_file_with_another_class_count_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "seven.safetensors"
    ship_phase_one(path, num_classes=7)
    message = one_line_error(path)
    assert str(path) in message and "7 classes" in message


def test_phase_one_file_with_another_max_pool_setting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "teacher.safetensors"
    ship_phase_one(path)
    cfg = config_from_dict({"model": {"depth": 10, "width_multiplier": TINY, "no_max_pool": True},
                            "method": {"name": "generative_kd",
                                       "teacher": {"checkpoint": str(path)}}}, "test")
    with pytest.raises(VidkdError, match="no_max_pool"):
        build_method(cfg, NUM_CLASSES)


@pytest.mark.parametrize(("model", "accepted"), [({"conv1_t_stride": 2}, False),
                                                ({"conv1_t_size": 4}, False),
                                                ({"conv1_t_size": 3}, True)])
def test_phase_one_file_with_another_stem_is_refused(tmp_path: Path, model: dict[str, int],
                                                     accepted: bool) -> None:
    """The teacher (Hara's 7-frame stem, stride 1) and the student must give feature maps of
    one temporal size: another stride or an even kernel changes it, a 3-frame kernel does not."""
    path = tmp_path / "teacher.safetensors"
    ship_phase_one(path)
    cfg = config_from_dict({"model": {"depth": 10, "width_multiplier": TINY, **model},
                            "method": {"name": "generative_kd",
                                       "teacher": {"checkpoint": str(path)}}}, "test")
    if accepted:  # the teacher's and the student's feature maps meet in the losses
        method = build_method(cfg, NUM_CLASSES)
        losses = method(torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 1]))
        assert torch.isfinite(losses["loss"])
    else:
        with pytest.raises(VidkdError, match="conv1_t_size=7 and model.conv1_t_stride=1"):
            build_method(cfg, NUM_CLASSES)


def test_new_config_fields_are_range_checked() -> None:
    for key, value in [("attention_kd_weight", -0.1), ("generative_kd_weight", -1.0),
                       ("cvae_kl_weight", -0.5), ("recon_weight", -0.5),
                       ("recon_ramp_epochs", 0)]:
        with pytest.raises(VidkdError, match=f"method.{key}"):
            config_from_dict({"method": {"name": "generative_kd", key: value}}, "test")
    defaults = config_from_dict({}, "test").method
    assert (defaults.attention_kd_weight, defaults.generative_kd_weight, defaults.cvae_kl_weight,
            defaults.recon_weight, defaults.recon_ramp_epochs) == (0.1, 0.01, 0.1, 0.5, 20)


# ---- through the engine: resume-exact ramp, shipped student ------------------------------------

@pytest.mark.timeout(600)
def test_phase_two_run_resumes_exactly_and_ships_the_student(tmp_path, synthetic_cache,
                                                             tiny_config) -> None:
    teacher_path = tmp_path / "teacher.safetensors"
    torch.manual_seed(1)
    teacher = phase_one(num_classes=3)
    save_student(teacher_path, teacher.student, {**description(10, 2 * TINY, 3),
                                                 **teacher.student_description()})
    method = {"name": "generative_kd", "recon_ramp_epochs": 3,
              "teacher": {"checkpoint": str(teacher_path)}}
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path / "a", method=method)),
          progress=False)
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path / "b", method=method,
                                       train={"epochs": 1})), progress=False)
    train(config_from_dict(tiny_config(synthetic_cache, tmp_path / "b", method=method)),
          resume=True, progress=False)
    runs = [tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"]
    for run in runs:  # the logged ramp: 1/3 then 2/3 of 0.5, also after the resume
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        weights = [r["train_recon_weight"] for r in records if r["kind"] == "epoch"]
        assert weights == pytest.approx([0.5 / 3, 1.0 / 3])
    a, _ = load_student(runs[0] / "student.safetensors")
    b, meta = load_student(runs[1] / "student.safetensors")
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(value, other, msg=key)
    assert isinstance(b, AttentionResNet3D) and b.cvae is None and meta["channels"] == 128
    assert meta["method"] == "generative_kd" and meta["architecture"] == "attention_resnet3d"
    with safe_open(str(runs[1] / "student.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert not any(k.startswith(("cvae", "teacher", "student.", "module.")) for k in keys)
    assert any(k.startswith("adapter.") for k in keys)
