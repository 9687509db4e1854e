"""Kernels at extreme input scales: the exact value wherever it is representable, else a clear error.

Every closed-form activation × input scales from 1e-310 (subnormal) to 1e300 × float64 / float32
× the no-grad (fused), autograd (tensor variances) and diag paths, against the recursion run at
50 significant digits (mpmath) on the same inputs: a float64 result must agree to round-off
relative to the largest entry (Cauchy–Schwarz bounds every entry by the diagonal), or underflow
where the exact value does.  A result that is not representable must raise ValueError naming
the overflow.  Independent checks: ReLU's homogeneity K(αx) = α²K(x), GELU's ReLU limit at large
variance, erf/tanh ≈ their linearisation at tiny variance.
"""
from __future__ import annotations

import functools
import math

import mpmath
import pytest
import torch

import wideNN as wn

from _mp_duals import mp_dual as _mp_dual

F64, F32 = torch.float64, torch.float32
SCALES = [1e-310, 1e-150, 1e-20, 1.0, 1e20, 1e150, 1e300]
CLOSED = ["relu", "leaky_relu", "abs", "step", "erf", "gelu", "sin", "cos", "identity"]
DEPTH, W = 2, 2.0


def _base() -> torch.Tensor:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    x[2] = 0.5 * x[0] + 0.1 * x[1]  # a pair at correlation ~0.98
    return x


# ----------------------------------------------------------------------------- 50-digit reference
@functools.lru_cache(maxsize=None)
def _reference(name: str, scale: float, depth: int = DEPTH, w: float = W) -> tuple[tuple, tuple]:
    """(K, Θ) of the float64 inputs _base()·scale at 50 digits, as nested tuples of mpf."""
    mpmath.mp.dps = 50
    x = (_base() * scale).tolist()
    d = len(x[0])
    w = mpmath.mpf(w)
    dot = lambda u, v: mpmath.fsum(mpmath.mpf(p) * mpmath.mpf(q) for p, q in zip(u, v)) / d  # noqa: E731
    kk, tt = [], []
    for u in x:
        rk, rt = [], []
        for v in x:
            k11, k22, k12 = w * dot(u, u), w * dot(v, v), w * dot(u, v)
            th = k12
            for _ in range(depth):
                t, td = _mp_dual(name, k11, k12, k22)
                k12 = w * t
                th = k12 + w * td * th
                k11, k22 = w * _mp_dual(name, k11, k11, k11)[0], w * _mp_dual(name, k22, k22, k22)[0]
            rk.append(k12)
            rt.append(th)
        kk.append(tuple(rk))
        tt.append(tuple(rt))
    return tuple(kk), tuple(tt)


def _assert_matches(got: torch.Tensor, ref, rtol: float, what: str) -> None:
    """|got − ref| ≤ rtol·max|ref| + 8 ulps of the smallest subnormal (results that underflow)."""
    top = max(abs(v) for row in ref for v in row)
    atol = 8 * 2.0 ** -1074 if got.dtype == F64 else 8 * 2.0 ** -149
    for i, row in enumerate(ref):
        for j, v in enumerate(row):
            err = abs(mpmath.mpf(float(got[i, j])) - v)
            assert err <= rtol * top + atol, f"{what}[{i},{j}]: {float(got[i, j])!r} vs {float(v)!r}"


def _representable(ref, dtype) -> bool:
    return all(abs(v) <= torch.finfo(dtype).max for row in ref for v in row)


def _paths(x: torch.Tensor, act: str, depth: int = DEPTH, w: float = W):
    """(name, K, Θ) of the no-grad, autograd and diag paths (the diag path as a diagonal matrix)."""
    with torch.no_grad():
        yield "no_grad", *wn.analytic.kernels(x, depth=depth, activation=act, weight_variance=w, bias_variance=0.0)
    wt = torch.tensor(w, dtype=x.dtype, requires_grad=True)
    k, t = wn.analytic.kernels(x, depth=depth, activation=act, weight_variance=wt, bias_variance=0.0)
    # the gradient of a scale-free loss is finite (a fit's step needs it); kernels that
    # underflowed carry none
    info = torch.finfo(x.dtype)
    tops = [float(v.detach().abs().max()) for v in (k, t)]
    if min(tops) > info.tiny / info.eps ** 2:
        (k.sum() / tops[0] + t.sum() / tops[1]).backward()
        assert bool(torch.isfinite(wt.grad)), (act, wt.grad)
    yield "autograd", k.detach(), t.detach()
    with torch.no_grad():
        k, t = wn.analytic.kernels(x, depth=depth, activation=act, weight_variance=w, bias_variance=0.0, diag=True)
    yield "diag", torch.diag_embed(k), torch.diag_embed(t)


