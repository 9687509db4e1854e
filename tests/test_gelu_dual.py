"""Tests for the closed-form GELU dual kernels in ``wideNN._gelu``.

Reference: a 2-D composite Gauss-Legendre quadrature (nodes from
``scipy.special.roots_legendre``) of the Gaussian expectation, written in
conditional (Cholesky) coordinates ``u = sqrt(k11) z``, ``v = m(u) + s w`` with
``z, w ~ N(0, 1)`` truncated to [-W, W].  Dense Gauss-Hermite is *not* used on
purpose: for large variances (k ~ 1e4) Phi(u) switches on a scale 1/sqrt(k) in
the standardized variable, which Gauss-Hermite with a few hundred nodes cannot
resolve.  Instead every axis is cut into panels at breakpoints that straddle both
the Gaussian weight's scale (z = 0, +-1, +-2, ...) and the activation's scale
(u = 0, +-1/2, +-1, ...; v likewise, per outer node), and each panel gets a
high-order Gauss-Legendre rule.  The integrand is entire and smooth on the scale
of each panel, so the rule converges geometrically; doubling the node count
changes the reference by < 1e-13 relative (checked in
``test_reference_self_convergence``), and the truncation at W = 12 drops mass
~ exp(-72).  That justifies comparing at rtol = 1e-10 (on the scale
|ref| + sqrt(E[f(u)^2] E[f(v)^2]), the Cauchy-Schwarz bound, since T crosses zero
for negative correlation).
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import numpy as np
import pytest
import torch
from scipy import integrate, special

try:
    from wideNN._gelu import gelu_dual, gelu_dual_diag
except Exception:  # package __init__ mid-edit elsewhere: load the module alone
    _path = pathlib.Path(__file__).resolve().parents[1] / "wideNN" / "_gelu.py"
    _spec = importlib.util.spec_from_file_location("_wideNN_gelu_standalone", _path)
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    gelu_dual, gelu_dual_diag = _mod.gelu_dual, _mod.gelu_dual_diag

F64 = torch.float64
RTOL = 1e-10

# --------------------------------------------------------------------------
# Independent numerical reference
# --------------------------------------------------------------------------
_W = 12.0
_Z_BPS = np.array([0.0, 1.0, 2.0, 4.0, 8.0])  # Gaussian-weight scale
_ACT_BPS = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])  # activation scale
_Z_BPS = np.concatenate([-_Z_BPS[1:], _Z_BPS])
_ACT_BPS = np.concatenate([-_ACT_BPS[1:], _ACT_BPS])


def _gelu_np(x):
    return x * special.ndtr(x)


def _dgelu_np(x):
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _panel_nodes(ends, n):
    """Gauss-Legendre nodes/weights on panels [ends[..., i], ends[..., i+1]].

    ``ends`` has shape (..., E) (sorted); returns nodes and weights of shape
    (..., (E-1) * n).  Zero-length panels get zero weight.
    """
    x, w = special.roots_legendre(n)
    a, b = ends[..., :-1, None], ends[..., 1:, None]
    half = 0.5 * (b - a)
    nodes = (0.5 * (a + b) + half * x).reshape(*ends.shape[:-1], -1)
    weights = (half * w).reshape(*ends.shape[:-1], -1)
    return nodes, weights


def _gauss_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _ends(act_bps_in_z):
    e = np.concatenate(
        [
            np.broadcast_to(np.concatenate([[-_W, _W], _Z_BPS]), act_bps_in_z.shape[:-1] + (2 + _Z_BPS.size,)),
            np.clip(act_bps_in_z, -_W, _W),
        ],
        axis=-1,
    )
    return np.sort(e, axis=-1)


def ref_dual(k11, k12, k22, n=40):
    """(E[f(u)f(v)], E[f'(u)f'(v)]) by 2-D composite Gauss-Legendre quadrature."""
    su = math.sqrt(k11)
    z, wz = _panel_nodes(_ends(_ACT_BPS / su), n)  # outer variable, u = su * z
    u = su * z
    l21 = k12 / su
    s = math.sqrt(max(k22 - l21 * l21, 0.0))
    m = l21 * z  # conditional mean of v given u
    if s == 0.0:  # |rho| == 1: v is a deterministic function of u
        v, wv = m[:, None], np.ones((z.size, 1))
    else:
        w, wv = _panel_nodes(_ends((_ACT_BPS[None, :] - m[:, None]) / s), n)
        v = m[:, None] + s * w
        wv = wv * _gauss_pdf(w)
    wu = wz * _gauss_pdf(z)
    t = np.sum(wu * _gelu_np(u) * np.sum(wv * _gelu_np(v), axis=1))
    td = np.sum(wu * _dgelu_np(u) * np.sum(wv * _dgelu_np(v), axis=1))
    return t, td


def ref_diag(k, n=40):
    su = math.sqrt(k)
    z, wz = _panel_nodes(_ends(_ACT_BPS / su), n)
    wz = wz * _gauss_pdf(z)
    u = su * z
    return np.sum(wz * _gelu_np(u) ** 2), np.sum(wz * _dgelu_np(u) ** 2)


def _cases():
    rng = np.random.default_rng(20240611)
    cases = []
    # random variances over 8 decades, random correlations in [-1, 1]
    for _ in range(16):
        k11, k22 = 10.0 ** rng.uniform(-4, 4, size=2)
        rho = rng.uniform(-1, 1)
        cases.append((k11, rho * math.sqrt(k11 * k22), k22))
    # high / extreme / negative correlation, small and large variances
    for k11, k22 in [(1.0, 1.0), (1e-4, 3e-4), (1e4, 5e3), (0.7, 2e3)]:
        for rho in (0.999, 1.0, -0.999, -1.0, 0.0):
            cases.append((k11, rho * math.sqrt(k11 * k22), k22))
    # coincident points written exactly as the k11 = k12 = k22 diagonal
    cases += [(k, k, k) for k in (1e-4, 0.3, 1.0, 17.0, 1e4)]
    return cases


CASES = _cases()


def _t(x):
    return torch.tensor(x, dtype=F64)


@pytest.mark.parametrize("k11,k12,k22", CASES)
def test_dual_matches_quadrature(k11, k12, k22):
    t, td = gelu_dual(_t(k11), _t(k12), _t(k22))
    rt, rtd = ref_dual(k11, k12, k22)
    d11, dd11 = ref_diag(k11)
    d22, dd22 = ref_diag(k22)
    assert abs(t.item() - rt) <= RTOL * (abs(rt) + math.sqrt(d11 * d22)), (t.item(), rt)
    assert abs(td.item() - rtd) <= RTOL * (abs(rtd) + math.sqrt(dd11 * dd22)), (td.item(), rtd)


@pytest.mark.parametrize("k", [1e-6, 1e-4, 0.01, 0.5, 1.0, 3.0, 100.0, 1e4])
def test_diag_matches_quadrature(k):
    t, td = gelu_dual_diag(_t(k))
    rt, rtd = ref_diag(k)
    assert abs(t.item() - rt) <= RTOL * abs(rt)
    assert abs(td.item() - rtd) <= RTOL * abs(rtd)


def test_reference_self_convergence():
    for k11, k12, k22 in [(1e4, 0.999 * math.sqrt(1e4 * 5e3), 5e3), (0.7, -0.3, 2e3), (1e-4, 1e-4, 1e-4)]:
        a = np.array(ref_dual(k11, k12, k22, n=40))
        b = np.array(ref_dual(k11, k12, k22, n=80))
        assert np.all(np.abs(a - b) <= 1e-13 * np.abs(b) + 1e-300)


def test_reference_vs_dblquad():
    """The composite reference itself against scipy's adaptive dblquad."""
    k11, k12, k22 = 1.3, -0.6, 0.8
    det = k11 * k22 - k12 * k12

    def dens(u, v):
        q = (k22 * u * u - 2 * k12 * u * v + k11 * v * v) / det
        return math.exp(-0.5 * q) / (2 * math.pi * math.sqrt(det))

    def phi(x):
        return x * 0.5 * math.erfc(-x / math.sqrt(2))

    L = 10 * math.sqrt(max(k11, k22))
    val, err = integrate.dblquad(
        lambda v, u: phi(u) * phi(v) * dens(u, v), -L, L, -L, L, epsabs=1e-13, epsrel=1e-11
    )
    rt, _ = ref_dual(k11, k12, k22)
    assert abs(val - rt) <= 1e-9 * abs(rt)
    t, _ = gelu_dual(_t(k11), _t(k12), _t(k22))
    assert abs(t.item() - val) <= 1e-9 * abs(val)


