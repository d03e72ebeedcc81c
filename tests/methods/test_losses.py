"""The method losses against values computed by hand (SPEC "Methods" 1-5; SKD-SRL Eq. 2-5).

Expected values come from plain ``math`` on small lists, independent of torch; every test
also checks that a plausible wrong variant (reversed KL, no temperature, same-view pairing)
gives a different number, so the test could fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidkd.methods import kd_loss, self_kd_loss, skd_srl_loss
from vidkd.methods.kd import soft_kl
from vidkd.methods.skd_srl import skd_srl_loss as skd_srl_loss_by_path

# ---- plain-math references -------------------------------------------------------------

def softmax(row: list[float], tau: float = 1.0) -> list[float]:
    exps = [math.exp(value / tau) for value in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) = sum p (log p - log q)."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def mean_kl(target_rows: list[list[float]], input_rows: list[list[float]], tau: float) -> float:
    """Batch mean of KL(softmax(target / tau) || softmax(input / tau))."""
    values = [
        kl(softmax(t, tau), softmax(s, tau)) for t, s in zip(target_rows, input_rows, strict=True)
    ]
    return sum(values) / len(values)


def mean_ce(rows: list[list[float]], labels: list[int]) -> float:
    return sum(-math.log(softmax(r)[y]) for r, y in zip(rows, labels, strict=True)) / len(rows)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def mean_neg_cos(a_rows: list[list[float]], b_rows: list[list[float]]) -> float:
    values = [-cosine(a, b) for a, b in zip(a_rows, b_rows, strict=True)]
    return sum(values) / len(values)


def t(rows: list[list[float]], requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=requires_grad)


# 2 samples x 3 classes
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.5, -2.0]]
LABELS = [1, 2]

# SKD-SRL: two views' logits (2 x 3) and projections / predictions (2 x 4)
P1 = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
P2 = [[2.5, -0.5, 1.0], [1.0, 0.5, 0.0]]
Z1 = [[1.0, 0.0, 2.0, -1.0], [0.5, 1.5, -0.5, 2.0]]
Z2 = [[0.0, 1.0, 1.0, 1.0], [-1.0, 2.0, 0.0, 0.5]]
V1 = [[2.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, -1.0]]
V2 = [[0.5, -1.0, 1.5, 0.0], [0.0, 3.0, -1.0, 1.0]]
SKD_LABELS = [1, 0]


def hand_skd_srl(tau: float, alpha: float, beta: float) -> dict[str, float]:
    """Eq. 2-5 by hand: P = softmax((p1 + p2) / tau) is the soft target of both views."""
    summed = [[a + b for a, b in zip(r1, r2, strict=True)] for r1, r2 in zip(P1, P2, strict=True)]
    ce = mean_ce(P1, SKD_LABELS) + mean_ce(P2, SKD_LABELS)
    kl_term = mean_kl(summed, P1, tau) + mean_kl(summed, P2, tau)
    sim = 0.5 * mean_neg_cos(V1, Z2) + 0.5 * mean_neg_cos(V2, Z1)
    return {"ce": ce, "kl": kl_term, "sim": sim, "loss": ce + alpha * kl_term + beta * sim}


# ---- sanity of the references themselves (numbers a person can check on paper) ----------

def test_references_on_trivial_numbers() -> None:
    assert mean_ce([[0.0, 0.0, 0.0]], [2]) == pytest.approx(math.log(3))
    assert kl([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert kl([1.0, 1e-300], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine([1.0, 1.0], [3.0, 3.0]) == pytest.approx(1.0)


# ---- soft_kl / kd_loss (SPEC Methods 3) ---------------------------------------------------

@pytest.mark.parametrize("tau", [1.0, 4.0, 10.0])
def test_soft_kl_matches_hand_value_and_direction(tau: float) -> None:
    value = soft_kl(t(TEACHER), t(STUDENT), tau).item()
    assert value == pytest.approx(mean_kl(TEACHER, STUDENT, tau), rel=1e-10)
    reversed_value = mean_kl(STUDENT, TEACHER, tau)  # KL(student || teacher): the wrong way
    assert abs(value - reversed_value) > 1e-4


def test_soft_kl_temperature_scaling() -> None:
    at_1 = soft_kl(t(TEACHER), t(STUDENT), 1.0).item()
    at_4 = soft_kl(t(TEACHER), t(STUDENT), 4.0).item()
    assert at_1 == pytest.approx(mean_kl(TEACHER, STUDENT, 1.0), rel=1e-10)
    assert at_4 == pytest.approx(mean_kl(TEACHER, STUDENT, 4.0), rel=1e-10)
    # softer distributions are closer: the temperature really divides the logits
    assert at_4 < at_1 / 4
    # and it divides both sides, not only the target's
    only_target_softened = sum(
        kl(softmax(tr, 4.0), softmax(sr, 1.0)) for tr, sr in zip(TEACHER, STUDENT, strict=True)
    ) / 2
    assert abs(at_4 - only_target_softened) > 1e-3


def test_soft_kl_is_zero_for_equal_logits_and_sums_over_classes() -> None:
    assert soft_kl(t(STUDENT), t(STUDENT), 3.0).item() == pytest.approx(0.0, abs=1e-12)
    # one sample: batchmean == sum over classes (not a mean over classes)
    one = soft_kl(t([TEACHER[0]]), t([STUDENT[0]]), 1.0).item()
    assert one == pytest.approx(kl(softmax(TEACHER[0]), softmax(STUDENT[0])), rel=1e-10)


@pytest.mark.parametrize("loss_fn", [kd_loss, self_kd_loss], ids=["kd", "self_kd"])
@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_loss_matches_hand_values(loss_fn, tau: float) -> None:
    alpha = 0.3
    out = loss_fn(t(STUDENT), t(TEACHER), torch.tensor(LABELS), tau=tau, alpha=alpha)
    assert set(out) == {"loss", "ce", "kl"}
    ce = mean_ce(STUDENT, LABELS)
    kl_term = mean_kl(TEACHER, STUDENT, tau)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert out["kl"].item() == pytest.approx(kl_term, rel=1e-10)
    assert out["loss"].item() == pytest.approx(ce + alpha * kl_term, rel=1e-10)
    # the KL runs teacher -> student, not the reverse
    assert abs(out["kl"].item() - mean_kl(STUDENT, TEACHER, tau)) > 1e-4


@pytest.mark.parametrize("loss_fn", [kd_loss, self_kd_loss], ids=["kd", "self_kd"])
def test_kd_tau_squared_switch(loss_fn) -> None:
    tau, alpha = 4.0, 0.5
    labels = torch.tensor(LABELS)
    off = loss_fn(t(STUDENT), t(TEACHER), labels, tau=tau, alpha=alpha, tau_squared=False)
    on = loss_fn(t(STUDENT), t(TEACHER), labels, tau=tau, alpha=alpha, tau_squared=True)
    ce, kl_term = mean_ce(STUDENT, LABELS), mean_kl(TEACHER, STUDENT, tau)
    assert off["loss"].item() == pytest.approx(ce + alpha * kl_term, rel=1e-10)
    assert on["loss"].item() == pytest.approx(ce + alpha * tau**2 * kl_term, rel=1e-10)
    # the switch scales the loss, not the logged KL term
    assert on["kl"].item() == pytest.approx(off["kl"].item())


def test_kd_loss_default_is_without_tau_squared() -> None:
    out = kd_loss(t(STUDENT), t(TEACHER), torch.tensor(LABELS), tau=4.0, alpha=0.5)
    expected = mean_ce(STUDENT, LABELS) + 0.5 * mean_kl(TEACHER, STUDENT, 4.0)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-10)


def test_kd_loss_teacher_and_soft_target_get_no_gradient() -> None:
    tau, alpha = 2.0, 0.7
    student = t(STUDENT, requires_grad=True)
    teacher = t(TEACHER, requires_grad=True)
    out = kd_loss(student, teacher, torch.tensor(LABELS), tau=tau, alpha=alpha)
    out["loss"].backward()
    assert teacher.grad is None
    # analytic: d/ds [CE + alpha KL] = (softmax(s) - onehot)/n + alpha (softmax(s/tau) - P)/(tau n)
    n = len(STUDENT)
    onehot = F.one_hot(torch.tensor(LABELS), 3).double()
    soft_target = F.softmax(t(TEACHER) / tau, dim=1)
    expected = (F.softmax(t(STUDENT), dim=1) - onehot) / n + alpha * (
        F.softmax(t(STUDENT) / tau, dim=1) - soft_target
    ) / (tau * n)
    torch.testing.assert_close(student.grad, expected)


# ---- skd_srl_loss (SPEC Methods 5, paper Eq. 2-5) ------------------------------------------

def skd_inputs(requires_grad: bool = False) -> list[torch.Tensor]:
    return [t(rows, requires_grad) for rows in (P1, P2, Z1, Z2, V1, V2)]


def test_skd_srl_loss_is_the_public_api() -> None:
    assert skd_srl_loss is skd_srl_loss_by_path


@pytest.mark.parametrize(("tau", "alpha", "beta"), [(1.0, 0.1, 1.0), (4.0, 0.5, 2.0),
                                                    (10.0, 1.0, 0.25)])
def test_skd_srl_loss_matches_eq_2_to_5(tau: float, alpha: float, beta: float) -> None:
    out = skd_srl_loss_by_path(
        *skd_inputs(), torch.tensor(SKD_LABELS), tau=tau, alpha=alpha, beta=beta
    )
    assert set(out) == {"loss", "ce", "kl", "sim"}
    expected = hand_skd_srl(tau, alpha, beta)
    for key in ("ce", "kl", "sim", "loss"):
        assert out[key].item() == pytest.approx(expected[key], rel=1e-10), key
        assert out[key].dim() == 0


def test_skd_srl_loss_positional_argument_order() -> None:
    """``skd_srl_loss(p1, p2, z1, z2, v1, v2, labels, tau, alpha, beta)``, all positional."""
    out = skd_srl_loss(*skd_inputs(), torch.tensor(SKD_LABELS), 4.0, 0.5, 2.0)
    assert out["loss"].item() == pytest.approx(hand_skd_srl(4.0, 0.5, 2.0)["loss"], rel=1e-10)


def test_skd_srl_wrong_variants_differ() -> None:
    """Each plausible misreading of Eq. 2-3 gives another number, so the checks above bite."""
    tau = 4.0
    out = skd_srl_loss(*skd_inputs(), torch.tensor(SKD_LABELS), tau, 0.1, 1.0)
    summed = [[a + b for a, b in zip(r1, r2, strict=True)] for r1, r2 in zip(P1, P2, strict=True)]
    reversed_kl = mean_kl(P1, summed, tau) + mean_kl(P2, summed, tau)
    mean_target = [[x / 2 for x in row] for row in summed]  # (p1 + p2) / 2, not the sum
    averaged_target_kl = mean_kl(mean_target, P1, tau) + mean_kl(mean_target, P2, tau)
    same_view_sim = 0.5 * mean_neg_cos(V1, Z1) + 0.5 * mean_neg_cos(V2, Z2)
    assert abs(out["kl"].item() - reversed_kl) > 1e-4
    assert abs(out["kl"].item() - averaged_target_kl) > 1e-4
    assert abs(out["sim"].item() - same_view_sim) > 1e-3
    assert abs(out["sim"].item() + same_view_sim) > 1e-3  # sign: D is the *negative* cosine


def test_skd_srl_sim_extremes() -> None:
    """D(v, z) = -cos: aligned pairs give -1, opposite pairs +1, whatever the norms."""
    p = t(P1)
    z = t([[1.0, 2.0, 0.0, -1.0], [0.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor(SKD_LABELS)
    aligned = skd_srl_loss(p, p, z, z, 3.0 * z, 0.5 * z, labels, 4.0, 0.1, 1.0)
    opposite = skd_srl_loss(p, p, z, z, -2.0 * z, -z, labels, 4.0, 0.1, 1.0)
    assert aligned["sim"].item() == pytest.approx(-1.0)
    assert opposite["sim"].item() == pytest.approx(1.0)


def test_skd_srl_kl_gradient_treats_soft_target_as_constant() -> None:
    """d kl / d p1 = (softmax(p1/tau) - P) / (tau n): no gradient through P = softmax((p1+p2)/tau)."""
    tau = 2.0
    p1, p2, z1, z2, v1, v2 = skd_inputs(requires_grad=True)
    out = skd_srl_loss(p1, p2, z1, z2, v1, v2, torch.tensor(SKD_LABELS), tau, 0.1, 1.0)
    out["kl"].backward()
    n = len(P1)
    soft_target = F.softmax((t(P1) + t(P2)) / tau, dim=1)
    expected_p1 = (F.softmax(t(P1) / tau, dim=1) - soft_target) / (tau * n)
    expected_p2 = (F.softmax(t(P2) / tau, dim=1) - soft_target) / (tau * n)
    torch.testing.assert_close(p1.grad, expected_p1)
    torch.testing.assert_close(p2.grad, expected_p2)
    # with gradient through the target, the result would differ
    q1, q2 = t(P1, True), t(P2, True)
    through = F.kl_div(F.log_softmax(q1 / tau, 1), F.softmax((q1 + q2) / tau, 1),
                       reduction="batchmean")
    through = through + F.kl_div(F.log_softmax(q2 / tau, 1), F.softmax((q1 + q2) / tau, 1),
                                 reduction="batchmean")
    through.backward()
    assert (q1.grad - expected_p1).abs().max() > 1e-4
    # kl touches only the logits
    for leaf in (z1, z2, v1, v2):
        assert leaf.grad is None


def _cosine_grad(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """d cos(v, z) / d v, row-wise: z/(|v||z|) - cos v/|v|^2."""
    v_norm = v.norm(dim=1, keepdim=True)
    z_norm = z.norm(dim=1, keepdim=True)
    cos = (v * z).sum(1, keepdim=True) / (v_norm * z_norm)
    return z / (v_norm * z_norm) - cos * v / v_norm**2


def test_skd_srl_sim_stops_gradient_to_z() -> None:
    p1, p2, z1, z2, v1, v2 = skd_inputs(requires_grad=True)
    out = skd_srl_loss(p1, p2, z1, z2, v1, v2, torch.tensor(SKD_LABELS), 4.0, 0.1, 1.0)
    out["sim"].backward()
    for z in (z1, z2):
        assert z.grad is None or bool((z.grad == 0).all())
    n = len(V1)
    # sim = 1/2 mean(-cos(v1, z2)) + 1/2 mean(-cos(v2, z1))
    torch.testing.assert_close(v1.grad, -0.5 * _cosine_grad(t(V1), t(Z2)) / n)
    torch.testing.assert_close(v2.grad, -0.5 * _cosine_grad(t(V2), t(Z1)) / n)
    assert v1.grad.abs().sum() > 0 and v2.grad.abs().sum() > 0
    for p in (p1, p2):
        assert p.grad is None


def test_skd_srl_total_loss_gradient_weights() -> None:
    """The full loss routes alpha and beta into the gradients, and z still gets none."""
    tau, alpha, beta = 4.0, 0.5, 3.0
    p1, p2, z1, z2, v1, v2 = skd_inputs(requires_grad=True)
    labels = torch.tensor(SKD_LABELS)
    skd_srl_loss(p1, p2, z1, z2, v1, v2, labels, tau, alpha, beta)["loss"].backward()
    n = len(P1)
    onehot = F.one_hot(labels, 3).double()
    soft_target = F.softmax((t(P1) + t(P2)) / tau, dim=1)
    expected_p1 = (F.softmax(t(P1), 1) - onehot) / n + alpha * (
        F.softmax(t(P1) / tau, 1) - soft_target
    ) / (tau * n)
    torch.testing.assert_close(p1.grad, expected_p1)
    torch.testing.assert_close(v1.grad, -beta * 0.5 * _cosine_grad(t(V1), t(Z2)) / n)
    for z in (z1, z2):
        assert z.grad is None or bool((z.grad == 0).all())
