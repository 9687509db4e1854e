"""Inputs whose squares overflow (|x| ≳ 1e154 in float64, 1e19 in float32) for the activations
whose duals are not homogeneous: erf, sin and cos (bounded duals) give the exact kernel on every
path even where the first-layer kernel itself is not representable; GELU where the first layer
is; the rest a clear error naming the cause (``wideNN._large_inputs``).  References: the 50-digit
recursion of ``test_numerics_extremes`` on the same float inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import mpmath
import pytest
import torch

import wideNN as wn

sys.path.insert(0, str(Path(__file__).parent))
from test_numerics_extremes import DEPTH, W, _assert_matches, _base, _reference  # noqa: E402

F64, F32 = torch.float64, torch.float32
BOUNDED = ["erf", "sin", "cos"]
SCALES = [1e152, 1e155, 1e200, 1e300]


def _representable(ref) -> bool:
    return all(abs(v) <= torch.finfo(F64).max for row in ref for v in row)


def _all_paths(x: torch.Tensor, act: str, compute_ntk: bool):
    """(path, K, Θ or None) of the no-grad, autograd, diag, GPyTorch and Serial evaluations."""
    kw = dict(depth=DEPTH, activation=act, bias_variance=0.0, compute_ntk=compute_ntk)
    with torch.no_grad():
        yield "no_grad", *wn.analytic.kernels(x, weight_variance=W, **kw)
    w = torch.tensor(W, dtype=x.dtype, requires_grad=True)
    k, t = wn.analytic.kernels(x, weight_variance=w, **kw)
    loss = k.sum() / k.detach().abs().max() + (0 if t is None else t.sum() / t.detach().abs().max())
    loss.backward()
    assert bool(torch.isfinite(w.grad)), (act, w.grad)
    yield "autograd", k.detach(), None if t is None else t.detach()
    with torch.no_grad():
        k, t = wn.analytic.kernels(x, weight_variance=W, diag=True, **kw)
    yield "diag", torch.diag_embed(k), None if t is None else torch.diag_embed(t)
    arch = wn.Architecture(depth=DEPTH, activation=act, weight_variance=W, bias_variance=0.0)
    k = wn.NNGPKernel(arch).to(x.dtype)(x).to_dense().detach()
    t = wn.NTKKernel(arch).to(x.dtype)(x).to_dense().detach() if compute_ntk else None
    yield "gpytorch", k, t
    net = wn.Serial(wn.Dense(), act, wn.Dense(), act, wn.Dense(), weight_variance=W, bias_variance=0.0)
    yield "serial", *(net.kernels(x) if compute_ntk else (net.nngp(x), None))


def _diagonal_only(ref):
    return tuple(tuple(v if i == j else mpmath.mpf(0) for j, v in enumerate(row)) for i, row in enumerate(ref))


@pytest.mark.parametrize("scale", SCALES, ids=[f"{s:g}" for s in SCALES])
@pytest.mark.parametrize("act", BOUNDED)
def test_bounded_duals_exact_beyond_the_first_layer_range(act, scale):
    """K¹ ~ scale² overflows from 1e155 on; K² onwards is bounded.  The NTK of erf grows like √K¹
    at coincident points (representable up to 1e300); sin's and cos's like K¹ (not representable
    from 1e155 on: a clear error, while the NNGP alone is exact)."""
    ref_k, ref_t = _reference(act, scale)
    x = _base() * scale
    if not _representable(ref_t):
        with pytest.raises(ValueError, match="overflow"):
            wn.analytic.kernels(x, depth=DEPTH, activation=act, weight_variance=W, bias_variance=0.0)
    with_ntk = _representable(ref_t)
    for path, k, t in _all_paths(x, act, with_ntk):
        rk, rt = (_diagonal_only(ref_k), _diagonal_only(ref_t)) if path == "diag" else (ref_k, ref_t)
        _assert_matches(k, rk, 1e-12, f"{act} {path} K")
        if with_ntk:
            _assert_matches(t, rt, 1e-12, f"{act} {path} Θ")
            _assert_entrywise(t, rt, f"{act} {path} Θ")


def _assert_entrywise(got: torch.Tensor, ref, what: str) -> None:
    """Each entry to 1e-11 of itself (erf's Θ spans O(1) off the diagonal to ~scale on it, so the
    scale of the largest entry would hide the small ones)."""
    for i, row in enumerate(ref):
        for j, v in enumerate(row):
            if v == 0:
                continue
            err = abs(mpmath.mpf(float(got[i, j])) - v)
            assert err <= 1e-11 * abs(v) + 1e-300, f"{what}[{i},{j}]: {float(got[i, j])!r} vs {float(v)!r}"


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e37])
@pytest.mark.parametrize("act", BOUNDED)
def test_bounded_duals_float32_match_float64(act, scale):
    x = (_base() * scale).float()
    ref_k, ref_t = wn.analytic.kernels(x.double(), depth=DEPTH, activation=act, weight_variance=W,
                                       bias_variance=0.0, compute_ntk=act == "erf")
    for path, k, t in _all_paths(x, act, act == "erf"):
        for got, want in ((k, ref_k), (t, ref_t)):
            if want is None:
                continue
            want = torch.diag_embed(want.diagonal()) if path == "diag" else want
            err = float((got.double() - want).abs().max())
            assert err <= 2e-5 * float(want.abs().max()), (act, path, err)


def test_erf_gradients_in_inputs_and_variances_at_1e300():
    """Finite, and equal to the gradient of the same kernel at inputs 1e-290× smaller with
    σ_w² scaled to match: erf's T depends only on k12/√((1+2k11)(1+2k22)), which at these
    variances is the correlation, so K² is scale-free in x and its x-gradient scales by 1/scale."""
    x = _base()
    grads = []
    for scale in (1e10, 1e300):
        xs = (x * scale).requires_grad_()
        w = torch.tensor(W, dtype=F64, requires_grad=True)
        b = torch.tensor(0.1, dtype=F64, requires_grad=True)
        k, _ = wn.analytic.kernels(xs, depth=DEPTH, activation="erf", weight_variance=w, bias_variance=b,
                                   compute_ntk=False)
        gw, gb, gx = torch.autograd.grad(k.sum(), (w, b, xs))
        assert all(bool(torch.isfinite(g).all()) for g in (gw, gb, gx))
        grads.append((gw, gb, gx * scale))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_rows_far_below_the_largest_get_a_clear_error():
    x = _base()
    with pytest.raises(ValueError, match="one scale"):
        wn.analytic.kernels(torch.cat([x * 1e200, x]), depth=2, activation="erf", weight_variance=W,
                            bias_variance=0.0)
    # neighbour: within 2^30 of each other, one scale serves
    k, _ = wn.analytic.kernels(torch.cat([x * 1e200, x * 1e195]), depth=2, activation="erf",
                               weight_variance=W, bias_variance=0.0)
    assert bool(torch.isfinite(k).all())


def test_gelu_needs_a_representable_first_layer_and_gets_it_exactly():
    """x·x' overflows at 1e155 but σ_w²|x|²/d does not for σ_w² = 1e-10: GELU's kernel (≈ ReLU's
    at these variances) is exact; at 1e160 the first layer itself overflows: a clear error."""
    x = _base() * 1e155
    w = 1e-10
    k, t = wn.analytic.kernels(x, depth=2, activation="gelu", weight_variance=w, bias_variance=0.0)
    kr, tr = wn.analytic.kernels(x, depth=2, activation="relu", weight_variance=w, bias_variance=0.0)
    torch.testing.assert_close(k, kr, rtol=0, atol=1e-14 * float(kr.abs().max()))
    torch.testing.assert_close(t, tr, rtol=0, atol=1e-14 * float(tr.abs().max()))
    wt = torch.tensor(w, dtype=F64, requires_grad=True)
    kg, _ = wn.analytic.kernels(x, depth=2, activation="gelu", weight_variance=wt, bias_variance=0.0)
    (g,) = torch.autograd.grad(kg.sum() / kg.detach().abs().max(), wt)
    assert bool(torch.isfinite(g))
    with pytest.raises(ValueError, match="first-layer kernel .* overflows"):
        wn.analytic.kernels(_base() * 1e160, depth=2, activation="gelu", weight_variance=W, bias_variance=0.0)


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_quadrature_activations_give_the_reason(act):
    """The first layer overflows: that error; representable but beyond the rule: the estimate."""
    with pytest.raises(ValueError, match="first-layer kernel .* overflows"):
        wn.analytic.kernels(_base() * 1e160, depth=2, activation=act, weight_variance=W, bias_variance=0.0)
    with pytest.raises(ValueError, match="estimated relative error"):
        wn.analytic.kernels(_base() * 1e152, depth=2, activation=act, weight_variance=1e-10, bias_variance=0.0)


@pytest.mark.parametrize("act", BOUNDED + ["gelu"])
def test_tiny_weight_variance_leaves_ordinary_variances(act):
    """x·x' overflows (inputs ~2^520) while σ_w² = 2^-1039 leaves K¹ = 2·x_base·x_base'/d of order
    1: the first dual is the ordinary one of K¹ (the scaled duals, which drop the 1 of 1 + 2k,
    must not be used), so K² = σ_w² T(K¹) with T computed from the base inputs."""
    x = _base()
    w = W * 2.0 ** -1040
    k, _ = wn.analytic.kernels(x * 2.0 ** 520, depth=1, activation=act, weight_variance=w,
                               bias_variance=0.0, compute_ntk=False)
    g = W * x @ x.T / x.shape[1]
    n = g.diagonal()
    t_ref, _ = wn.activations.get(act).dual(n[:, None], g, n[None, :])
    # K² is subnormal (≈ 2^-1039): compared at its own precision (~2^-30 relative)
    torch.testing.assert_close(k / w, t_ref, rtol=1e-8, atol=1e-8 * float(t_ref.abs().max()))


def test_many_features_whose_squared_sum_overflows():
    """70 000 features of 5e151: each square is representable, their sum is not (the first-layer
    kernel itself, the mean, is).  erf's NNGP at these variances depends only on the correlations:
    the same as 1e100× smaller inputs."""
    x = torch.randn(3, 70_000, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = x / x.abs().max() * 5e151
    k = wn.analytic.kernels(x, depth=2, activation="erf", weight_variance=W, bias_variance=0.0,
                            compute_ntk=False)[0]
    ref = wn.analytic.kernels(x * 1e-100, depth=2, activation="erf", weight_variance=W, bias_variance=0.0,
                              compute_ntk=False)[0]
    torch.testing.assert_close(k, ref, rtol=1e-13, atol=0)
