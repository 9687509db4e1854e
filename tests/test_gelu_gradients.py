"""GELU kernel gradients at every variance: the explicit backward of ``wideNN._gelu_grad``.

References: the partials of the closed form differentiated at 40 + 3·|log10 k| digits with
mpmath (numerical differentiation of the 50-digit-exact closed form), and the gradients of the
whole NNGP/NTK recursion with respect to σ_w², σ_b² and an input entry against the 60-digit
recursion of ``test_numerics_extremes`` differentiated the same way.  The autograd graph of the
closed form lost all digits of ∂T/∂k11 at coincident points from k ~ 1e16 on and gave NaN near
the top of the float range."""
from __future__ import annotations

import math

import mpmath
import pytest
import torch

import wideNN as wn
from wideNN._gelu import gelu_dual, gelu_dual_diag

from _mp_duals import mp_dual

F64, F32 = torch.float64, torch.float32


def _mp_gelu(k11, k12, k22):
    return mp_dual("gelu", k11, k12, k22)


def _mp_partials(k11, k12, k22):
    """[[∂T/∂k11, ∂T/∂k12, ∂T/∂k22], [∂Ṫ/∂k11, …]] by mpmath differentiation."""
    mpmath.mp.dps = 40 + 3 * int(abs(math.log10(max(k11, k22))))
    k = [mpmath.mpf(v) for v in (k11, k12, k22)]
    h = mpmath.mpf(10) ** -30 * min(k[0], k[2], 1)
    out = []
    for idx in (0, 1):
        row = []
        for j in range(3):
            def f(v, j=j):
                args = list(k)
                args[j] = v
                return _mp_gelu(*args)[idx]
            row.append(mpmath.diff(f, k[j], h=h))
        out.append(row)
    return out


# (k22/k11, correlation): coincident, correlated, anti-correlated, orthogonal, unequal variances
PAIRS = [(1.0, 1.0), (1.0, -1.0), (1.0, 0.6), (1.0, -0.9), (1.0, 0.0), (3.0, 0.6), (0.01, 0.3), (1e-6, 0.5)]


@pytest.mark.parametrize("k", [1e-3, 1.0, 1e3, 1e8, 1e16, 1e40, 1e150, 1e300])
def test_partials_match_high_precision_derivatives(k):
    rows = []
    for ratio, c in PAIRS:
        k22 = k * ratio
        k12 = c * math.sqrt(k) * math.sqrt(k22) if abs(c) != 1 else c * k
        rows.append((k, k12, k22))
    k11, k12, k22 = (torch.tensor(col, dtype=F64, requires_grad=True) for col in zip(*rows))
    t, td = gelu_dual(k11, k12, k22)
    for which, out in enumerate((t, td)):
        grads = torch.autograd.grad(out.sum(), (k11, k12, k22), retain_graph=True)
        for i, args in enumerate(rows):
            ref = _mp_partials(*args)[which]
            for j in range(3):
                got, want = float(grads[j][i]), ref[j]
                assert abs(got - want) <= 1e-13 * abs(want) + 1e-300, (k, args, which, j, got, float(want))


@pytest.mark.parametrize("k", [1e3, 1e20, 1e300])
def test_forward_mode_and_diagonal_agree_with_the_backward(k):
    k11 = torch.tensor([k, k], dtype=F64)
    k22 = torch.tensor([k, 2 * k], dtype=F64)
    k12 = torch.tensor([k, 0.4 * k], dtype=F64)
    tangents = tuple(torch.tensor([0.3, -1.2], dtype=F64) * s for s in (1.0, 0.5, 2.0))
    _, (jt, jtd) = torch.func.jvp(gelu_dual, (k11, k12, k22), tangents)
    args = [v.clone().requires_grad_() for v in (k11, k12, k22)]
    t, td = gelu_dual(*args)
    for out, jv in ((t, jt), (td, jtd)):
        g = torch.autograd.grad(out.sum(), args, retain_graph=True)
        want = sum(gi * ti for gi, ti in zip(g, tangents))
        torch.testing.assert_close(jv, want, rtol=1e-14, atol=0)
    # the diagonal form's own gradient: d/dk T(k, k, k) = ∂11 + ∂12 + ∂22
    kd = k11[:1].clone().requires_grad_()
    gd = [torch.autograd.grad(o.sum(), kd, retain_graph=True)[0] for o in gelu_dual_diag(kd)]
    kk = k11[:1].clone().requires_grad_()
    gf = [torch.autograd.grad(o.sum(), kk, retain_graph=True)[0] for o in gelu_dual(kk, kk, kk)]
    # (dṪ/dk ~ k^-3/2 is the sum of partials ~ k^-1/2: the full form's sum keeps ~ε/√k absolute)
    for a, b in zip(gd, gf):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14 / math.sqrt(k))


