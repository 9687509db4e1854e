"""Inputs whose squares overflow (or fall below the normal range) through the layer-by-layer
evaluation of convolutional descriptions (``wideNN.layers._scale``).

References:
- homogeneous activations with zero bias: K(2^k x) = 2^2k K(x) and Θ likewise, *bitwise* — the
  scaled evaluation runs the same floating-point operations on x times a power of two, and
  powers of two commute with every rounding away from over/underflow;
- erf: 50-digit mpmath of the closed-form dual (``tests/_mp_duals.py``) on the first-layer
  covariance 2^2k·G(x), with G formed independently of the layer code (torch ``conv2d`` of the
  channel sums of x x'), exact in mpmath from the float inputs.
"""
import math

import mpmath
import pytest
import torch
import torch.nn.functional as F

import wideNN as wn
from _mp_duals import mp_dual

F64, F32 = torch.float64, torch.float32
W = 2.0


def _x(n, seed, dtype=F64, c=2, s=5):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def _ldexp(t, e):
    """t·2^e in two exact halves (2^e itself may not be representable)."""
    for part in (e // 2, e - e // 2):
        t = torch.ldexp(t, torch.tensor(part, dtype=t.dtype))
    return t


HOMOGENEOUS = ["relu", "leaky_relu", "abs", "identity"]


def _cnn(act, head="flatten", residual=False, **kw):
    body = [wn.Conv(3), act]
    if residual:
        body.append(wn.Residual(wn.Serial(wn.Conv(3), act, wn.Conv(3))))
    body += [wn.Conv(3), act]
    tail = [wn.Flatten()] if head == "flatten" else [wn.GlobalAvgPool()]
    return wn.Serial(*body, *tail, wn.Dense(), weight_variance=W, **kw)


@pytest.mark.parametrize("act", HOMOGENEOUS)
@pytest.mark.parametrize("head,residual", [("flatten", False), ("pool", False), ("pool", True)])
@pytest.mark.parametrize("dtype,scales", [(F64, (500, -505)), (F32, (60, -56))])
def test_homogeneous_activations_scale_exactly(act, head, residual, dtype, scales):
    """Inputs 2^500 (float64; squares 2^1000 would overflow without the scale) and 2^-505 (squares
    below the normal range, refused before); float32 2^60 and 2^-56 likewise: K and Θ are 2^2e
    times those of x, bit for bit, for the matrix, the cross kernel and diag=True."""
    net = _cnn(act, head, residual, bias_variance=0.0)
    x1, x2 = _x(3, 0, dtype), _x(2, 1, dtype)
    k, t = net.kernels(x1)
    kx, tx = net.kernels(x1, x2)
    kd, td = net.kernels(x1, x1[[1, 0, 2]], diag=True)
    for e in scales:
        ks, ts = net.kernels(_ldexp(x1, e))
        kxs, txs = net.kernels(_ldexp(x1, e), _ldexp(x2, e))
        kds, tds = net.kernels(_ldexp(x1, e), _ldexp(x1[[1, 0, 2]], e), diag=True)
        for got, want in ((ks, k), (ts, t), (kxs, kx), (txs, tx), (kds, kd), (tds, td)):
            assert torch.equal(got, _ldexp(want, 2 * e)), (act, e)


def test_step_is_scale_free():
    """Step (degree 0) ends the scale: the kernels at 2^±600 equal those of x."""
    net = _cnn("step", "pool", True, bias_variance=0.0)
    x = _x(3, 2)
    k, t = net.kernels(x)
    for e in (600, -600):
        ks, ts = net.kernels(_ldexp(x, e))
        torch.testing.assert_close(ks, k, rtol=1e-15, atol=0)
        torch.testing.assert_close(ts, t, rtol=1e-15, atol=0)


def test_bias_variances_enter_at_the_scale():
    """With σ_b² > 0 the layers add σ_b² 2^-E to the scaled state: a network with bias b on 2^500 x
    equals 2^1000 times the one with bias b·2^-1000 on x (bitwise: the same operations).  The
    standard parameterization's NTK adds 1 per layer, 2^-1000 of the rest here: against the
    ordinary evaluation at 2^30 x (where the 1's are 2^-60 of Θ, below round-off)."""
    x = _x(3, 3)
    b = 1e299  # ≈ 0.093 · 2^1000
    big = _cnn("relu", "pool", True, bias_variance=b).kernels(_ldexp(x, 500))
    want = _cnn("relu", "pool", True, bias_variance=math.ldexp(b, -1000)).kernels(x)
    for got, w in zip(big, want):
        assert torch.equal(_ldexp(got, -1000), w)
    std = dict(parameterization="standard")
    big = _cnn("relu", "pool", True, bias_variance=b, **std).kernels(_ldexp(x, 500), width=8)
    want = _cnn("relu", "pool", True, bias_variance=math.ldexp(b, -940), **std).kernels(
        _ldexp(x, 30), width=8)
    assert torch.equal(_ldexp(big[0], -940), want[0])
    torch.testing.assert_close(_ldexp(big[1], -940), want[1], rtol=1e-14, atol=0)


def test_tiny_inputs_with_a_layer_bias_are_the_bias_kernel():
    """Tiny inputs (2^-600) with a bias only in an inner layer: the state moves to the bias's
    scale there; the kernel equals that of zero inputs to round-off."""
    net = wn.Serial(wn.Conv(3), "relu", wn.Conv(3, bias_variance=0.1), "relu", wn.GlobalAvgPool(),
                    wn.Dense(), weight_variance=W, bias_variance=0.0)
    x = _x(3, 4)
    k, t = net.kernels(_ldexp(x, -600))
    k0, t0 = net.kernels(torch.zeros_like(x))
    torch.testing.assert_close(k, k0, rtol=1e-15, atol=0)
    torch.testing.assert_close(t, t0, rtol=1e-15, atol=0)


# -- erf against mpmath ---------------------------------------------------------------------------

def _first_layer_gram(xa, xb, w):
    """σ_w² (1/(9C)) Σ_{taps, c} x_a x_b per position (3×3 'same' convolution), exact in mpmath
    from the float inputs: {(i, j): (S×S nested list of mpf)}."""
    out = {}
    c, s = xa.shape[1], xa.shape[2]
    for i in range(xa.shape[0]):
        for j in range(xb.shape[0]):
            prod = [[sum(mpmath.mpf(float(xa[i, ch, r, q])) * mpmath.mpf(float(xb[j, ch, r, q]))
                         for ch in range(c)) for q in range(s)] for r in range(s)]
            grid = [[mpmath.mpf(0)] * s for _ in range(s)]
            for r in range(s):
                for q in range(s):
                    acc = mpmath.mpf(0)
                    for dr in (-1, 0, 1):
                        for dq in (-1, 0, 1):
                            if 0 <= r + dr < s and 0 <= q + dq < s:
                                acc += prod[r + dr][q + dq]
                    grid[r][q] = w * acc / (9 * c)
            out[i, j] = grid
    return out


def _mp_erf_cnn(xa, xb, e2, b):
    """Conv(3), erf, Flatten, Dense (σ_w² = W, σ_b² = b, NTK parameterization) in mpmath on inputs
    x·2^(e2/2): K¹ = b + 2^e2·G, K² = b + W·mean_p T(K¹), Θ² = K² + W·mean_p Ṫ(K¹)·K¹."""
    mpmath.mp.dps = 50
    scale = mpmath.mpf(2) ** e2
    g_ab = _first_layer_gram(xa, xb, W)
    g_aa = _first_layer_gram(xa, xa, W)
    g_bb = _first_layer_gram(xb, xb, W)
    s = xa.shape[2]
    k = torch.zeros(xa.shape[0], xb.shape[0], dtype=F64)
    th = torch.zeros_like(k)
    for (i, j), grid in g_ab.items():
        ts, ths = mpmath.mpf(0), mpmath.mpf(0)
        for r in range(s):
            for q in range(s):
                k11 = b + scale * g_aa[i, i][r][q]
                k22 = b + scale * g_bb[j, j][r][q]
                k12 = b + scale * grid[r][q]
                t, td = mp_dual("erf", k11, k12, k22)
                ts += t
                ths += td * k12
        k2 = b + W * ts / (s * s)
        k[i, j] = float(k2)
        th[i, j] = float(k2 + W * ths / (s * s))
    return k, th


@pytest.mark.parametrize("dtype,e,rtol", [(F64, 700, 1e-13), (F64, 1000, 1e-13), (F32, 60, 3e-6),
                                          (F32, 100, 3e-6)])
def test_erf_cnn_matches_mpmath(dtype, e, rtol):
    """Conv + erf + Flatten + Dense on inputs 2^e·x (float64 up to ~1e301, float32 up to ~1e30:
    first-layer variances ~2^2e overflow both): K and Θ against 50 digits.  Tolerance: the
    scaled first layer is the float64/32 covariance of x (rounding ~ε relative per entry); T
    depends on it through the correlation, amplified by 1/√(1−ρ²) ≲ 10 here, and the dropped
    1's of 1 + 2k are 2^-2e relative; Θ's coincident pairs (√D ~ 2^e) likewise."""
    x1 = _x(3, 5, dtype, s=4)
    x2 = _x(2, 6, dtype, s=4)
    b = 0.05
    net = wn.Serial(wn.Conv(3), "erf", wn.Flatten(), wn.Dense(), weight_variance=W, bias_variance=b)
    ka, ta = net.kernels(_ldexp(x1, e), _ldexp(x2, e))
    kr, tr = _mp_erf_cnn(x1, x2, 2 * e, b)
    torch.testing.assert_close(ka.double(), kr, rtol=rtol, atol=0)
    torch.testing.assert_close(ta.double(), tr, rtol=rtol, atol=0)
    # the symmetric kernel and its diagonal (coincident points: correlation exactly 1)
    ks, tsym = net.kernels(_ldexp(x1, e))
    kr, tr = _mp_erf_cnn(x1, x1, 2 * e, b)
    torch.testing.assert_close(ks.double(), kr, rtol=rtol, atol=0)
    torch.testing.assert_close(tsym.double(), tr, rtol=rtol, atol=0)
    kd, td = net.kernels(_ldexp(x1, e), diag=True)
    torch.testing.assert_close(kd, ks.diagonal(), rtol=rtol, atol=0)
    torch.testing.assert_close(td, tsym.diagonal(), rtol=rtol, atol=0)


def test_erf_sin_cos_before_a_residual_block():
    """erf / sin / cos, then a residual block, in a CNN at 1e300: finite, and against the same
    description at 2^-100 of that input.  Beyond variances of 2^60 the scaled duals depend on the
    correlations only, so the NNGP and the NTK between different examples are the same at both
    scales (to the dropped 1's, ~2^-1700 relative); erf's NTK of an example with itself grows
    with the inputs (Ṫ·Θ ~ 2^e at coincident points).  sin, cos: Ṫ = ½ at coincident points, so
    that NTK entry is ~|x|² (~1e600: the clear overflow error) while the NNGP is finite."""
    x = _x(3, 7)
    off = ~torch.eye(3, dtype=torch.bool)
    for act in ("erf", "sin", "cos"):
        net = wn.Serial(wn.Conv(3), act, wn.Residual(wn.Serial(wn.Conv(3), "relu", wn.Conv(3))),
                        wn.GlobalAvgPool(), wn.Dense(), weight_variance=W, bias_variance=0.1)
        k1 = net.nngp(x * 1e300)
        k2 = net.nngp(_ldexp(x * 1e300, -100))
        assert bool(torch.isfinite(k1).all()), act
        torch.testing.assert_close(k1, k2, rtol=1e-14, atol=1e-15)
        if act != "erf":
            assert float(k1.diagonal().min()) > 0.1  # T = ½ at coincident points, then the block
            with pytest.raises(ValueError, match="overflowed"):
                net.kernels(x * 1e300)
            continue
        t1 = net.ntk(x * 1e300)
        t2 = net.ntk(_ldexp(x * 1e300, -100))
        torch.testing.assert_close(t1[off], t2[off], rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(_ldexp(t1.diagonal(), -100), t2.diagonal(), rtol=1e-14, atol=0)


def test_erf_gradient_matches_the_limit_form():
    """Autograd through the scaled evaluation: for off-diagonal pairs at inputs 2^900·x the erf
    kernel is b + W·mean_p (2/π) arcsin(ρ_p) to 2^-60 (ρ_p the first-layer correlation), written
    here with torch's conv2d; the gradient in x1 and in σ_w² agrees with that form's."""
    x1 = _x(3, 8).requires_grad_(True)
    x2 = _x(2, 9)
    w = torch.tensor(W, dtype=F64, requires_grad=True)
    b = 0.05
    net = wn.Serial(wn.Conv(3), "erf", wn.Flatten(), wn.Dense(), weight_variance=w, bias_variance=b)
    k = net.nngp(_ldexp(x1, 900), _ldexp(x2, 900))
    g_x, g_w = torch.autograd.grad(k.sum(), (x1, w))

    def limit(xa, ww):
        ones = torch.ones(1, 1, 3, 3, dtype=F64)

        def gram(a, c):  # (na, nc, S, S): Σ_c a c / (9C) over each 3×3 window ('same')
            prod = (a[:, None] * c[None]).sum(2).reshape(-1, 1, *a.shape[2:])
            return (F.conv2d(prod, ones, padding=1) / (9 * a.shape[1])).reshape(a.shape[0], c.shape[0], *a.shape[2:])

        g12 = gram(xa, x2)
        g11 = torch.stack([gram(xa[i:i + 1], xa[i:i + 1])[0, 0] for i in range(xa.shape[0])])
        g22 = torch.stack([gram(x2[j:j + 1], x2[j:j + 1])[0, 0] for j in range(x2.shape[0])])
        rho = g12 / torch.sqrt(g11[:, None] * g22[None])
        return b + ww * ((2 / math.pi) * torch.asin(rho)).mean((-2, -1))

    ref = limit(x1, w)
    r_x, r_w = torch.autograd.grad(ref.sum(), (x1, w))
    torch.testing.assert_close(k, ref.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(g_x, r_x, rtol=1e-10, atol=1e-12 * float(r_x.abs().max()))
    torch.testing.assert_close(g_w, r_w, rtol=1e-12, atol=0)


def test_relu_gradient_scales_exactly():
    """∂ΣK(2^500 y)/∂y = 2^1000 ∂ΣK(y)/∂y (NTK too), through the scaled evaluation."""
    net = _cnn("relu", "pool", True, bias_variance=0.0)
    y = _x(3, 10).requires_grad_(True)
    k, t = net.kernels(y)
    g = torch.autograd.grad(k.sum() + t.sum(), y)[0]
    ks, ts = net.kernels(_ldexp(y, 500))
    gs = torch.autograd.grad(ks.sum() + ts.sum(), y)[0]
    torch.testing.assert_close(_ldexp(gs, -1000), g, rtol=1e-13, atol=1e-13 * float(g.abs().max()))


# -- errors -----------------------------------------------------------------------------------------

def test_overflowing_kernels_raise_clear_errors():
    x = _x(3, 11)
    # ReLU's kernel at 1e300 is ~1e600
    with pytest.raises(ValueError, match="overflowed"):
        _cnn("relu", "pool").kernels(x * 1e300)
    with pytest.raises(ValueError, match="overflowed"):
        _cnn("relu", "pool").nngp(x * 1e300, x[:2] * 1e300, diag=False)
    # tanh needs its true kernel, whose variances (~1e400) overflow: named at the layer
    net = wn.Serial(wn.Conv(3), "tanh", wn.Flatten(), wn.Dense())
    with pytest.raises(ValueError, match=r"layer 1 \(Tanh\).*overflows"):
        net.kernels(x * 1e200)
    # erf inside a residual block: the identity branch (~1e400) cannot be added in true units
    net = wn.Serial(wn.Conv(3), wn.Residual(wn.Serial(wn.Conv(3), "erf", wn.Conv(3))), wn.Flatten(),
                    wn.Dense())
    with pytest.raises(ValueError, match="Residual.*overflows"):
        net.kernels(x * 1e200)
    # erf where some positions see only zeros (variance 0) next to variances ~1e400: the scaled
    # duals need every variance ≥ 2^60, the true kernel reaching erf overflows: a clear error
    z = x.clone()
    z[:, :, :, 3:] = 0
    with pytest.raises(ValueError, match=r"layer 1 \(Erf\).*overflows"):
        wn.Serial(wn.Conv(3), "erf", wn.Flatten(), wn.Dense()).kernels(z * 1e200)
    # a spatial output, positions that see only zeros: their kernels are the bias's (~0.1), which
    # at the scale of inputs ~2^532 (σ_b² 2^-s ≈ 2^-1067: ~7 bits left) would lose their precision
    w = 1e-20  # (keeps the other positions' kernels, ~σ_w⁴·2^1064, representable)
    wide = _ldexp(_wide_zero(x), 530)
    spatial = wn.Serial(wn.Conv(3), "relu", wn.Conv(3), weight_variance=w, bias_variance=0.1)
    with pytest.raises(ValueError, match="every channel is 0"):
        spatial.kernels(wide)
    # ... exact with zero bias (those positions are 0), and with a readout that averages them away
    plain = wn.Serial(wn.Conv(3), "relu", wn.Conv(3), weight_variance=w, bias_variance=0.0)
    assert torch.equal(plain.nngp(wide), _ldexp(plain.nngp(_wide_zero(x)), 1060))
    pooled = wn.Serial(wn.Conv(3), "relu", wn.Conv(3), wn.GlobalAvgPool(), weight_variance=w,
                       bias_variance=0.1)
    assert bool(torch.isfinite(pooled.nngp(wide)).all())
    # at 2^508 σ_b² 2^-1020 keeps 50 bits: the zero band's kernels (columns 7–9 see only zeros and
    # biases, whatever the input scale) match the unscaled evaluation to round-off
    k_big = spatial.nngp(_ldexp(_wide_zero(x), 508))
    k_one = spatial.nngp(_wide_zero(x))
    torch.testing.assert_close(k_big[..., 7:], k_one[..., 7:], rtol=1e-14, atol=0)
    # float32: 1e30 squared overflows; ReLU's kernel with it
    with pytest.raises(ValueError, match="overflowed"):
        _cnn("relu", "pool").kernels(x.float() * 1e30)


def _wide_zero(x):
    """x with a zero band wider than two 3×3 receptive fields (columns 5–9 of 10)."""
    return torch.cat([x, torch.zeros_like(x)], -1)


def test_batches_one_scale_cannot_serve_and_tiny_non_homogeneous_inputs_are_refused():
    x = _x(3, 12)
    mixed = torch.cat([x[:2] * 1e200, x[2:] * 1e-200])
    with pytest.raises(ValueError, match="one scale"):
        _cnn("relu", "pool").kernels(mixed)
    with pytest.raises(ValueError, match="one scale"):
        wn.Serial(wn.Conv(3), "erf", wn.Flatten(), wn.Dense()).kernels(x * 1e200, x * 1e150)
    # erf's duals are not homogeneous: tiny inputs stay refused (no bias to hold them)
    with pytest.raises(ValueError, match="normal range"):
        wn.Serial(wn.Conv(3), "erf", wn.Flatten(), wn.Dense()).kernels(x * 1e-310)
    # the standard-parameterization NTK adds 1 per layer: no scale for tiny inputs
    with pytest.raises(ValueError, match="normal range"):
        _cnn("relu", "pool", parameterization="standard").kernels(x * 1e-310, width=4)
    # ... while its NNGP needs none of the NTK's 1's
    k = _cnn("relu", "pool", parameterization="standard").nngp(_ldexp(x, -600))
    k0 = _cnn("relu", "pool", parameterization="standard").nngp(x)
    assert torch.equal(_ldexp(k, 1200), k0) or bool((k == 0).all())


class _Naive(wn.layers.Layer):
    """A layer written without the scale in mind: it builds a fresh state (scale 0)."""

    kind = "Naive"

    def resolve(self, in_shape, env):
        return _NaiveStep(env.label, tuple(in_shape))


class _NaiveStep(wn.layers.base.Step):
    def __init__(self, label, shape):
        self.label, self.in_shape, self.out_shape = label, shape, shape

    def apply(self, state, ev):
        return wn.layers.KernelState(state.nngp * 1.0, None if state.ntk is None else state.ntk * 1.0,
                                     state.spatial, state.full)


def test_layers_that_do_not_carry_the_scale_get_true_units():
    """A step without ``carries_scale`` receives the state in true units (checked for overflow):
    ReLU at 2^500 stays exact through it; at 1e300 the error names it."""
    net = wn.Serial(wn.Conv(3), "relu", _Naive(), wn.Conv(3), "relu", wn.GlobalAvgPool(), wn.Dense(),
                    weight_variance=W, bias_variance=0.0)
    x = _x(3, 13)
    k, t = net.kernels(x)
    ks, ts = net.kernels(_ldexp(x, 500))
    assert torch.equal(ks, _ldexp(k, 1000)) and torch.equal(ts, _ldexp(t, 1000))
    with pytest.raises(ValueError, match=r"layer 2 \(Naive\).*overflows"):
        net.kernels(x * 1e300)
