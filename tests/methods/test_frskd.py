"""FRSKD carried to 3D (Ji et al. 2021; SPEC method 6): the self-teacher's shapes and fusion
weights, the loss against a hand computation, the gradients where SPEC detaches, a short
training run, and the shipped student of a run through the real engine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_demo_overrides
from safetensors.torch import load_file
from torch import Tensor, nn

from vidkd.config import config_from_dict, load_config
from vidkd.engine.checkpoint import load_student
from vidkd.engine.train import build_method, train
from vidkd.methods import FRSKD, METHODS, frskd_loss
from vidkd.methods.frskd import attention_map
from vidkd.models.resnet3d import resnet3d
from vidkd.models.self_teacher import (
    FUSION_EPSILON,
    DepthwiseSeparableBlock,
    SelfTeacher,
    WeightedFusion,
)

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 4
TINY_WIDTH = 0.125  # stage widths 8/16/32/64 (x4 for bottlenecks)


def tiny_frskd(depth: int = 10, no_max_pool: bool = False, beta: float = 10.0) -> FRSKD:
    torch.manual_seed(0)
    student = resnet3d(depth, NUM_CLASSES, width_multiplier=TINY_WIDTH, no_max_pool=no_max_pool)
    return FRSKD(student, tau=4.0, alpha=2.0, beta=beta)


def fixed_batch(videos: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(videos, 3, 4, 32, 32, generator=generator), torch.arange(videos) % NUM_CLASSES


def halve(size: int) -> int:
    """Size after a stride-2, kernel-3, padding-1 conv or pool: ceil(size / 2)."""
    return (size - 1) // 2 + 1


# ---- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("depth", "no_max_pool", "clip", "expected_sizes"),
    [
        # SPEC: 8x28x28, 4x14x14, 2x7x7, 1x4x4 at 16x112x112
        (10, False, (16, 112, 112), [(8, 28, 28), (4, 14, 14), (2, 7, 7), (1, 4, 4)]),
        # conv1 stride (1, 2, 2): 5x17x24; max-pool 3x9x12; then ceil halving
        (10, False, (5, 33, 47), [(3, 9, 12), (2, 5, 6), (1, 3, 3), (1, 2, 2)]),
        (18, True, (5, 33, 47), [(5, 17, 24), (3, 9, 12), (2, 5, 6), (1, 3, 3)]),
        (50, False, (5, 33, 47), [(3, 9, 12), (2, 5, 6), (1, 3, 3), (1, 2, 2)]),
        (50, True, (7, 30, 30), [(7, 15, 15), (4, 8, 8), (2, 4, 4), (1, 2, 2)]),
    ],
)
def test_self_teacher_shapes(depth, no_max_pool, clip, expected_sizes) -> None:
    method = tiny_frskd(depth, no_max_pool).eval()
    expansion = 4 if depth >= 50 else 1
    channels = [round(w * TINY_WIDTH) * expansion for w in (64, 128, 256, 512)]
    with torch.no_grad():
        clips = torch.randn(2, 3, *clip)
        stages = method.student.forward_stages(clips)
        refined, teacher_logits = method.self_teacher(stages)
    assert [tuple(f.shape) for f in stages] == [
        (2, c, *size) for c, size in zip(channels, expected_sizes, strict=True)]
    # O_i: stage i's exact T x H x W, d_i = 2 c_i channels
    assert [tuple(o.shape) for o in refined] == [
        (2, 2 * c, *size) for c, size in zip(channels, expected_sizes, strict=True)]
    assert teacher_logits.shape == (2, NUM_CLASSES)
    assert method.self_teacher.dims == tuple(2 * c for c in channels)


def test_sizes_follow_the_ceil_halving_rule() -> None:
    """The expected sizes above, derived from the rule rather than typed in."""
    t, h, w = 5, (33 + 6 - 7) // 2 + 1, (47 + 6 - 7) // 2 + 1
    sizes = []
    for _ in range(4):
        t, h, w = halve(t), halve(h), halve(w)  # max-pool, then layer2..4
        sizes.append((t, h, w))
    assert sizes == [(3, 9, 12), (2, 5, 6), (1, 3, 3), (1, 2, 2)]


def test_forward_stages_leave_the_student_unchanged() -> None:
    """forward_stages' last output pooled and classified is exactly ``forward``; same names."""
    method = tiny_frskd().eval()
    student = method.student
    clips, _ = fixed_batch(2)
    with torch.no_grad():
        stages = student.forward_stages(clips)
        torch.testing.assert_close(student.pool_and_classify(stages[-1]), student(clips),
                                   rtol=0, atol=0)
        torch.testing.assert_close(
            torch.flatten(F.adaptive_avg_pool3d(stages[-1], 1), 1), student.forward_features(clips),
            rtol=0, atol=0)
    assert set(student.state_dict()) == set(resnet3d(10, NUM_CLASSES, width_multiplier=0.125)
                                            .state_dict())
    # the stage outputs are the layer1..layer4 outputs, as hooks would see them
    seen: list[Tensor] = []
    hooks = [getattr(student, f"layer{i}").register_forward_hook(
        lambda _m, _i, out: seen.append(out)) for i in range(1, 5)]
    with torch.no_grad():
        student(clips)
    for hook in hooks:
        hook.remove()
    for hooked, staged in zip(seen, stages, strict=True):
        torch.testing.assert_close(hooked, staged, rtol=0, atol=0)