def _paths_or_first_layer_refusal(x: torch.Tensor, act: str):
    """The results of ``_paths``, or None when the call was refused because the first layer
    overflows — allowed only for the activations that carry no scale (erf, sin, … of inputs
    ~1e300: σ_w²|x|²/d itself overflows), and only with the cause named."""
    try:
        return list(_paths(x, act))
    except ValueError as err:
        assert "first-layer kernel" in str(err) and "overflows" in str(err), err
        assert act not in ("relu", "leaky_relu", "abs", "step", "identity")  # these carry a scale
        return None


def _diagonal_only(ref):
    return tuple(tuple(v if i == j else mpmath.mpf(0) for j, v in enumerate(row)) for i, row in enumerate(ref))


# ----------------------------------------------------------------------------- float64
@pytest.mark.parametrize("scale", SCALES, ids=[f"{s:g}" for s in SCALES])
@pytest.mark.parametrize("act", CLOSED)
def test_closed_forms_float64_exact_or_clear_error(act, scale):
    ref_k, ref_t = _reference(act, scale)
    x = _base() * scale
    if not (_representable(ref_k, F64) and _representable(ref_t, F64)):
        with pytest.raises(ValueError, match="overflow"):
            wn.analytic.kernels(x, depth=DEPTH, activation=act, weight_variance=W, bias_variance=0.0)
        return
    results = _paths_or_first_layer_refusal(x, act)
    if results is None:
        return
    for path, k, t in results:
        rk, rt = (_diagonal_only(ref_k), _diagonal_only(ref_t)) if path == "diag" else (ref_k, ref_t)
        _assert_matches(k, rk, 1e-12, f"{act} {path} K")
        _assert_matches(t, rt, 1e-12, f"{act} {path} Θ")


# ----------------------------------------------------------------------------- float32
SCALES32 = {1e-310: 1e-40, 1e-150: 1e-19, 1e-20: 1e-3, 1.0: 1.0, 1e20: 1e3, 1e150: 1e18, 1e300: 1e36}


@pytest.mark.parametrize("scale", list(SCALES32.values()), ids=[f"{s:g}" for s in SCALES32.values()])
@pytest.mark.parametrize("act", CLOSED)
def test_closed_forms_float32_match_float64_or_clear_error(act, scale):
    """float32 over its own range (1e-40 is subnormal, 1e36 overflows the first layer):
    the float64 kernel of the same inputs (checked above) to float32 round-off, or an error."""
    x = (_base() * scale).float()
    try:
        with torch.no_grad():
            ref = wn.analytic.kernels(x.double(), depth=DEPTH, activation=act, weight_variance=W, bias_variance=0.0)
    except ValueError:
        ref = None
    fits = ref is not None and all(bool((r.abs() <= torch.finfo(F32).max).all()) for r in ref)
    if not fits:
        with pytest.raises(ValueError, match="overflow"):
            wn.analytic.kernels(x, depth=DEPTH, activation=act, weight_variance=W, bias_variance=0.0)
        return
    results = _paths_or_first_layer_refusal(x, act)
    if results is None:
        return
    for path, k, t in results:
        for got, want in ((k, ref[0]), (t, ref[1])):
            want = torch.diag_embed(want.diagonal()) if path == "diag" else want
            top = float(want.abs().max())
            err = float((got.double() - want).abs().max())
            # float32 round-off over two layers; entries below float32's normal range (≈1e-38)
            # keep only their subnormal ulps
            assert err <= 2e-5 * top + 16 * 2.0 ** -149, (act, path, err, top)