# --------------------------------------------------------------------------
# Monte Carlo sanity
# --------------------------------------------------------------------------
@pytest.mark.parametrize("k11,k12,k22", [(1.0, 0.5, 2.0), (3.0, -2.9, 3.0), (0.2, 0.2, 0.2)])
def test_monte_carlo(k11, k12, k22):
    g = torch.Generator().manual_seed(1234)
    cov = torch.tensor([[k11, k12], [k12, k22]], dtype=F64)
    evals, evecs = torch.linalg.eigh(cov)
    L = evecs * evals.clamp_min(0).sqrt()  # works for singular covariances too
    x = torch.randn(1_000_000, 2, dtype=F64, generator=g) @ L.T
    u, v = x[:, 0], x[:, 1]
    f = torch.nn.functional.gelu

    def df(y):
        return torch.special.ndtr(y) + y * torch.exp(-0.5 * y * y) / math.sqrt(2 * math.pi)

    t, td = gelu_dual(_t(k11), _t(k12), _t(k22))
    for samples, exact in ((f(u) * f(v), t), (df(u) * df(v), td)):
        se = samples.std() / math.sqrt(samples.numel())
        assert abs(samples.mean() - exact) <= 5 * se


# --------------------------------------------------------------------------
# Structural properties
# --------------------------------------------------------------------------
def test_diag_equals_dual_on_diagonal():
    k = torch.logspace(-6, 4, 41, dtype=F64)
    t, td = gelu_dual(k, k, k)
    dt, dtd = gelu_dual_diag(k)
    torch.testing.assert_close(t, dt, rtol=1e-13, atol=0)
    torch.testing.assert_close(td, dtd, rtol=1e-13, atol=0)


