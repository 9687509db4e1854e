"""The fused tiled path of the closed-form activations (wideNN._fused) against the generic path,
against scalar float64 recursions written here with the math module, and its fall-backs."""
import math

import pytest
import torch

import wideNN as wn
from wideNN import activations as A
from wideNN._fused import fused_kernels
from wideNN.analytic import _Recursion, _generic_tiled

F64 = torch.float64
CLOSED = ["relu", "leaky_relu", "abs", "step", "erf", "gelu", "sin", "cos", "identity"]
W, B = 1.7, 0.1


def _inputs(n, d=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    x[5] = x[3]  # a coincident pair off the diagonal
    return x


def _fused(x1, x2, activation, depth, dtype=F64, block=16, **kw):
    other = None if x2 is None else x2.to(dtype)
    out = fused_kernels(x1.to(dtype), other, A.get(activation), depth, W, B,
                        kw.get("ntk", True), kw.get("nngp", True), block)
    assert out is not None
    return out


def _generic(x1, x2, activation, depth, dtype=F64):
    other = None if x2 is None else x2.to(dtype)
    return _generic_tiled(_Recursion(A.get(activation), depth, W, B), x1.to(dtype), other, 7)


@pytest.mark.parametrize("activation", CLOSED)
@pytest.mark.parametrize("depth", [1, 3, 20])
def test_fused_equals_generic_in_float64_and_float32(activation, depth):
    x1, x2 = _inputs(40), _inputs(23, seed=2)
    x2[4] = x1[7]  # coincident across the two sets
    for other in (None, x2):
        ref = _generic(x1, other, activation, depth)
        for got, want in zip(_fused(x1, other, activation, depth), ref):
            # round-off: the two paths order the same operations differently
            torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12 * want.abs().max().item())
        for got, want in zip(_fused(x1, other, activation, depth, torch.float32), ref):
            assert got.dtype == torch.float32
            err = ((got.double() - want).abs().max() / want.abs().max()).item()
            assert err < 3e-5, err  # float32 round-off grown over up to 20 layers


def _scalar_dual(activation, k11, k12, k22):
    """(T, Ṫ) of one pair from the textbook closed forms, in Python floats."""
    s = math.sqrt(k11 * k22)
    c = max(-1.0, min(1.0, k12 / s)) if s > 0 else 0.0
    theta = math.acos(c)
    if activation in ("relu", "leaky_relu", "abs"):
        a = {"relu": 0.0, "leaky_relu": 0.01, "abs": -1.0}[activation]
        mix = (1 + a * a) * (math.pi - theta) + 2 * a * theta
        return s / (2 * math.pi) * ((1 - a) ** 2 * math.sqrt(1 - c * c) + mix * c), mix / (2 * math.pi)
    if activation == "step":
        return (math.pi - theta) / (2 * math.pi), 0.0
    if activation == "erf":
        a, b = 1 + 2 * k11, 1 + 2 * k22
        return (2 / math.pi) * math.asin(2 * k12 / math.sqrt(a * b)), (4 / math.pi) / math.sqrt(a * b - 4 * k12 ** 2)
    if activation in ("sin", "cos"):
        plus, minus = math.exp(-(k11 + k22 - 2 * k12) / 2), math.exp(-(k11 + k22 + 2 * k12) / 2)
        sign = -1 if activation == "sin" else 1
        return 0.5 * (plus + sign * minus), 0.5 * (plus - sign * minus)
    return k12, 1.0  # identity


@pytest.mark.parametrize("activation", [a for a in CLOSED if a != "gelu"])
def test_fused_equals_scalar_closed_form_recursion(activation):
    x = _inputs(6, 4, seed=4)
    depth = 3
    k, t = _fused(x, None, activation, depth, block=4)
    xs = x.tolist()
    for i in range(6):
        for j in range(6):
            dot = lambda u, v: sum(p * q for p, q in zip(u, v)) / 4  # noqa: E731
            k11, k12, k22 = (B + W * dot(xs[i], xs[i]), B + W * dot(xs[i], xs[j]), B + W * dot(xs[j], xs[j]))
            th = k12
            for _ in range(depth):
                tt, td = _scalar_dual(activation, k11, k12, k22)
                k11n, k22n = (B + W * _scalar_dual(activation, kk, kk, kk)[0] for kk in (k11, k22))
                k12 = B + W * tt
                th = k12 + W * td * th
                k11, k22 = k11n, k22n
            assert k[i, j].item() == pytest.approx(k12, rel=1e-10, abs=1e-13), (i, j)
            assert t[i, j].item() == pytest.approx(th, rel=1e-9, abs=1e-13), (i, j)


def test_coincident_points_are_exactly_coincident():
    x = _inputs(30)
    for activation in ("relu", "step", "abs"):
        k, t = _fused(x, None, activation, 20)
        # rows 3 and 5 are the same input: the same rows of K and Θ (to the last bits), correlation 1
        # (unsnapped, arccos(1 − ulps) would give angles of 1e-8 that the step kernel amplifies)
        torch.testing.assert_close(k[3], k[5], rtol=1e-14, atol=0)
        torch.testing.assert_close(t[3], t[5], rtol=1e-14, atol=0)
        assert k[3, 5].item() == pytest.approx(k[3, 3].item(), rel=1e-14)