# ----------------------------------------------------------------------------- independent checks
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "abs", "identity"])
@pytest.mark.parametrize("scale", [2.0 ** -1030, 2.0 ** -500, 2.0 ** 500])
def test_homogeneous_duals_scale_exactly(act, scale):
    """σ_b² = 0: K(αx) = α²K(x) and Θ(αx) = α²Θ(x) (α a power of two, the result normal) to
    round-off: the two calls may take different paths (fused tiles / scaled generic recursion)."""
    x = _base()
    w1 = torch.tensor(W, dtype=F64, requires_grad=True)
    k, t = wn.analytic.kernels(x, depth=3, activation=act, weight_variance=w1, bias_variance=0.0)
    w = torch.tensor(W, dtype=F64, requires_grad=True)
    ks, ts = wn.analytic.kernels(x * scale, depth=3, activation=act, weight_variance=w, bias_variance=0.0)
    if scale * scale < 2.0 ** -1022:  # the output itself is below the float range: it underflows
        assert bool((ks == 0).all())
        return
    torch.testing.assert_close(ks.detach(), k.detach() * scale ** 2, rtol=1e-14, atol=0)
    torch.testing.assert_close(ts.detach(), t.detach() * scale ** 2, rtol=1e-14, atol=0)
    # and so are the gradients in the hyperparameters (through the carried scale)
    (g1,) = torch.autograd.grad(k.sum() + t.sum(), w1)
    (gs,) = torch.autograd.grad((ks.sum() + ts.sum()) / scale ** 2, w)
    torch.testing.assert_close(gs, g1, rtol=1e-13, atol=0)


def test_step_kernel_is_scale_free_down_to_subnormal_inputs():
    x = _base()
    for dtype, tiny in ((F64, 1e-310), (F32, 1e-40)):
        k, t = wn.analytic.kernels(x, depth=2, activation="step", weight_variance=W, bias_variance=0.0)
        kt, tt = wn.analytic.kernels((x * tiny).to(dtype), depth=2, activation="step", weight_variance=W,
                                     bias_variance=0.0)
        # subnormal inputs carry fewer bits: the correlations (and so K) to their precision
        torch.testing.assert_close(kt.double(), k, rtol=1e-4 if dtype == F32 else 1e-9, atol=0)


@pytest.mark.parametrize("grad", [False, True])
def test_deep_relu_with_growing_variance_is_exact_from_subnormal_inputs(grad):
    """ReLU, σ_w² = 5, depth 1000: K grows by 2.5 per layer (≈1e398 in all).  Inputs of 1e-310 give
    a representable ~1e-222 (the layers in between are carried with a power-of-two scale);
    inputs of 1 overflow with a clear error, and float32 inputs of 1e-40 too."""
    x = _base()
    w = torch.tensor(5.0, dtype=F64, requires_grad=True) if grad else 5.0
    k, _ = wn.analytic.kernels(x * 1e-310, depth=1000, activation="relu", weight_variance=w, bias_variance=0.0)
    x_tiny = (x * 1e-310).tolist()
    mpmath.mp.dps = 30
    for i, u in enumerate(x_tiny):
        kd = 5 * mpmath.fsum(mpmath.mpf(p) ** 2 for p in u) / 4 * mpmath.mpf(2.5) ** 1000
        assert abs(mpmath.mpf(float(k[i, i])) - kd) <= 1e-12 * kd
    with pytest.raises(ValueError, match="overflow"):
        wn.analytic.kernels(x, depth=1000, activation="relu", weight_variance=w, bias_variance=0.0)
    with pytest.raises(ValueError, match="overflow"):
        wn.analytic.kernels((x * 1e-40).float(), depth=1000, activation="relu", weight_variance=5.0,
                            bias_variance=0.0)


@pytest.mark.parametrize("scale", [1e20, 1e150])
def test_gelu_tends_to_relu_at_large_variance(scale):
    """GELU(u) − ReLU(u) = −|u|Φ(−|u|) is bounded, so the kernels agree to O(1/√k) relative
    (below round-off here: 1e-20 and 1e-150)."""
    x = _base() * scale
    for grad in (False, True):
        w = torch.tensor(W, dtype=F64, requires_grad=True) if grad else W
        kg, tg = wn.analytic.kernels(x, depth=2, activation="gelu", weight_variance=w, bias_variance=0.0)
        kr, tr = wn.analytic.kernels(x, depth=2, activation="relu", weight_variance=W, bias_variance=0.0)
        torch.testing.assert_close(kg.detach(), kr, rtol=0, atol=1e-14 * float(kr.abs().max()))
        torch.testing.assert_close(tg.detach(), tr, rtol=0, atol=1e-14 * float(tr.abs().max()))