def test_gradcheck_and_second_derivatives_above_the_direct_range():
    args = [torch.tensor(v, dtype=F64, requires_grad=True) for v in ([2e3, 5e3], [1e3, -2e3], [[3e3], [1.5e3]])]
    assert torch.autograd.gradcheck(gelu_dual, args)
    assert torch.autograd.gradgradcheck(gelu_dual, args)


# ----------------------------------------------------------------------------- whole recursion
def _mp_kernels(x, w, b, depth=2):
    """(ΣK, ΣΘ) over all pairs of rows of x at the current mpmath precision."""
    d = len(x[0])
    dot = lambda u, v: mpmath.fsum(p * q for p, q in zip(u, v)) / d  # noqa: E731
    sk = st = mpmath.mpf(0)
    for u in x:
        for v in x:
            k11, k22, k12 = b + w * dot(u, u), b + w * dot(v, v), b + w * dot(u, v)
            th = k12
            for _ in range(depth):
                t, td = _mp_gelu(k11, k12, k22)
                k12 = b + w * t
                th = k12 + w * td * th
                k11, k22 = b + w * _mp_gelu(k11, k11, k11)[0], b + w * _mp_gelu(k22, k22, k22)[0]
            sk += k12
            st += th
    return sk, st


@pytest.mark.parametrize("scale", [1.0, 1e10, 1e40, 1e140])
def test_kernel_gradients_in_variances_and_inputs_match_mpmath(scale):
    x = torch.tensor([[0.3, -1.1, 0.7], [1.2, 0.4, -0.5], [0.6, -0.2, 0.1]], dtype=F64) * scale
    w0, b0 = 1.7, 0.3
    xg = x.clone().requires_grad_()
    w = torch.tensor(w0, dtype=F64, requires_grad=True)
    b = torch.tensor(b0, dtype=F64, requires_grad=True)
    k, t = wn.analytic.kernels(xg, depth=2, activation="gelu", weight_variance=w, bias_variance=b)
    got = [torch.autograd.grad(out.sum(), (w, b, xg), retain_graph=True) for out in (k, t)]
    mpmath.mp.dps = 60 + 4 * int(math.log10(scale))  # K ~ scale², its products ~ scale⁴
    xm = [[mpmath.mpf(float(v)) for v in row] for row in x]
    wm, bm = mpmath.mpf(w0), mpmath.mpf(b0)
    for which in (0, 1):
        fw = lambda v: _mp_kernels(xm, v, bm)[which]  # noqa: E731
        fb = lambda v: _mp_kernels(xm, wm, v)[which]  # noqa: E731

        def fx(v):
            xx = [row[:] for row in xm]
            xx[0][1] = v
            return _mp_kernels(xx, wm, bm)[which]
        refs = [mpmath.diff(fw, wm), mpmath.diff(fb, bm), mpmath.diff(fx, xm[0][1])]
        gw, gb, gx = got[which]
        for name, g, ref in (("w", gw, refs[0]), ("b", gb, refs[1]), ("x", gx[0, 1], refs[2])):
            assert abs(float(g) - ref) <= 1e-12 * abs(ref), (scale, which, name, float(g), float(ref))


@pytest.mark.parametrize("dtype,scale", [(F64, 1e150), (F64, 2e153), (F32, 1e17), (F32, 1.5e18)])
def test_gradients_are_finite_near_the_top_of_the_range(dtype, scale):
    """Where the kernel itself is finite (up to a few times below the float maximum) so is its
    gradient in σ_w², σ_b² and the inputs (the graph of the closed form overflowed to NaN)."""
    x = (torch.tensor([[0.3, -1.1, 0.7], [1.2, 0.4, -0.5]], dtype=F64) * scale).to(dtype).requires_grad_()
    w = torch.tensor(1.0, dtype=dtype, requires_grad=True)
    b = torch.tensor(0.1, dtype=dtype, requires_grad=True)
    k, t = wn.analytic.kernels(x, depth=2, activation="gelu", weight_variance=w, bias_variance=b,
                               compute_ntk=True)
    assert bool(torch.isfinite(k).all()) and bool(torch.isfinite(t).all())
    top = float(torch.maximum(k.detach().abs().max(), t.detach().abs().max()))
    grads = torch.autograd.grad((k.sum() + t.sum()) / top, (w, b, x))
    for g in grads:
        assert bool(torch.isfinite(g).all()), grads
    assert float(grads[0]) > 0  # the kernel grows with σ_w²


def test_gpytorch_kernel_gradients_are_finite_at_large_inputs():
    x = torch.tensor([[0.3, -1.1, 0.7], [1.2, 0.4, -0.5], [0.6, -0.2, 0.1]], dtype=F64) * 1e140
    arch = wn.Architecture(depth=2, activation="gelu", weight_variance=1.5, bias_variance=0.1)
    for cls in (wn.NNGPKernel, wn.NTKKernel):
        kern = cls(arch).double()
        out = kern(x).to_dense()
        (out.sum() / out.detach().abs().max()).backward()
        grads = [p.grad for p in kern.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads), cls.__name__
