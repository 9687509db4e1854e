"""Dual kernels of the quadrature activations by Mehler's series (wideNN._mehler): against a
high-degree 2-D quadrature, their gradients against finite differences, coincident points
against the 1-D duals, and where the series is not used."""
import math

import pytest
import torch

import wideNN as wn
from wideNN import _mehler
from wideNN import activations as A

F64 = torch.float64


def _pairs(n=12, m=9, seed=0, top=2.5):
    g = torch.Generator().manual_seed(seed)
    k1 = torch.rand(n, 1, dtype=F64, generator=g) * top + 0.2
    k2 = torch.rand(1, m, dtype=F64, generator=g) * top + 0.2
    c = (torch.rand(n, m, dtype=F64, generator=g) * 2 - 1) * 0.999
    k12 = c * (k1 * k2).sqrt()
    k12[0, 0] = -(k1[0, 0] * k2[0, 0]).sqrt()  # ρ = −1
    return k1, k12, k2


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "silu"])
def test_series_equals_a_high_degree_quadrature(name):
    """Against the per-entry 2-D quadrature at degree 160 (its own error ≲ 1e-14 here; the
    default degree 48 is off by up to ~1e-8 at these variances)."""
    k1, k12, k2 = _pairs()
    got = _mehler.dual(A.get(name), k1, k12, k2)
    assert got is not None
    ref = type(A.get(name))(quadrature_degree=160)._quadrature_dual(k1, k12, k2)
    for a, b in zip(got, ref):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-13


def _trapezoid_tanh_duals(k1: float, k12: float, k2: float) -> tuple[float, float]:
    """E[tanh(u) tanh(v)], E[tanh'(u) tanh'(v)] by the 2-D trapezoid rule in u = √k1 z1,
    v = √k2 (ρ z1 + √(1−ρ²) z2) on [−9, 9]² with spacing 1/80: the integrand is analytic in a
    strip of half-width ≥ π/(2√k) ≈ 0.2, so the rule's error is ~exp(−2π·0.2·80) (spectral)."""
    z = torch.linspace(-9.0, 9.0, 1441, dtype=F64)
    w = torch.exp(-0.5 * z * z)
    w = w / w.sum()
    rho = k12 / math.sqrt(k1 * k2)
    u = math.sqrt(k1) * z[:, None]
    v = math.sqrt(k2) * (rho * z[:, None] + math.sqrt(max(0.0, 1 - rho * rho)) * z[None, :])
    ww = w[:, None] * w[None, :]
    tu, tv = torch.tanh(u), torch.tanh(v)
    return float((ww * tu * tv).sum()), float((ww * (1 - tu * tu) * (1 - tv * tv)).sum())


def test_large_tanh_variances_take_the_extended_basis():
    """tanh at variances 20–60 needs 3800–10800 terms (the extended basis): against a fine 2-D
    trapezoid rule (values to 1e-14 relative) and ∂T/∂k12 = Ṫ through the explicit backward."""
    act = A.get("tanh")
    g = torch.Generator().manual_seed(5)
    k1 = torch.tensor([[20.0], [41.0], [58.0]], dtype=F64)
    k2 = torch.tensor([[33.0, 60.0]], dtype=F64)
    c = (torch.rand(3, 2, dtype=F64, generator=g) * 2 - 1) * 0.999
    k12 = (c * (k1 * k2).sqrt()).requires_grad_()
    assert _mehler.terms_needed(act, _mehler._bucket(60.0)) > _mehler._LEVELS[0]
    t, td = _mehler.dual(act, k1, k12, k2)
    for i in range(3):
        for j in range(2):
            ref_t, ref_td = _trapezoid_tanh_duals(float(k1[i, 0]), float(k12[i, j]), float(k2[0, j]))
            assert abs(float(t[i, j]) - ref_t) < 1e-14 * max(abs(ref_t), 0.1)
            assert abs(float(td[i, j]) - ref_td) < 1e-14 * max(abs(ref_td), 0.01)
    (grad,) = torch.autograd.grad(t.sum(), k12)
    torch.testing.assert_close(grad, td.detach(), rtol=1e-12, atol=0)