@pytest.mark.parametrize("act,slope", [("erf", 4 / math.pi), ("tanh", 1.0), ("sin", 1.0), ("gelu", 0.25)])
def test_smooth_duals_are_linear_at_tiny_variance(act, slope):
    """φ(u) = φ'(0)u + O(u²): at |x| ~ 1e-150 (K ~ 1e-300) the kernel is that of a linear network
    with E[φ'(0)²uv] = slope·k12, i.e. K = σ_w² (σ_w² slope)^depth x·x'/d, to relative 1e-300."""
    x = _base() * 1e-150
    w = torch.tensor(W, dtype=F64, requires_grad=True)
    k, t = wn.analytic.kernels(x, depth=2, activation=act, weight_variance=w, bias_variance=0.0)
    g = x @ x.T / 4
    k_lin = W * (W * slope) ** 2 * g
    t_lin = k_lin * 3  # Θ = K¹(σ_w² slope)² + K²(σ_w² slope) + K³, all equal to K here
    torch.testing.assert_close(k.detach(), k_lin, rtol=1e-13, atol=1e-13 * float(k_lin.abs().max()))
    torch.testing.assert_close(t.detach(), t_lin, rtol=1e-13, atol=1e-13 * float(t_lin.abs().max()))


def test_quadrature_beyond_its_resolution_is_refused():
    """tanh at variance ≥ ~100: a trapezoid rule of bounded size cannot follow tanh(√k z) (it gave
    E[φ'²] 19 % off at 1000 and 3500× at 1e10, silently): a clear error naming the estimate."""
    act = wn.activations.Tanh()
    act.dual_diag(torch.tensor([60.0], dtype=F64))  # within the resolved range
    with pytest.raises(ValueError, match="estimated relative error"):
        act.dual_diag(torch.tensor([1e4], dtype=F64))
    with pytest.raises(ValueError, match="estimated relative error"):
        wn.Architecture(depth=2, activation="tanh").ntk(_base() * 1e10)


@pytest.mark.parametrize("scale", [1e-150, 1e150])
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_gpytorch_and_layers_paths_agree_at_extreme_scales(act, scale):
    x = _base() * scale
    arch = wn.Architecture(depth=DEPTH, activation=act, weight_variance=W, bias_variance=0.0)
    ref_k, ref_t = _reference(act, scale)
    for cls, ref in ((wn.NNGPKernel, ref_k), (wn.NTKKernel, ref_t)):
        kern = cls(arch).double()
        out = kern(x).to_dense()  # autograd on, as in fitting
        _assert_matches(out.detach(), ref, 1e-12, f"{cls.__name__}")
    net = wn.Serial(wn.Dense(), act, wn.Dense(), act, wn.Dense(), weight_variance=W, bias_variance=0.0)
    k, t = net.kernels(x)
    _assert_matches(k, ref_k, 1e-12, "Serial K")
    _assert_matches(t, ref_t, 1e-12, "Serial Θ")


def test_inputs_no_common_scale_can_hold_get_a_clear_error():
    x = _base()
    with pytest.raises(ValueError, match="one scale"):
        wn.analytic.kernels(torch.cat([x, x * 1e-200]), depth=2, activation="relu", weight_variance=W,
                            bias_variance=0.0)
    # a bias variance keeps the small rows' variances normal: exact as they are
    k, _ = wn.analytic.kernels(torch.cat([x, x * 1e-200]), depth=2, activation="relu", weight_variance=W,
                               bias_variance=0.1)
    assert bool(torch.isfinite(k).all())