def test_price_theorem_td_is_dT_dk12():
    g = torch.Generator().manual_seed(0)
    k11 = torch.rand(7, dtype=F64, generator=g) * 5
    k22 = torch.rand(7, dtype=F64, generator=g) * 5
    k12 = ((torch.rand(7, dtype=F64, generator=g) * 2 - 1) * (k11 * k22).sqrt()).requires_grad_()
    t, td = gelu_dual(k11, k12, k22)
    (grad,) = torch.autograd.grad(t.sum(), k12)
    torch.testing.assert_close(grad, td.detach(), rtol=1e-13, atol=1e-15)


def test_broadcasting_and_dtypes():
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(5, 3, dtype=F64, generator=g)
        y = torch.randn(4, 3, dtype=F64, generator=g)
        k11 = (x * x).sum(1, keepdim=True)  # (5, 1)
        k22 = (y * y).sum(1)[None, :]  # (1, 4)
        k12 = x @ y.T  # (5, 4)
        t, td = gelu_dual(k11.to(dtype), k12.to(dtype), k22.to(dtype))
        assert t.shape == td.shape == (5, 4) and t.dtype == td.dtype == dtype
        t64, td64 = gelu_dual(k11, k12, k22)
        ref = [gelu_dual(k11[i, 0], k12[i, j], k22[0, j]) for i in range(5) for j in range(4)]
        torch.testing.assert_close(t64.flatten(), torch.stack([r[0] for r in ref]), rtol=1e-14, atol=0)
        tol = 1e-5 if dtype == torch.float32 else 1e-14
        torch.testing.assert_close(t.to(F64), t64, rtol=tol, atol=tol)
        torch.testing.assert_close(td.to(F64), td64, rtol=tol, atol=tol)
        dt, dtd = gelu_dual_diag(k11.to(dtype))
        assert dt.shape == (5, 1) and dt.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_at_extremes(dtype):
    """Coincident points (incl. rounding beyond |rho| = 1), k -> 0, k ~ 1e4."""
    k = torch.tensor([0.0, 1e-30, 1e-8, 1e-3, 1.0, 1e2, 1e4, 3e4], dtype=dtype)
    k11, k22 = k[:, None], k[None, :]
    prod = (k11 * k22).sqrt()
    for k12 in (prod, -prod, prod * (1 + 1e-6), -prod * (1 + 1e-6), 0 * prod):
        a = k11.clone().requires_grad_()
        b = k12.clone().requires_grad_()
        c = k22.clone().requires_grad_()
        t, td = gelu_dual(a, b, c)
        assert torch.isfinite(t).all() and torch.isfinite(td).all()
        grads = torch.autograd.grad((t + td).sum(), (a, b, c))
        assert all(torch.isfinite(gr).all() for gr in grads)
    kd = k.clone().requires_grad_()
    t, td = gelu_dual_diag(kd)
    assert torch.isfinite(t).all() and torch.isfinite(td).all()
    (gr,) = torch.autograd.grad((t + td).sum(), kd)
    assert torch.isfinite(gr).all()
    # physical bounds: 0 <= E[f'^2] <= E[(Phi + |u| pdf)^2]-ish; relu-like limit 1/2
    assert (td >= 0.25 - 1e-6).all() and (td < 0.6).all()


