"""ELU's closed-form dual kernels (``wideNN._elu``) against independent references.

The reference integrates over z1 ~ N(0, 1) (u = √k11 z1) with scipy's adaptive quadrature,
split at the kink z1 = 0, with the inner expectation over v | u in closed form (a univariate
Gaussian expectation of ELU, written with erfcx so that it neither overflows nor cancels).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

import wideNN.activations as A
from wideNN import _elu, _elu_radial, analytic

F64 = torch.float64


def _tilt(m: float, s: float) -> float:
    """e^{m + s²/2} Φ(−(m + s²)/s) = E[e^w 1{w < 0}], w ~ N(m, s²)."""
    h = (m + s * s) / s
    if h > 0:
        return 0.5 * special.erfcx(h / math.sqrt(2)) * math.exp(-0.5 * (m / s) ** 2)
    return math.exp(m + 0.5 * s * s) * special.ndtr(-h)


def _inner(m: float, s: float, alpha: float, deriv: int) -> float:
    """E[φ(w)] (deriv 0) or E[φ'(w)] (deriv 1) for w ~ N(m, s²)."""
    if s == 0.0:
        if deriv:
            return 1.0 if m > 0 else alpha * math.exp(m)
        return m if m > 0 else alpha * math.expm1(m)
    p = special.ndtr(m / s)
    if deriv:
        return p + alpha * _tilt(m, s)
    return m * p + s * math.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi) + alpha * (_tilt(m, s) - special.ndtr(-m / s))


def _reference(k11: float, k12: float, k22: float, alpha: float, deriv: int) -> float:
    """E[φ(u)φ(v)] or E[φ'(u)φ'(v)] by scipy.integrate.quad over z1, split at the kink."""
    s1, s2 = math.sqrt(k11), math.sqrt(k22)
    c = max(-1.0, min(1.0, k12 / (s1 * s2)))
    if abs(abs(c) - 1.0) < 1e-14:  # coincident inputs whose k12 = k11 rounded differently
        c = math.copysign(1.0, c)
    r = math.sqrt((1 - c) * (1 + c))

    def f(z):
        u = s1 * z
        outer = (1.0 if u > 0 else alpha * math.exp(u)) if deriv else (u if u > 0 else alpha * math.expm1(u))
        return outer * _inner(s2 * c * z, s2 * r, alpha, deriv) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    # the inner expectation turns from 0 to its slope within |z| ~ r/|c| of the kink: break there
    w = min(1.0, 20 * r)
    edges = [-40.0, -1.0, -w, 0.0, w, 1.0, 40.0] if w < 1.0 else [-40.0, -1.0, 0.0, 1.0, 40.0]
    return sum(integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=400)[0] for a, b in zip(edges, edges[1:]))


def _duals(point, alpha):
    ks = [torch.tensor(v, dtype=F64) for v in point]
    return A.ELU(alpha).dual(*ks)


POINTS = [
    (1.0, 0.6, 1.4), (1.0, -0.6, 1.4), (2.0, 2.0, 2.0), (2.0, -2.0, 2.0),
    (0.3, 0.3 * (1 - 1e-7), 0.3), (4.0, -4.0 * (1 - 1e-7), 4.0),          # c near ±1
    (1e-6, 3e-7, 2e-6), (1e-3, 0.0, 4.0),                                 # tiny variances
    (100.0, 30.0, 400.0), (2500.0, 2400.0, 2500.0), (0.01, 0.005, 50.0),  # large / unequal
]


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("point", POINTS)
def test_duals_match_adaptive_quadrature(point, alpha):
    """T and Ṫ to 1e-10 relative to the scale √(T(x,x)T(x',x')) (Cauchy–Schwarz bound)."""
    t, td = _duals(point, alpha)
    k11, _, k22 = point
    for got, deriv in ((t, 0), (td, 1)):
        ref = _reference(*point, alpha, deriv)
        scale = math.sqrt(_reference(k11, k11, k11, alpha, deriv) * _reference(k22, k22, k22, alpha, deriv))
        assert abs(got.item() - ref) <= 1e-10 * scale, (point, alpha, deriv, got.item(), ref)