def test_self_teacher_structure() -> None:
    """Four laterals c_i -> 2 c_i; 3 top-down and 3 bottom-up nodes, each ending in a
    depthwise-separable 3x3x3 block; the middle bottom-up nodes fuse 3 inputs, the others 2."""
    teacher = SelfTeacher((8, 16, 32, 64), NUM_CLASSES)
    lateral_convs = [block[0] for block in teacher.lateral]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in lateral_convs] == [
        (8, 16, (1, 1, 1)), (16, 32, (1, 1, 1)), (32, 64, (1, 1, 1)), (64, 128, (1, 1, 1))]
    assert [f.raw_weights.numel() for f in teacher.up_fusion] == [2, 2, 2]
    assert [f.raw_weights.numel() for f in teacher.down_fusion] == [3, 3, 2]
    for block in [*teacher.up_conv, *teacher.down_conv]:
        assert isinstance(block, DepthwiseSeparableBlock)
        depthwise, pointwise = block[0], block[1]
        assert depthwise.kernel_size == (3, 3, 3) and depthwise.groups == depthwise.in_channels
        assert pointwise.kernel_size == (1, 1, 1) and pointwise.groups == 1
    assert (teacher.fc.in_features, teacher.fc.out_features) == (128, NUM_CLASSES)


def test_self_teacher_logits_come_from_pooled_top_output() -> None:
    method = tiny_frskd().eval()
    clips, _ = fixed_batch(2)
    with torch.no_grad():
        refined, logits = method.self_teacher(method.student.forward_stages(clips))
        expected = method.self_teacher.fc(refined[3].mean(dim=(2, 3, 4)))
    torch.testing.assert_close(logits, expected)


# ---- fusion weights ----------------------------------------------------------------------

def test_fusion_matches_hand_computation() -> None:
    fusion = WeightedFusion(3)
    with torch.no_grad():
        fusion.raw_weights.copy_(torch.tensor([2.0, -1.0, 1.0]))
    inputs = [torch.full((1, 1, 1, 1, 1), v) for v in (1.0, 10.0, 4.0)]
    total = 2.0 + 0.0 + 1.0 + FUSION_EPSILON  # relu(-1) = 0
    expected = (2.0 * 1.0 + 0.0 * 10.0 + 1.0 * 4.0) / total
    assert fusion(inputs).item() == pytest.approx(expected, rel=1e-6)
    assert fusion.normalized_weights().tolist() == pytest.approx([2 / total, 0.0, 1 / total])


def test_fusion_weights_stay_non_negative_and_normalised_after_sgd() -> None:
    """An SGD step that drives a raw weight below zero: its normalised weight is 0, not < 0."""
    fusion = WeightedFusion(3)
    inputs = [torch.full((2, 1, 1, 2, 2), v) for v in (5.0, 1.0, 1.0)]
    optimizer = torch.optim.SGD(fusion.parameters(), lr=10.0)
    fusion(inputs).mean().backward()  # minimising the output pushes the first weight down
    assert fusion.raw_weights.grad[0] > 0
    optimizer.step()
    assert fusion.raw_weights[0] < 0
    weights = fusion.normalized_weights()
    assert (weights >= 0).all() and weights[0] == 0
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)
    raw = fusion.raw_weights.detach().clamp(min=0)
    expected = sum(r * x for r, x in zip(raw, inputs, strict=True)) / (raw.sum() + FUSION_EPSILON)
    torch.testing.assert_close(fusion(inputs), expected)