def test_gradients_against_finite_differences_batched_and_per_entry():
    act = A.get("tanh")
    k1, k12, k2 = _pairs(3, 2, seed=1)
    k12 = k12 * 0.9  # away from |ρ| = 1, where the clamp makes differences one-sided
    batch = (k1.expand(2, 3, 1).clone().requires_grad_(), (k12 * torch.tensor([1.0, 0.5], dtype=F64)[:, None, None])
             .requires_grad_(), k2.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b, c: _mehler.dual(act, a, b, c), batch, eps=1e-6, atol=1e-8)
    # a table's nodes: one variance, per-entry gradients; and the 1-D duals
    kk = torch.full((3,), 1.3, dtype=F64, requires_grad=True)
    c12 = (torch.linspace(-0.9, 0.9, 3, dtype=F64) * 1.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _mehler.dual(act, a, b, a), (kk, c12), eps=1e-6, atol=1e-8)
    kd = torch.tensor([0.3, 2.4], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: _mehler.dual_diag(act, a), (kd,), eps=1e-6, atol=1e-8)


def test_coincident_points_equal_the_one_variable_duals():
    act = A.get("tanh")
    k = torch.tensor([[0.4], [1.7]], dtype=F64)
    t, td = _mehler.dual(act, k, (k * k.T).sqrt() * torch.eye(2, dtype=F64), k.T)
    dt, dtd = _mehler.dual_diag(act, k.reshape(-1))
    # the same ~300 terms summed in two orders (Horner in ρ = 1, and directly)
    torch.testing.assert_close(t.diagonal(), dt, rtol=1e-14, atol=0)
    torch.testing.assert_close(td.diagonal(), dtd, rtol=1e-14, atol=0)


def test_large_variances_and_many_distinct_values_take_the_quadrature():
    act = A.get("tanh")
    k = torch.tensor([[400.0]], dtype=F64)
    assert _mehler.dual(act, k, 0.5 * k, k) is None  # > MAX_TERMS terms
    assert _mehler.dual(act, torch.tensor([[1e-9]], dtype=F64), torch.zeros(1, 1, dtype=F64),
                        torch.tensor([[1.0]], dtype=F64)) is None
    many = torch.linspace(0.5, 1.5, _mehler.DISTINCT_LIMIT + 1, dtype=F64)
    assert _mehler.dual_diag(act, many) is None


def test_unequal_norm_kernels_and_gradients_are_fast_and_match_the_quadrature():
    """A depth-3 tanh NNGP/NTK of inputs of different norms, with fitted variances: the series
    against the per-entry quadrature it replaced (at degree 96, accurate to ~1e-13 here)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 7, dtype=F64, generator=g)
    w = torch.tensor(1.6, dtype=F64, requires_grad=True)
    k, th = wn.analytic.kernels(x, depth=3, activation="tanh", weight_variance=w, bias_variance=0.1)
    (gw,) = torch.autograd.grad((k.sum() + th.sum()), w)
    act = A.Tanh(quadrature_degree=96)
    act.mehler = False
    w2 = torch.tensor(1.6, dtype=F64, requires_grad=True)
    k2, th2 = wn.analytic.kernels(x, depth=3, activation=act, weight_variance=w2, bias_variance=0.1)
    (gw2,) = torch.autograd.grad((k2.sum() + th2.sum()), w2)
    torch.testing.assert_close(k, k2, rtol=1e-11, atol=0)
    torch.testing.assert_close(th, th2, rtol=1e-11, atol=0)
    assert math.isclose(float(gw), float(gw2), rel_tol=1e-10)


def test_compiled_sums_equal_the_torch_sums(monkeypatch):
    """The compiled Horner sums and coefficient gradients (wideNN._native) against the torch
    loops they replace, batched, kernels and gradients."""
    act = A.get("tanh")
    k1, k12, k2 = _pairs(7, 5, seed=4)
    args = (k1.expand(2, 7, 1).clone().requires_grad_(), (k12 * 0.8).expand(2, 7, 5).clone().requires_grad_(),
            k2.clone().requires_grad_())

    def run():
        t, td = _mehler.dual(act, *args)
        grads = torch.autograd.grad((t * t).sum() + td.sum(), args)
        return (t, td, *grads)

    got = run()
    monkeypatch.setattr(_mehler, "_native_lib", lambda t: None)
    ref = run()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_remembered_coefficients_are_copies():
    """A tiled layer asks for the same rows once per tile (answered from a small memo): what a
    caller gets is its own copy, and equals a fresh integration."""
    act = A.Tanh()
    k = torch.tensor([0.7, 1.9, 3.1], dtype=F64)
    first = _mehler.coefficients(act, k, 40, 4.0)
    first.zero_()
    again = _mehler.coefficients(act, k, 40, 4.0)
    torch.testing.assert_close(again, _mehler._integrate(act, k, 40, 4.0), rtol=0, atol=0)
    assert float(again.abs().max()) > 0.1