def test_float32_accuracy_large_k_coincident():
    k = torch.tensor([1e-4, 1.0, 1e2, 1e4], dtype=F64)
    k11, k22 = k[:, None], k[None, :]
    for k12 in ((k11 * k22).sqrt(), 0.999 * (k11 * k22).sqrt(), -(k11 * k22).sqrt()):
        t64, td64 = gelu_dual(k11, k12, k22)
        t32, td32 = gelu_dual(k11.float(), k12.float(), k22.float())
        scale = (gelu_dual_diag(k11)[0] * gelu_dual_diag(k22)[0]).sqrt()
        assert ((t32.double() - t64).abs() <= 1e-5 * (t64.abs() + scale)).all()
        assert ((td32.double() - td64).abs() <= 1e-5).all()


def test_gradcheck():
    g = torch.Generator().manual_seed(7)
    k11 = torch.rand(4, 1, dtype=F64, generator=g) * 3 + 0.05
    k22 = torch.rand(1, 3, dtype=F64, generator=g) * 3 + 0.05
    rho = torch.rand(4, 3, dtype=F64, generator=g) * 2 - 1
    k12 = rho * (k11 * k22).sqrt()
    inputs = [x.clone().requires_grad_() for x in (k11, k12, k22)]
    assert torch.autograd.gradcheck(gelu_dual, inputs)
    # exactly coincident points, both signs, plus the k11 = k12 = k22 diagonal
    for sign in (1.0, -1.0):
        inputs = [x.clone().requires_grad_() for x in (k11, sign * (k11 * k22).sqrt(), k22)]
        assert torch.autograd.gradcheck(gelu_dual, inputs)
    kk = torch.tensor([1e-3, 0.5, 2.0, 50.0], dtype=F64)
    inputs = [kk.clone().requires_grad_() for _ in range(3)]
    assert torch.autograd.gradcheck(gelu_dual, inputs)
    assert torch.autograd.gradcheck(gelu_dual_diag, [kk.clone().requires_grad_()])
    assert torch.autograd.gradgradcheck(gelu_dual_diag, [kk.clone().requires_grad_()])