def test_every_fusion_node_stays_normalised_through_training() -> None:
    method = tiny_frskd()
    clips, labels = fixed_batch()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9)
    with torch.no_grad():  # one raw weight already negative, another zero
        method.self_teacher.up_fusion[0].raw_weights.copy_(torch.tensor([-1.0, 1.0]))
        method.self_teacher.down_fusion[0].raw_weights.copy_(torch.tensor([0.0, 2.0, 1.0]))
    method.train()
    for _ in range(3):
        optimizer.zero_grad()
        method(clips, labels)["loss"].backward()
        optimizer.step()
    for fusion in method.self_teacher.fusions():
        weights = fusion.normalized_weights()
        assert (weights >= 0).all()
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert method.self_teacher.up_fusion[0].normalized_weights()[0] == 0


# ---- the loss against a hand computation ------------------------------------------------

def py_softmax(row: list[float], tau: float = 1.0) -> list[float]:
    exps = [math.exp(v / tau) for v in row]
    return [e / sum(exps) for e in exps]


def py_ce(rows: list[list[float]], labels: list[int]) -> float:
    return sum(-math.log(py_softmax(r)[y]) for r, y in zip(rows, labels, strict=True)) / len(rows)


def py_kl(target_rows: list[list[float]], input_rows: list[list[float]], tau: float) -> float:
    total = 0.0
    for t_row, s_row in zip(target_rows, input_rows, strict=True):
        p, q = py_softmax(t_row, tau), py_softmax(s_row, tau)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    return total / len(target_rows)


def py_attention(feature: list) -> list[list[float]]:
    """a(F) per sample: mean over channels of F^2 at each (t, h, w), divided by its L2 norm."""
    maps = []
    for sample in feature:  # sample: [C][T][H][W]
        channels = len(sample)
        flat = []
        for t in range(len(sample[0])):
            for h in range(len(sample[0][0])):
                for w in range(len(sample[0][0][0])):
                    flat.append(sum(sample[c][t][h][w] ** 2 for c in range(channels)) / channels)
        norm = math.sqrt(sum(v * v for v in flat))
        maps.append([v / norm for v in flat])
    return maps


def py_attention_term(features: list[list], refined: list[list]) -> float:
    total = 0.0
    for f, o in zip(features, refined, strict=True):
        a_f, a_o = py_attention(f), py_attention(o)
        squares = [(x - y) ** 2 for rf, ro in zip(a_f, a_o, strict=True)
                   for x, y in zip(rf, ro, strict=True)]
        total += sum(squares) / len(squares)
    return total


STUDENT_LOGITS = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER_LOGITS = [[2.0, 0.0, 1.0], [1.0, 1.5, -2.0]]
LABELS = [1, 2]