@pytest.mark.parametrize("alpha", [1.0, 0.3, -1.5])
def test_dual_diag_matches_quadrature_and_dual(alpha):
    k = torch.tensor([0.0, 1e-12, 1e-3, 0.2, 0.7, 5.0, 1e4], dtype=F64)
    t, td = A.ELU(alpha).dual_diag(k)
    for i, kv in enumerate(k.tolist()[1:], start=1):
        for got, deriv in ((t[i], 0), (td[i], 1)):
            sd = math.sqrt(kv)
            f = (lambda z: (sd * z if z > 0 else alpha * math.expm1(sd * z)) ** 2) if deriv == 0 else \
                (lambda z: (1.0 if z > 0 else alpha * math.exp(sd * z)) ** 2)
            ref = sum(integrate.quad(lambda z: f(z) * stats.norm.pdf(z), a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
                      for a, b in ((-40, 0), (0, 40)))
            assert abs(got.item() - ref) <= 1e-11 * abs(ref), (kv, deriv, got.item(), ref)
    assert t[0] == 0 and td[0] == 0.5 * (1 + alpha * alpha)  # the limit k → 0⁺
    dt, dtd = A.ELU(alpha).dual(k[1:], k[1:], k[1:])  # the bivariate form at c = 1 agrees
    torch.testing.assert_close(dt, t[1:], rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(dtd, td[1:], rtol=1e-13, atol=0)


def test_duals_are_symmetric_finite_and_float32_agrees():
    g = torch.Generator().manual_seed(0)
    k11 = 10 ** (torch.rand(200, 1, generator=g, dtype=F64) * 8 - 4)
    k22 = 10 ** (torch.rand(1, 30, generator=g, dtype=F64) * 8 - 4)
    k12 = (torch.rand(200, 30, generator=g, dtype=F64) * 2 - 1) * (k11 * k22).sqrt()
    act = A.ELU(0.7)
    a = act.dual(k11, k12, k22)
    b = act.dual(k22.T, k12.T, k11.T)
    for x, y in zip(a, b):
        assert torch.isfinite(x).all() and torch.equal(x, y.T)
    f32 = act.dual(k11.float(), k12.float(), k22.float())
    scale = torch.sqrt(act.dual_diag(k11)[0] * act.dual_diag(k22)[0])
    assert f32[0].dtype == torch.float32
    assert float(((f32[0].double() - a[0]).abs() / scale).max()) < 1e-5
    assert float(((f32[1].double() - a[1]).abs()).max()) < 1e-5


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_gradients_match_finite_differences_of_the_reference(alpha):
    """∂(T, Ṫ)/∂(k11, k12, k22) from the closed-form backward against central differences of
    the scipy reference (step 1e-4 relative: truncation and quadrature noise ≲ 1e-7)."""
    for point in [(1.0, 0.6, 1.4), (2.0, -1.9, 2.0), (0.05, 0.01, 3.0)]:
        ks = [torch.tensor(v, dtype=F64, requires_grad=True) for v in point]
        t, td = A.ELU(alpha).dual(*ks)
        grads = [torch.autograd.grad(out, ks, retain_graph=True) for out in (t, td)]
        for deriv in (0, 1):
            for i in range(3):
                h = 1e-4 * max(abs(point[i]), 1e-2)
                up, dn = list(point), list(point)
                up[i] += h
                dn[i] -= h
                fd = (_reference(*up, alpha, deriv) - _reference(*dn, alpha, deriv)) / (2 * h)
                assert abs(grads[deriv][i].item() - fd) <= 1e-6 * max(1.0, abs(fd)), (point, deriv, i)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_gradcheck_broadcast_shapes(alpha):
    g = torch.Generator().manual_seed(1)
    k11 = (torch.rand(3, 1, generator=g, dtype=F64) + 0.3).requires_grad_(True)
    k22 = (torch.rand(1, 4, generator=g, dtype=F64) * 3 + 0.1).requires_grad_(True)
    c = torch.rand(3, 4, generator=g, dtype=F64) * 1.8 - 0.9
    k12 = (c * (k11 * k22).sqrt()).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, d: _elu.elu_dual(a, b, d, alpha), (k11, k12, k22),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradients_finite_at_coincident_points_and_zero_variance():
    """At c = 1 the derivative along a path that keeps the inputs coincident is finite (the
    k11 = k12 = k22 = k line: d/dk of dual_diag), and k = 0 gives zeros, not NaN."""
    for alpha in (1.0, 0.4):
        k = torch.tensor(0.8, dtype=F64, requires_grad=True)
        t, td = A.ELU(alpha).dual(k, k, k)
        gt, = torch.autograd.grad(t, k)
        k2 = k.detach().clone().requires_grad_(True)
        dt, _ = A.ELU(alpha).dual_diag(k2)
        gd, = torch.autograd.grad(dt, k2)
        assert abs(gt.item() - gd.item()) <= 1e-10 * abs(gd.item())
        k0 = torch.zeros((), dtype=F64, requires_grad=True)  # E[φ(u)²] = (1 + α²) k/2 + O(k^{3/2})
        g0, = torch.autograd.grad(A.ELU(alpha).dual_diag(k0)[0], k0)
        assert abs(g0.item() - 0.5 * (1 + alpha * alpha)) < 1e-15
        zero = torch.zeros(3, dtype=F64, requires_grad=True)
        out = A.ELU(alpha).dual(zero[0], zero[1], zero[2])
        for g in torch.autograd.grad(out[0] + out[1], zero):
            assert torch.isfinite(g).all()


def test_radial_functions_against_scipy():
    m = torch.tensor([0.0, -0.3, -2.0, -11.9, -12.1, -40.0, -1e3], dtype=F64)
    got = [_elu_radial.radial_g(m), _elu_radial.radial_j0(m), _elu_radial.radial_j1(m)]
    for n, vals in enumerate(got):
        for mv, v in zip(m.tolist(), vals.tolist()):
            ref = integrate.quad(lambda r: r ** n * math.exp(mv * r - 0.5 * r * r), 0, np.inf,
                                 epsabs=0, epsrel=1e-13, limit=200)[0]
            # J1 is only ever subtracted from O(1) terms: documented to absolute 1e-15
            tol = 1e-13 * ref if n < 2 else 1e-14
            assert abs(v - ref) <= tol, (n, mv, v, ref)


def test_mlp_kernels_follow_the_reference_recursion():
    """analytic.kernels with ELU (depth 2, unequal and equal input norms: direct duals and the
    angle table) against the NNGP/NTK recursion run by hand on the scipy reference duals."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, generator=g, dtype=F64)
    w, b, alpha = 1.7, 0.2, 0.8
    for inputs, tol in ((x, 1e-10), (x / x.norm(dim=1, keepdim=True) * math.sqrt(5), 1e-10)):
        nngp, ntk = analytic.kernels(inputs, depth=2, activation=A.ELU(alpha), weight_variance=w, bias_variance=b)
        k = (b + w * inputs @ inputs.T / 5).tolist()
        th = [row[:] for row in k]
        for _ in range(2):
            t = [[_reference(k[i][i], k[i][j], k[j][j], alpha, 0) for j in range(3)] for i in range(3)]
            td = [[_reference(k[i][i], k[i][j], k[j][j], alpha, 1) for j in range(3)] for i in range(3)]
            k = [[b + w * t[i][j] for j in range(3)] for i in range(3)]
            th = [[k[i][j] + w * td[i][j] * th[i][j] for j in range(3)] for i in range(3)]
        torch.testing.assert_close(nngp, torch.tensor(k, dtype=F64), rtol=tol, atol=tol)
        torch.testing.assert_close(ntk, torch.tensor(th, dtype=F64), rtol=tol, atol=tol)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(2)
    k11 = torch.rand(300, 1, generator=g, dtype=F64) * 4 + 1e-3
    k22 = torch.rand(1, 400, generator=g, dtype=F64) * 4 + 1e-3
    k12 = (torch.rand(300, 400, generator=g, dtype=F64) * 2 - 1) * (k11 * k22).sqrt()
    act = A.ELU(0.6)
    for cpu, gpu in zip(act.dual(k11, k12, k22), act.dual(k11.cuda(), k12.cuda(), k22.cuda())):
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-14)


def test_kernel_gradient_in_the_variances_matches_finite_differences():
    """d(NNGP, NTK)/d(σ_w², σ_b²) through the analytic recursion (autograd path, the diagonal at
    c = 1 included) against central differences of the no-grad kernels."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=g, dtype=F64)
    act = A.ELU(0.5)

    def kern(w, b):
        return analytic.kernels(x, depth=2, activation=act, weight_variance=w, bias_variance=b)

    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    b = torch.tensor(0.2, dtype=F64, requires_grad=True)
    nngp, ntk = kern(w, b)
    for out, which in ((nngp, 0), (ntk, 1)):
        gw, gb = torch.autograd.grad(out.sum(), (w, b), retain_graph=True)
        h = 1e-5
        with torch.no_grad():
            fw = (kern(1.3 + h, 0.2)[which].sum() - kern(1.3 - h, 0.2)[which].sum()) / (2 * h)
            fb = (kern(1.3, 0.2 + h)[which].sum() - kern(1.3, 0.2 - h)[which].sum()) / (2 * h)
        assert abs(gw.item() - fw.item()) <= 1e-7 * abs(fw.item())
        assert abs(gb.item() - fb.item()) <= 1e-7 * abs(fb.item())
