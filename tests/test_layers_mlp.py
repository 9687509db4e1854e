"""The MLP shorthand is the composition Dense, φ, …, Dense: same kernels, same networks."""
import pytest
import torch

import wideNN as wn
from wideNN.layers import _mlp


def rel(a, b):
    return float(((a - b).abs().max() / b.abs().max()))


@pytest.mark.parametrize("act", ["relu", "erf", "tanh", wn.activations.LeakyReLU(0.2)])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_serial_mlp_equals_architecture(act, param):
    torch.manual_seed(0)
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    arch = wn.Architecture(depth=3, activation=act, weight_variance=1.8, bias_variance=0.1, parameterization=param)
    phi = arch.phi
    serial = wn.Serial(wn.Dense(), phi, wn.Dense(), phi, wn.Dense(), phi, wn.Dense(), weight_variance=1.8,
                       bias_variance=0.1, parameterization=param)
    widths = dict(widths=16) if param == "standard" else {}
    width = dict(width=16) if param == "standard" else {}
    for s in (serial, arch.serial()):
        for args in ((x,), (x, y)):
            k, t = arch.kernels(*args, **widths)
            ks, ts = s.kernels(*args, **width)
            assert rel(ks, k) <= 1e-14 and rel(ts, t) <= 1e-14
            kd, td = arch.kernels(*args, diag=True, **widths) if len(args) == 1 else arch.kernels(x, x.flip(0), diag=True, **widths)
            kds, tds = s.kernels(*args, diag=True, **width) if len(args) == 1 else s.kernels(x, x.flip(0), diag=True, **width)
            assert rel(kds, kd) <= 1e-14 and rel(tds, td) <= 1e-14
        assert rel(s.nngp(x), arch.nngp(x)) <= 1e-14


def test_mlp_pattern_is_routed_to_the_analytic_module(monkeypatch):
    """The recognised pattern calls wideNN.analytic.kernels (its fused ReLU path, angle tables)."""
    calls = []
    real = _mlp._analytic_kernels
    monkeypatch.setattr(_mlp, "_analytic_kernels", lambda *a, **k: calls.append(k) or real(*a, **k))
    x = torch.randn(5, 4, dtype=torch.float64)
    wn.Serial(wn.Dense(), "relu", wn.Dense(), "relu", wn.Dense(), bias_variance=0.1).kernels(x)
    assert calls and calls[-1]["depth"] == 2
    # a leading Flatten of image inputs is the same MLP on the flattened pixels
    img = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    arch = wn.Serial(wn.Flatten(), wn.Dense(), "erf", wn.Dense(), bias_variance=0.1)
    k = arch.nngp(img)
    assert calls[-1]["depth"] == 1
    torch.testing.assert_close(k, wn.Architecture(1, "erf", bias_variance=0.1).nngp(img.flatten(1)), rtol=0, atol=0)
    # not MLPs: different activations, per-layer variances, a residual block
    calls.clear()
    for s in (wn.Serial(wn.Dense(), "relu", wn.Dense(), "erf", wn.Dense()),
              wn.Serial(wn.Dense(), "relu", wn.Dense(weight_variance=1.0)),
              wn.Serial(wn.Dense(), wn.Residual(wn.Serial("relu", wn.Dense())), "relu", wn.Dense())):
        s.kernels(x)
    assert not calls


def test_generic_path_agrees_with_the_analytic_module():
    """The layer-by-layer transforms on flat inputs reproduce the MLP recursion (float64)."""
    torch.manual_seed(1)
    x = torch.randn(7, 5, dtype=torch.float64)
    from wideNN.layers._evaluate import evaluate
    for act, param in (("relu", "ntk"), ("erf", "ntk"), ("gelu", "ntk"), ("relu", "standard"), ("erf", "standard")):
        arch = wn.Architecture(depth=2, activation=act, weight_variance=1.5, bias_variance=0.2,
                               parameterization=param)
        root = arch.serial().plan((5,), width=16)
        k, t = evaluate(root, x, None, False, None, True)
        k0, t0 = arch.kernels(x, widths=16)
        torch.testing.assert_close(k, k0, rtol=1e-12, atol=0)
        torch.testing.assert_close(t, t0, rtol=1e-12, atol=0)


def test_serial_mlp_builds_the_same_network():
    arch = wn.Architecture(depth=2, activation="tanh", weight_variance=1.5, bias_variance=0.1)
    net = arch.serial().build(6, width=12, out_features=3, seed=4, dtype=torch.float64)
    ref = arch.build(6, 12, 3, seed=4, dtype=torch.float64)
    assert isinstance(net, wn.Network)
    x = torch.randn(5, 6, dtype=torch.float64)
    assert torch.equal(net(x), ref(x))
    # the general builder draws the same parameters in the same order
    conv_like = wn.Serial(wn.Dense(), "tanh", wn.Residual(wn.Dense()), wn.Dense(), weight_variance=1.5,
                          bias_variance=0.1).build(6, width=12, out_features=3, seed=4, dtype=torch.float64)
    assert torch.equal(conv_like[0].weight, ref[0].weight)