def test_convolutional_descriptions_exact_or_clear_error():
    """The layer-by-layer evaluation (Conv, Flatten): exact at 1e±150 (ReLU homogeneity, step
    scale-free), and for subnormal inputs (a power-of-two scale carried through the layers: ReLU's
    kernel ~1e-620 rounds to 0, step's is that of x to the ~2^-44 the subnormal inputs keep; a
    step kernel was 33 % off at 1e-310 before the scale) and at 1e300 (step); a clear error for an
    overflowing kernel (ReLU at 1e300; it returned NaN before) and for subnormal inputs of a
    non-homogeneous activation."""
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    for act in ("relu", "step"):
        net = wn.Serial(wn.Conv(4), act, wn.Conv(4), act, wn.Flatten(), wn.Dense(),
                        weight_variance=W, bias_variance=0.0)
        k, t = net.kernels(x)
        for scale in (1e-150, 1e150):
            ks, ts = net.kernels(x * scale)
            factor = scale ** 2 if act == "relu" else 1.0
            torch.testing.assert_close(ks / factor, k, rtol=1e-13, atol=1e-13 * float(k.abs().max()))
            torch.testing.assert_close(ts / factor, t, rtol=1e-13, atol=1e-13 * float(t.abs().max()))
        ks, ts = net.kernels(x * 1e-310)
        if act == "relu":
            assert not bool(ks.any()) and not bool(ts.any())
        else:
            torch.testing.assert_close(ks, k, rtol=1e-11, atol=1e-11 * float(k.abs().max()))
            torch.testing.assert_close(ts, t, rtol=1e-11, atol=1e-11 * float(t.abs().max()))
        if act == "relu":
            with pytest.raises(ValueError, match="overflowed"):  # K ~ 1e600
                net.kernels(x * 1e300)
        else:  # step's kernel is scale-free: that of x
            ks, ts = net.kernels(x * 1e300)
            torch.testing.assert_close(ks, k, rtol=1e-13, atol=1e-13 * float(k.abs().max()))
            torch.testing.assert_close(ts, t, rtol=1e-13, atol=1e-13 * float(t.abs().max()))
    erf = wn.Serial(wn.Conv(4), "erf", wn.Flatten(), wn.Dense(), weight_variance=W, bias_variance=0.0)
    with pytest.raises(ValueError, match="normal range"):
        erf.kernels(x * 1e-310)


@pytest.mark.parametrize("act,k", [("erf", 0.3), ("erf", 1e3), ("erf", 1e20), ("erf", 1e100),
                                   ("gelu", 0.3), ("gelu", 1e3), ("gelu", 1e12)])
def test_price_theorem_holds_for_the_rewritten_duals(act, k):
    """∂E[φ(u)φ(v)]/∂k12 = E[φ'(u)φ'(v)] (Price 1958): autograd of T against Ṫ, at coincident,
    correlated and anti-correlated points, below and above erf's direct-form threshold.  (Above
    variance 1024 GELU's backward is the explicit one of ``wideNN._gelu_grad``, checked against
    high-precision derivatives in ``test_gelu_gradients``.)"""
    phi = wn.activations.get(act)
    k11 = torch.tensor([k, k, k, k], dtype=F64)
    k22 = torch.tensor([k, 3 * k, k, 0.5 * k], dtype=F64)
    k12 = (torch.tensor([1.0, 0.6, -0.9, 0.0], dtype=F64) * (k11 * k22).sqrt()).requires_grad_()
    k12.data[0] = k  # exactly coincident
    t, td = phi.dual(k11, k12, k22)
    (g,) = torch.autograd.grad(t.sum(), k12)
    torch.testing.assert_close(g, td.detach(), rtol=1e-10, atol=1e-14)
    if act == "erf":  # gradcheck of both branches (direct D up to variance 256, scaled above)
        args = [v.detach().clone().requires_grad_() for v in (k11[1:2], 0.6 * (k11 * k22)[1:2].sqrt(), k22[1:2])]
        if k < 1e10:
            assert torch.autograd.gradcheck(lambda a, b, c: phi.dual(a, b, c), args)


@pytest.mark.parametrize("k", [1e-3, 1.0, 1e4, 1e30])
def test_gelu_direct_and_scaled_forms_agree(k):
    """The direct closed form (moderate variances, faster) and the scaled one (any variance)."""
    from wideNN._gelu import _gelu_dual_direct, _gelu_dual_scaled
    k11 = torch.tensor([k, k, k, k], dtype=F64)
    k22 = torch.tensor([k, 3 * k, 0.01 * k, k], dtype=F64)
    k12 = torch.tensor([1.0, 0.6, -0.9, -1.0], dtype=F64) * (k11 * k22).sqrt()
    k12[0], k12[3] = k, -k
    scale = _gelu_dual_direct(k11, k11, k11)[0]  # Cauchy–Schwarz scale of T; Ṫ ≤ ~0.6
    for a, b, sc in zip(_gelu_dual_direct(k11, k12, k22), _gelu_dual_scaled(k11, k12, k22), (scale, 1.0)):
        assert bool(((a - b).abs() <= 1e-15 * sc).all()), (a, b)