def loss_inputs(seed: int = 0) -> tuple[list[Tensor], list[Tensor]]:
    """Two stages: F has 2 and 3 channels, O twice as many, at 1x2x2 and 1x1x2 positions."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 2, 1, 2, 2), (2, 3, 1, 1, 2)]
    features = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    refined = [torch.randn((s[0], 2 * s[1], *s[2:]), generator=generator, dtype=torch.float64)
               for s in shapes]
    return features, refined


@pytest.mark.parametrize(("tau", "alpha", "beta"), [(4.0, 2.0, 100.0), (1.0, 0.5, 3.0)])
def test_frskd_loss_matches_hand_computation(tau: float, alpha: float, beta: float) -> None:
    features, refined = loss_inputs()
    losses = frskd_loss(torch.tensor(STUDENT_LOGITS, dtype=torch.float64),
                        torch.tensor(TEACHER_LOGITS, dtype=torch.float64),
                        features, refined, torch.tensor(LABELS), tau, alpha, beta)
    ce = py_ce(STUDENT_LOGITS, LABELS)
    teacher_ce = py_ce(TEACHER_LOGITS, LABELS)
    kd = tau * tau * py_kl(TEACHER_LOGITS, STUDENT_LOGITS, tau)
    attention = py_attention_term([f.tolist() for f in features], [o.tolist() for o in refined])
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-9)
    assert losses["teacher_ce"].item() == pytest.approx(teacher_ce, rel=1e-9)
    assert losses["kd"].item() == pytest.approx(kd, rel=1e-9)
    assert losses["attention"].item() == pytest.approx(attention, rel=1e-9)
    expected = ce + teacher_ce + alpha * kd + beta * attention
    assert losses["loss"].item() == pytest.approx(expected, rel=1e-9)
    # plausible wrong readings give other numbers
    assert kd != pytest.approx(tau * tau * py_kl(STUDENT_LOGITS, TEACHER_LOGITS, tau), rel=1e-3)
    if tau != 1.0:
        assert losses["kd"].item() != pytest.approx(kd / (tau * tau), rel=1e-3)


def test_attention_map_is_normalised_channel_mean_of_squares() -> None:
    features = torch.tensor([[[[[3.0, 0.0]]], [[[4.0, 0.0]]]]])  # (1, 2, 1, 1, 2)
    # channel mean of squares: (9 + 16) / 2 = 12.5 and 0 -> normalised (1, 0)
    torch.testing.assert_close(attention_map(features), torch.tensor([[1.0, 0.0]]))
    scaled = attention_map(3.0 * torch.randn(2, 4, 2, 3, 3))
    torch.testing.assert_close(scaled.norm(dim=1), torch.ones(2))


def test_frskd_method_loss_uses_the_real_forwards() -> None:
    """ce / teacher_ce of ``forward`` are the student's and the self-teacher's own outputs."""
    method = tiny_frskd().eval()
    clips, labels = fixed_batch()
    with torch.no_grad():
        losses = method(clips, labels)
        refined, teacher_logits = method.self_teacher(method.student.forward_stages(clips))
        student_logits = method.student(clips)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(student_logits, labels))
    torch.testing.assert_close(losses["teacher_ce"], F.cross_entropy(teacher_logits, labels))
    assert losses["attention"] > 0 and losses["kd"] > 0


# ---- gradients where SPEC detaches -------------------------------------------------------

def gradients(term: Tensor, parameters: list[nn.Parameter]) -> list[Tensor]:
    grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads, strict=True)]


def total_norm(grads: list[Tensor]) -> float:
    return float(sum(g.abs().sum() for g in grads))


def test_gradient_isolation() -> None:
    """KD and attention terms train the classifier only (t and O_i are constants there);
    the self-teacher learns from its own CE, which also reaches the classifier."""
    method = tiny_frskd().train()
    clips, labels = fixed_batch()
    losses = method(clips, labels)
    teacher_params = list(method.self_teacher.parameters())
    student_params = list(method.student.parameters())
    for term in ("kd", "attention"):
        assert total_norm(gradients(losses[term], teacher_params)) == 0.0, term
        assert total_norm(gradients(losses[term], student_params)) > 0.0, term
    assert total_norm(gradients(losses["ce"], teacher_params)) == 0.0
    assert total_norm(gradients(losses["teacher_ce"], teacher_params)) > 0.0
    assert total_norm(gradients(losses["teacher_ce"], student_params)) > 0.0
    # the fusion weights themselves are learned through the self-teacher's CE
    fusion_grads = gradients(losses["teacher_ce"], [f.raw_weights for f in method.self_teacher.fusions()])
    assert all(g.abs().sum() > 0 for g in fusion_grads)


def test_frskd_loss_detaches_targets_inside_distillation_terms() -> None:
    features, refined = loss_inputs()
    features = [f.requires_grad_() for f in features]
    refined = [o.requires_grad_() for o in refined]
    student = torch.tensor(STUDENT_LOGITS, dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(TEACHER_LOGITS, dtype=torch.float64, requires_grad=True)
    losses = frskd_loss(student, teacher, features, refined, torch.tensor(LABELS))
    kd_teacher, kd_student = torch.autograd.grad(losses["kd"], [teacher, student],
                                                 retain_graph=True, allow_unused=True)
    assert (kd_teacher is None or kd_teacher.abs().sum() == 0) and kd_student.abs().sum() > 0
    at_grads = torch.autograd.grad(losses["attention"], features + refined, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in at_grads[:2])
    assert all(g is None or g.abs().sum() == 0 for g in at_grads[2:])


# ---- training ---------------------------------------------------------------------------

def test_short_training_run_lowers_the_loss() -> None:
    method = tiny_frskd(beta=10.0)
    clips, labels = fixed_batch(8, seed=1)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    method.train()
    history = []
    for _ in range(25):
        losses = method(clips, labels)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["ce"] < 0.5 * first["ce"] and last["teacher_ce"] < 0.5 * first["teacher_ce"]


def test_from_config_and_registry() -> None:
    assert METHODS["frskd"] is FRSKD
    cfg = config_from_dict({"model": {"depth": 10, "width_multiplier": 0.125},
                            "method": {"name": "frskd", "tau": 4, "alpha": 2, "beta": 7}}, "test")
    method = build_method(cfg, NUM_CLASSES)
    assert isinstance(method, FRSKD) and (method.tau, method.alpha, method.beta) == (4.0, 2.0, 7.0)
    assert method.num_views == 1 and not method.full_augment and not method.needs_teacher


@pytest.mark.parametrize("config", ["demo/frskd.yaml", "ucf101/r18_frskd.yaml",
                                    "hmdb51/r18_frskd.yaml", "ucf101-mini/frskd.yaml"])
def test_configs_set_the_frskd_weights(config: str) -> None:
    cfg = load_config(ROOT / "configs" / config)
    assert cfg.method.name == "frskd" and (cfg.method.tau, cfg.method.alpha) == (4.0, 2.0)
    assert "beta:" in (ROOT / "configs" / config).read_text()  # set explicitly, not the default
    if not config.startswith("ucf101-mini"):
        assert cfg.model.depth in (10, 18)
    if config.startswith(("ucf101/", "hmdb51/")):
        assert cfg.model.depth == 18


@pytest.mark.timeout(600)
def test_engine_run_ships_a_student_equal_to_method_student(tmp_path, synthetic_cache,
                                                            monkeypatch) -> None:
    """configs/demo/frskd.yaml shrunk to tiny sizes, through ``train``: the shipped file holds
    the classifier only, loads with ``load_student`` and equals the trained ``method.student``."""
    monkeypatch.chdir(ROOT)
    small = tiny_demo_overrides(tmp_path, synthetic_cache)
    cfg = load_config(ROOT / "configs/demo/frskd.yaml", small)
    summary = train(cfg, progress=False)
    assert summary["method"] == "frskd" and summary["test"]["num_videos"] == 6
    run_dir = tmp_path / cfg.name
    shipped = run_dir / "student.safetensors"
    student, meta = load_student(shipped)
    assert meta["method"] == "frskd" and meta["depth"] == cfg.model.depth
    assert set(load_file(str(shipped))) == set(
        resnet3d(cfg.model.depth, 3, width_multiplier=0.125).state_dict())

    # rebuild the trained method from its resumable checkpoint: it keeps the self-teacher
    last = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text().strip()
    weights = load_file(str(last / "model.safetensors"))
    assert any(k.startswith("self_teacher.") for k in weights)
    method = build_method(cfg, 3)
    method.load_state_dict(weights)
    for key, value in method.student.state_dict().items():
        torch.testing.assert_close(student.state_dict()[key], value, rtol=0, atol=0)
    student.eval(), method.student.eval()
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(student(clips), method.student(clips), rtol=0, atol=0)


def test_a_config_that_names_frskd_alone_gets_frskds_weights():
    """MethodConfig's defaults are SKD-SRL's (tau 10, alpha 0.1, beta 1): `method: {name:
    frskd}` trained FRSKD with them, a distillation 20x weaker than SPEC's tau 4, alpha 2,
    beta 100. Values a config gives still win."""
    import inspect

    from vidkd.config import METHOD_DEFAULTS, config_from_dict
    from vidkd.methods.frskd import FRSKD

    plain = config_from_dict({"method": {"name": "frskd"}}).method
    assert (plain.tau, plain.alpha, plain.beta) == (4.0, 2.0, 100.0)
    chosen = config_from_dict({"method": {"name": "frskd", "beta": 10.0}}).method
    assert (chosen.tau, chosen.beta) == (4.0, 10.0)
    switched = config_from_dict({"method": {"name": "skd_srl"}}, overrides=["method.name=frskd"]).method
    assert switched.alpha == 2.0
    assert config_from_dict({"method": {"name": "skd_srl"}}).method.tau == 10.0
    defaults = inspect.signature(FRSKD.__init__).parameters
    assert {k: defaults[k].default for k in ("tau", "alpha", "beta")} == METHOD_DEFAULTS["frskd"]
