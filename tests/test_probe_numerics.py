"""Probe: each class of numerical defect or bad input, with several neighbours of each example.

A class passes when every member gives the right answer (against an independent reference)
or one clear TypeError/ValueError naming the argument; never a silent NaN, a wrong finite
number, or an internal traceback.
"""
from __future__ import annotations


import mpmath
import pytest
import torch
import torch.nn.functional as Fn
from torch import nn

import wideNN as wn
from wideNN import activations as A

F64 = torch.float64


def _x(n, d, seed=0, dtype=F64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------- overflow / underflow
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "erf", "tanh", "sin", "cos", "gelu"])
@pytest.mark.parametrize("scale", [1e150, 1e-150])
def test_extreme_input_scales_give_the_same_kernel_on_every_path(activation, scale):
    """|x| ~ 1e±150: k11·k22 over/underflows, √k11·√k22 does not.  The no-grad, autograd and
    cross (x2) paths agree; ReLU is homogeneous, so K(s·x) = s²K(x) exactly."""
    x = _x(6, 3)
    arch = wn.Architecture(depth=2, activation=activation, weight_variance=2.0, bias_variance=0.0)
    if activation == "tanh" and scale > 1:
        # tanh(√k z) switches on a scale 1/√k no quadrature rule of bounded size resolves: a
        # clear error (it used to return E[φ'²] off by a factor 1e149, silently)
        with pytest.raises(ValueError, match="quadrature .* estimated relative error"):
            arch.ntk(x * scale)
        return
    k = arch.nngp(x * scale)
    w = torch.tensor(2.0, dtype=F64, requires_grad=True)
    kg, _ = wn.analytic.kernels(x * scale, depth=2, activation=activation, weight_variance=w, bias_variance=0.0)
    kx = arch.nngp(x * scale, x[:3] * scale)
    assert bool(torch.isfinite(k).all()) and bool(torch.isfinite(kg).all())
    top = k.abs().max()
    # closed forms agree to round-off; tanh's quadrature to its own error between tilings
    tol = 1e-12 if activation != "tanh" else 1e-9
    torch.testing.assert_close(kg.detach(), k, rtol=tol, atol=tol * float(top))
    torch.testing.assert_close(kx, k[:, :3], rtol=tol, atol=tol * float(top))
    if activation in ("relu", "leaky_relu"):
        torch.testing.assert_close(k / scale ** 2, arch.nngp(x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
def test_unrepresentable_first_layer_raises(activation):
    arch = wn.Architecture(depth=2, activation=activation)
    if activation == "erf":
        # erf's dual is bounded and depends only on k12/√((1+2k11)(1+2k22)): its kernel is finite
        # and the same at 1e200 and 1e300 (``wideNN._large_inputs``)
        torch.testing.assert_close(arch.nngp(_x(4, 3) * 1e300), arch.nngp(_x(4, 3) * 1e200),
                                   rtol=1e-14, atol=0)
    else:
        # (ReLU carries a power-of-two scale through the layers: its output kernel overflows)
        with pytest.raises(ValueError, match="overflow"):
            arch.nngp(_x(4, 3) * 1e300)
    w = torch.tensor(2.0, dtype=F64, requires_grad=True)
    # inputs 1e300 apart: no common scale (ReLU) or an overflowing first layer (erf, tanh)
    with pytest.raises(ValueError, match="overflow|one scale"):
        wn.analytic.kernels(_x(4, 3), _x(3, 3) * 1e300, depth=2, activation=activation,
                            weight_variance=w, bias_variance=0.1)


@pytest.mark.parametrize("grad", [False, True])
def test_deep_relu_overflow_raises_and_the_largest_representable_depth_is_exact(grad):
    x = _x(4, 3)
    w = torch.tensor(5.0, dtype=F64, requires_grad=True) if grad else 5.0
    with pytest.raises(ValueError, match="overflowed"):
        wn.analytic.kernels(x, depth=1000, activation="relu", weight_variance=w, bias_variance=0.0)
    # depth 700: K(x, x) = (σ_w²/2)^700 · σ_w²|x|²/d ≈ 1e280, representable and exact
    k, _ = wn.analytic.kernels(x, depth=700, activation="relu", weight_variance=w, bias_variance=0.0)
    ref = 2.5 ** 700 * 5.0 * (x * x).sum(-1) / 3
    torch.testing.assert_close(k.detach().diagonal(), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("depth,weight_variance", [(150, 3.0), (60, 2.0), (40, 1.0)])
def test_deep_float32_kernel_is_finite_with_autograd(depth, weight_variance):
    """float32: k11·k22 overflows at 1e38, i.e. already at variances ~1e19."""
    x = _x(6, 4, dtype=torch.float32)
    arch = wn.Architecture(depth=depth, activation="relu", weight_variance=weight_variance, bias_variance=0.05)
    kern = wn.NNGPKernel(arch)
    k = kern(x).to_dense()
    k.sum().backward()
    assert bool(torch.isfinite(k).all()) and bool(torch.isfinite(kern.raw_weight_variance.grad).all())
    ref = arch.nngp(x.double())
    torch.testing.assert_close(k.detach().double(), ref, rtol=1e-4, atol=0)


# ----------------------------------------------------------------- fused ReLU, coincident pairs
def _relu_mp(x1, x2, depth, w, b):
    """NNGP and NTK of one pair by the arc-cosine recursion at 50 digits (mpmath)."""
    mpmath.mp.dps = 50
    d = len(x1)
    dot = lambda u, v: mpmath.fsum(mpmath.mpf(p) * mpmath.mpf(q) for p, q in zip(u, v)) / d  # noqa: E731
    k11, k22, k12 = b + w * dot(x1, x1), b + w * dot(x2, x2), b + w * dot(x1, x2)
    th = k12
    for _ in range(depth):
        c = max(min(k12 / mpmath.sqrt(k11 * k22), 1), -1)
        t = mpmath.acos(c)
        new12 = b + w * mpmath.sqrt(k11 * k22) / (2 * mpmath.pi) * (mpmath.sin(t) + (mpmath.pi - t) * c)
        th = new12 + w * (mpmath.pi - t) / (2 * mpmath.pi) * th
        k12, k11, k22 = new12, b + w * k11 / 2, b + w * k22 / 2
    return float(k12), float(th)


@pytest.mark.parametrize("d", [3, 784])
@pytest.mark.parametrize("depth", [5, 10, 20])
def test_fused_relu_coincident_cross_pairs_are_exact(d, depth):
    x = _x(12, d)
    x2 = torch.cat([x[3:8], _x(4, d, seed=1), x[:2] + 1e-7 * _x(2, d, seed=2)])
    arch = wn.Architecture(depth=depth, activation="relu", weight_variance=2.0, bias_variance=0.1)
    k, t = arch.kernels(x, x2)  # fused path (no autograd, ReLU, NTK parameterization)
    # coincident and distinct pairs to round-off; pairs 1e-7 apart are ill-conditioned in the
    # correlation c (an angle θ ~ 1e-7 is known only to eps/θ ~ 1e-9 from c, at each of the
    # depth layers, and the NTK sums depth such terms): depth·1e-8 there
    near = max(1e-7, depth * 1e-8)
    for i, j, tol in [(3, 0, 1e-13), (7, 4, 1e-13), (0, 5, 1e-13), (2, 6, 1e-13),
                      (0, 9, near), (1, 10, near)]:
        mk, mt = _relu_mp(x[i].tolist(), x2[j].tolist(), depth, 2.0, 0.1)
        assert abs(float(k[i, j]) - mk) <= tol * abs(mk)
        assert abs(float(t[i, j]) - mt) <= tol * abs(mt)


@pytest.mark.parametrize("depth", [5, 20])
def test_ntk_gp_mean_hits_its_training_targets(depth):
    x = _x(30, 784, seed=3)
    y = _x(30, 2, seed=4)
    arch = wn.Architecture(depth=depth, activation="relu", weight_variance=2.0, bias_variance=0.1)
    post = wn.posterior(arch, x, y, torch.cat([x[:10], _x(3, 784, seed=5)]), kernel="ntk")
    torch.testing.assert_close(post.mean[:10], y[:10], rtol=0, atol=1e-12)


# ----------------------------------------------------------------- Elementwise accuracy
@pytest.mark.parametrize("fn", [torch.relu, Fn.relu6, Fn.hardtanh, torch.abs, torch.sign, Fn.elu,
                                lambda x: (x > 0.3).to(x.dtype)],
                         ids=["relu", "relu6", "hardtanh", "abs", "sign", "elu", "step0.3"])
def test_elementwise_with_kinks_or_jumps_is_refused_with_the_estimated_error(fn):
    with pytest.raises(ValueError, match="estimated relative error"):
        A.Elementwise(fn)


def test_elementwise_growth_beyond_the_rule_is_refused_at_first_use():
    act = A.Elementwise(torch.exp)  # accurate for variances ≤ 4
    k = torch.tensor([[2.0]], dtype=F64)
    act.dual(k, 0.5 * k, k)
    big = torch.tensor([[25.0]], dtype=F64)
    with pytest.raises(ValueError, match="variance 16"):
        act.dual(big, 0.5 * big, big)


@pytest.mark.parametrize("pair", [(torch.sin, A.Sin()), (torch.cos, A.Cos()), (torch.erf, A.Erf()),
                                  (Fn.gelu, A.GELU())], ids=["sin", "cos", "erf", "gelu"])
@pytest.mark.parametrize("v", [0.3, 1.0, 4.0, 16.0])
def test_accepted_elementwise_functions_meet_the_documented_accuracy(pair, v):
    fn, exact = pair
    act = A.Elementwise(fn)
    k11 = torch.tensor([v, v, v], dtype=F64)
    k22 = torch.tensor([v, v, v / 3], dtype=F64)
    k12 = torch.tensor([v, -0.4 * v, 0.2 * v], dtype=F64)
    for got, ref, diag in zip(act.dual(k11, k12, k22), exact.dual(k11, k12, k22), exact.dual(k11, k11, k11)):
        assert float(((got - ref).abs() / diag.abs()).max()) < 1e-6


# ----------------------------------------------------------------- empirical kernels
class _Sum(nn.Module):
    def __init__(self, keepdim):
        super().__init__()
        self.lin, self.keepdim = nn.Linear(3, 2), keepdim

    def forward(self, x):
        return self.lin(x).sum(0, keepdim=self.keepdim)


class _Centre(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        y = self.lin(x)
        return y - y.mean(0)


@pytest.mark.parametrize("model", [_Sum(False), _Sum(True), _Centre()], ids=["sum", "sum-keepdim", "centre"])
@pytest.mark.parametrize("fn", [wn.empirical_ntk, wn.empirical_nngp], ids=["ntk", "nngp"])
def test_batch_aggregating_models_are_refused(model, fn):
    with pytest.raises(ValueError, match="batch"):
        fn(model, _x(5, 3, dtype=torch.float32))


@pytest.mark.parametrize("layer", [lambda: nn.Dropout(0.1), lambda: nn.BatchNorm1d(4), lambda: nn.AlphaDropout(0.1)],
                         ids=["dropout", "batchnorm", "alphadropout"])
@pytest.mark.parametrize("fn", [wn.empirical_ntk, wn.empirical_nngp], ids=["ntk", "nngp"])
def test_training_mode_layers_ask_for_eval(layer, fn):
    model = nn.Sequential(nn.Linear(3, 4), layer(), nn.Linear(4, 1))  # a fresh module trains
    x = _x(5, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"'1' .*model\.eval\(\)"):
        fn(model, x)
    assert fn(model.eval(), x).shape[:2] == (5, 5)


# ----------------------------------------------------------------- exact variances
@pytest.mark.parametrize("cls", [wn.NNGPKernel, wn.NTKKernel])
@pytest.mark.parametrize("cast", ["double", "to"])
def test_kernel_cast_to_float64_keeps_exact_variances(cls, cast):
    arch = wn.Architecture(depth=2, activation="erf", weight_variance=1.3, bias_variance=0.7)
    kern = cls(arch)
    kern = kern.double() if cast == "double" else kern.to(torch.float64)
    assert float(kern.weight_variance) == 1.3 and abs(float(kern.bias_variance) - 0.7) <= 1e-16
    x = _x(5, 3)
    ref = arch.nngp(x) if cls is wn.NNGPKernel else arch.ntk(x)
    with torch.no_grad():
        torch.testing.assert_close(kern(x).to_dense(), ref, rtol=1e-14, atol=1e-15)
    # a value changed after construction is not "restored"
    changed = cls(arch)
    changed.weight_variance = 1.7
    assert abs(float(changed.double().weight_variance) - 1.7) <= 1e-6  # float32-rounded, as set


def test_fit_hyperparameters_with_no_steps_returns_the_exact_values():
    arch = wn.Architecture(depth=2, activation="relu", weight_variance=1.3, bias_variance=0.7)
    x, y = _x(6, 3), _x(6, 1).squeeze(-1)
    res = wn.fit_hyperparameters(arch, x, y, steps=0, noise_variance=0.03, progress=False)
    assert res.architecture.weight_variance == 1.3 and res.architecture.bias_variance == 0.7
    assert abs(res.noise_variance - 0.03) < 1e-15


# ----------------------------------------------------------------- bad arguments
_X, _Y = _x(6, 3, dtype=torch.float32), _x(6, 1, seed=1, dtype=torch.float32)
_ARCH = wn.Architecture(depth=2)


def _net():
    return _ARCH.build(3, 8, 1, seed=0)


BAD = {
    "weight_variance=True": (lambda: wn.Architecture(depth=2, weight_variance=True), "weight_variance"),
    "weight_variance='2.0'": (lambda: wn.Architecture(depth=2, weight_variance="2.0"), "weight_variance"),
    "bias_variance=None": (lambda: wn.Architecture(depth=2, bias_variance=None), "bias_variance"),
    "weight_variance=1j": (lambda: wn.Architecture(depth=2, weight_variance=1j), "weight_variance"),
    "depth=True": (lambda: wn.Architecture(depth=True), "depth"),
    "kernel σ²=True": (lambda: setattr(wn.NNGPKernel(_ARCH), "weight_variance", True), "weight_variance"),
    "vector bias in build": (lambda: wn.Architecture(depth=2, bias_variance=torch.tensor([0.1, 0.2])).build(3, 8, 1),
                             "bias_variance"),
    "seed 2**64": (lambda: _ARCH.build(3, 8, 1, seed=2 ** 64), "seed"),
    "seed -2**64": (lambda: _ARCH.build(3, 8, 1, seed=-2 ** 64), "seed"),
    "ensemble seed overflow": (lambda: wn.Ensemble(_ARCH, width=8, in_features=3, out_features=1, size=3,
                                                    seed=2 ** 64 - 2), "seed"),
    "nngp MC seed overflow": (lambda: wn.empirical_nngp(_ARCH, _X, width=8, n_samples=4, seed=2 ** 64 - 2), "seed"),
    "meta inputs": (lambda: _ARCH.nngp(torch.empty(4, 3, device="meta")), "x1"),
    "float16 inputs": (lambda: _ARCH.nngp(_X.half()), "x1"),
    "bfloat16 inputs": (lambda: _ARCH.ntk(_X.bfloat16()), "x1"),
    "complex inputs": (lambda: _ARCH.nngp(_X.to(torch.complex64)), "x1"),
    "asymmetric matrix": (lambda: wn.max_learning_rate(torch.tensor([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
    "indefinite matrix": (lambda: wn.max_learning_rate(torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "indefinite"),
    "meta matrix": (lambda: wn.max_learning_rate(torch.empty(3, 3, device="meta")), "meta"),
    "eval_data list": (lambda: wn.train(_net(), _X, _Y, steps=1, eval_data=[_X, _Y]), "eval_data"),
    "ntk_at str": (lambda: wn.train(_net(), _X, _Y, steps=2, ntk_at="1"), "ntk_at"),
    "ntk_at [str]": (lambda: wn.train(_net(), _X, _Y, steps=2, ntk_at=["1"]), "ntk_at"),
    "betas of 3": (lambda: wn.train(_net(), _X, _Y, steps=1, optimizer="adam", betas=(0.9, 0.99, 0.9)), "betas"),
    "betas str": (lambda: wn.train(_net(), _X, _Y, steps=1, optimizer="adam", betas="ab"), "betas"),
    "betas bool": (lambda: wn.train(_net(), _X, _Y, steps=1, optimizer="adam", betas=(True, 0.9)), "betas"),
    "learning_rate str": (lambda: wn.train(_net(), _X, _Y, steps=1, learning_rate="0.5"), "learning_rate"),
    "learning_rate bool": (lambda: wn.train(_net(), _X, _Y, steps=1, learning_rate=True), "learning_rate"),
    "train seed overflow": (lambda: wn.train(_net(), _X, _Y, steps=1, optimizer="sgd", batch_size=2, seed=2 ** 70),
                            "seed"),
    "nothing to learn": (lambda: wn.fit_hyperparameters(_ARCH, _X.double(), _Y.double().squeeze(-1), steps=3,
                                                         learn=(), learn_noise=False, progress=False), "learn"),
    "learn as str": (lambda: wn.fit_hyperparameters(_ARCH, _X.double(), _Y.double().squeeze(-1), steps=3,
                                                     learn="weight_variance", progress=False), "learn"),
    "fit lr bool": (lambda: wn.fit_hyperparameters(_ARCH, _X.double(), _Y.double().squeeze(-1), steps=3,
                                                    lr=True, progress=False), "lr"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_argument_gets_one_clear_error_naming_it(case):
    call, name = BAD[case]
    with pytest.raises((TypeError, ValueError), match=name):
        call()