def test_zero_variance_and_overflowing_inputs_fall_back_to_the_generic_path():
    x = _inputs(12)
    x[2] = 0.0
    relu = A.get("relu")
    assert fused_kernels(x, None, relu, 2, 2.0, 0.0, True, True) is None  # K(x,x) = 0: no correlation
    assert fused_kernels(x, None, relu, 2, 2.0, 0.1, True, True) is not None
    arch = wn.Architecture(2, "relu", 2.0, 0.0)
    for got, want in zip(arch.kernels(x), _generic_tiled(_Recursion(relu, 2, 2.0, 0.0), x, None, 5)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    big = _inputs(8, seed=1).float() * 30  # variances ~ 1000: e^{k12} overflows float32
    assert fused_kernels(big, None, A.get("sin"), 2, W, B, True, True) is None
    k, t = wn.Architecture(2, "sin", W, B).kernels(big)
    assert bool(torch.isfinite(k).all()) and bool(torch.isfinite(t).all())
    assert fused_kernels(x, None, A.get("tanh"), 2, W, B, True, True) is None  # quadrature


def test_outputs_do_not_depend_on_threads_and_thread_count_is_restored(monkeypatch):
    import wideNN._fused as fused
    monkeypatch.setattr(fused, "_other_runnable", lambda: 0)  # as on a quiet machine
    x = _inputs(100)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fused(x, None, "erf", 3, block=16)
        torch.set_num_threads(2)
        two = _fused(x, None, "erf", 3, block=16)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)  # each tile is computed the same way on any worker


@pytest.mark.parametrize("activation", ["relu", "step", "gelu"])
def test_nngp_alone_and_ntk_alone_equal_the_pair(activation):
    x1, x2 = _inputs(37), _inputs(20, seed=3)
    for other in (None, x2):
        k, t = _fused(x1, other, activation, 3)
        k_only, none = _fused(x1, other, activation, 3, ntk=False)
        none2, t_only = _fused(x1, other, activation, 3, nngp=False)
        assert none is None and none2 is None
        assert torch.equal(k, k_only) and torch.equal(t, t_only)


def test_public_kernels_use_the_fused_path_and_keep_autograd_on_the_generic_one():
    x = _inputs(20)
    arch = wn.Architecture(3, "erf", W, B)
    torch.testing.assert_close(arch.kernels(x)[1], _fused(x, None, "erf", 3, block=None)[1], rtol=0, atol=0)
    w = torch.tensor(W, dtype=F64, requires_grad=True)
    k, t = wn.analytic.kernels(x, depth=3, activation="erf", weight_variance=w, bias_variance=B)
    assert t.requires_grad
    torch.testing.assert_close(t.detach(), arch.kernels(x)[1], rtol=1e-11, atol=1e-12)


def test_worker_count_follows_the_load(monkeypatch):
    import wideNN._fused as fused
    cores = len(fused.os.sched_getaffinity(0)) if hasattr(fused.os, "sched_getaffinity") else fused.os.cpu_count()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for others, expected in ((0, 2), (None, 2), (cores - 1, 2), (cores, 1), (cores + 10, 1)):
            monkeypatch.setattr(fused, "_other_runnable", lambda: others)
            assert fused.tile_threads() == expected, (others, cores)
        torch.set_num_threads(1)
        monkeypatch.setattr(fused, "_other_runnable", lambda: 0)
        assert fused.tile_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert fused._other_runnable() is None or fused._other_runnable() >= 0


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e-160, 1e150])
def test_large_relu_kernels_take_the_worker_tiles_with_the_recursions_numbers(cross, scale, monkeypatch):
    """From ``_RELU_TILES_MIN_ENTRIES`` on, ReLU runs the worker-thread tiles; they equal its
    recursion to round-off, and extreme scales still reach the scaled recursion."""
    import wideNN.analytic as analytic
    g = torch.Generator().manual_seed(4)
    x = torch.randn(37, 9, dtype=torch.float64, generator=g) * scale
    x2 = torch.randn(23, 9, dtype=torch.float64, generator=g) * scale if cross else None
    arch = wn.Architecture(3, "relu", 2.0, 0.0 if scale != 1.0 else 0.1)
    with monkeypatch.context() as m:  # the recursion: small kernels without the compiled layers
        m.setattr(analytic, "_RELU_TILES_MIN_ENTRIES", 10 ** 12)
        m.setattr(analytic, "_native_library", lambda: None)
        ref = arch.kernels(x, x2)
    monkeypatch.setattr(analytic, "_RELU_TILES_MIN_ENTRIES", 1)
    calls = []
    real = analytic.fused_kernels
    monkeypatch.setattr(analytic, "fused_kernels", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = arch.kernels(x, x2)
    assert calls  # the tiles were asked
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
