"""Kernel gradients at cross pairs of identical inputs (a row of x2 equal to a row of x1).

There the three partials of GELU's Ṫ in (k11, k12, k22), each of size k^-1/2, cancel to a
combination of size k^-3/2, so the gradient through the bivariate form keeps only ~1/(k·ε)
of its digits (2e-12 relative at |x|² ~ 1e8) however exact each partial is.  References: the
entry's recursion in mpmath (50+ digits) differentiated numerically, and the diagonal path
(one variable, no cancellation), which the cross entry must match in value and gradient."""
from __future__ import annotations

import math

import mpmath
import pytest
import torch

import wideNN as wn
import wideNN.analytic as analytic

from _mp_duals import mp_dual

F64 = torch.float64
W0, B0 = 1.7, 0.3


def _inputs(scale: float):
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 4, generator=g, dtype=F64) * scale
    x2 = torch.stack([torch.randn(4, generator=g, dtype=F64) * scale, x1[1], x1[2]])  # (1,1), (2,2)
    return x1, x2


def _mp_entry(u, v, w, b, depth=2):
    """(K, Θ) of one pair (u, v) in mpmath."""
    d = len(u)
    dot = lambda p, q: mpmath.fsum(a * c for a, c in zip(p, q)) / d  # noqa: E731
    k11, k22, k12 = b + w * dot(u, u), b + w * dot(v, v), b + w * dot(u, v)
    th = k12
    for _ in range(depth):
        t, td = mp_dual("gelu", k11, k12, k22)
        k12 = b + w * t
        th = k12 + w * td * th
        k11, k22 = b + w * mp_dual("gelu", k11, k11, k11)[0], b + w * mp_dual("gelu", k22, k22, k22)[0]
    return k12, th


def _mp_gradients(u, v, which, coord):
    """d/dσ_w², d/dσ_b², d/du[coord] of the entry (v held fixed), by mpmath differentiation."""
    um = [mpmath.mpf(float(a)) for a in u]
    vm = [mpmath.mpf(float(a)) for a in v]
    wm, bm = mpmath.mpf(W0), mpmath.mpf(B0)

    def fx(c):
        uu = list(um)
        uu[coord] = c
        return _mp_entry(uu, vm, wm, bm)[which]
    return (mpmath.diff(lambda s: _mp_entry(um, vm, s, bm)[which], wm),
            mpmath.diff(lambda s: _mp_entry(um, vm, wm, s)[which], bm),
            mpmath.diff(fx, um[coord]))


@pytest.mark.parametrize("scale", [1.0, 1e2, 1e3, 1e4, 1e10])
def test_cross_entry_gradients_match_mpmath(scale):
    x1, x2 = _inputs(scale)
    xg = x1.clone().requires_grad_()
    w = torch.tensor(W0, dtype=F64, requires_grad=True)
    b = torch.tensor(B0, dtype=F64, requires_grad=True)
    k, t = analytic.kernels(xg, x2, depth=2, activation="gelu", weight_variance=w, bias_variance=b)
    mpmath.mp.dps = 50 + 4 * int(math.log10(scale))
    for which, out in enumerate((k, t)):
        for i, j in ((1, 1), (2, 2), (0, 0)):  # two identical pairs and one ordinary pair
            gw, gb, gx = torch.autograd.grad(out[i, j], (w, b, xg), retain_graph=True)
            ref = _mp_gradients(x1[i], x2[j], which, coord=1)
            for name, got, want in (("w", gw, ref[0]), ("b", gb, ref[1]), ("x", gx[i, 1], ref[2])):
                assert abs(float(got) - want) <= 1e-13 * abs(want), (scale, which, (i, j), name,
                                                                     float(got), float(want))


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e20])
@pytest.mark.parametrize("cls", [wn.NNGPKernel, wn.NTKKernel])
@pytest.mark.parametrize("act", ["gelu", "erf", "relu"])
def test_gpytorch_kernel_matches_the_diagonal_path(act, cls, scale):
    """Trainable (tensor) variances: the identical pair's value and variance gradients equal the
    diagonal entry's, and its gradient in x1 is half the diagonal's (symmetry).  Every closed
    form takes this path (erf's partials cancel from O(k) to O(1) in the same way)."""
    x1, x2 = _inputs(scale)
    arch = wn.Architecture(depth=3, activation=act, weight_variance=W0, bias_variance=B0)
    kern = cls(arch).double()
    params = [p for p in kern.parameters()]
    xg = x1.clone().requires_grad_()
    cross = kern(xg, x2).to_dense()[1, 1]
    g_cross = torch.autograd.grad(cross, params + [xg])
    xd = x1[1:2].clone().requires_grad_()
    diag = kern(xd, xd, diag=True)[0]
    g_diag = torch.autograd.grad(diag, params + [xd])
    torch.testing.assert_close(cross, diag, rtol=1e-15, atol=0)
    for a, b in zip(g_cross[:-1], g_diag[:-1]):
        torch.testing.assert_close(a, b, rtol=2e-15, atol=0)
    torch.testing.assert_close(g_cross[-1][1], 0.5 * g_diag[-1][0], rtol=2e-15, atol=0)
    assert float(g_cross[-1][[0, 2]].abs().max()) == 0.0


def test_other_entries_are_unchanged(monkeypatch):
    """Only the identical pairs change: every other entry and its gradient is bitwise the
    bivariate form's (the special case turned off)."""
    x1, x2 = _inputs(1e3)

    def run():
        xg = x1.clone().requires_grad_()
        w = torch.tensor(W0, dtype=F64, requires_grad=True)
        k, t = analytic.kernels(xg, x2, depth=3, activation="gelu", weight_variance=w, bias_variance=B0)
        other = torch.ones_like(k, dtype=torch.bool)
        other[1, 1] = other[2, 2] = False
        loss = (k * other).sum() + (t * other).sum()
        return k.detach(), t.detach(), torch.autograd.grad(loss, (w, xg)), other
    k, t, grads, other = run()
    monkeypatch.setattr(analytic, "_identical_pairs_matter", lambda *a: False)
    k0, t0, grads0, _ = run()
    assert torch.equal(k[other], k0[other]) and torch.equal(t[other], t0[other])
    for a, b in zip(grads, grads0):
        assert torch.equal(a, b)
    torch.testing.assert_close(k, k0, rtol=1e-14, atol=0)  # identical pairs: values to round-off
    torch.testing.assert_close(t, t0, rtol=1e-14, atol=0)


def test_row_paired_diag_and_torch_func():
    """``diag=True`` with x2 (row-wise pairs) and torch.func.jacrev take the same exact form."""
    x1, x2 = _inputs(1e4)
    x2 = x2[[1, 0, 2]]  # rows 0 and 2 of x2 now differ from / equal those of x1 in place
    kw = dict(depth=2, activation="gelu", weight_variance=W0, bias_variance=B0)
    xg = x1.clone().requires_grad_()
    _, t = analytic.kernels(xg, x2, diag=True, **kw)
    gx = torch.autograd.grad(t[2], xg)[0][2]
    xd = x1[2:3].clone().requires_grad_()
    ref = 0.5 * torch.autograd.grad(analytic.kernels(xd, diag=True, **kw)[1][0], xd)[0][0]
    torch.testing.assert_close(gx, ref, rtol=2e-15, atol=0)
    jac = torch.func.jacrev(lambda x: analytic.kernels(x, x2, **kw)[1])(x1)  # (3, 3, 3, 4)
    torch.testing.assert_close(jac[2, 2, 2], ref, rtol=2e-15, atol=0)
