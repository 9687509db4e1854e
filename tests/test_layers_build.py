"""Finite networks built from layer descriptions: shapes, parameterizations, seeds."""
import math

import pytest
import torch
import torch.nn.functional as F

import wideNN as wn
from wideNN.layers.modules import Convolution


def test_build_shapes_widths_and_overrides():
    arch = wn.Serial(wn.Conv(3), "relu", wn.Residual(wn.Serial(wn.Conv(3), "relu", wn.Conv(3))),
                     wn.AvgPool(2), wn.Conv(2, channels=5, padding="valid"), "relu", wn.GlobalAvgPool(),
                     wn.Flatten(), wn.Dense(out_features=7), "erf", wn.Dense())
    net = arch.build((3, 8, 8), width=6, out_features=10, seed=0)
    convs = [m for m in net.modules() if isinstance(m, Convolution)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 6), (6, 6), (6, 6), (6, 5)]
    dense = [m for m in net.modules() if isinstance(m, wn.networks.Dense)]
    assert [(d.in_features, d.out_features) for d in dense] == [(5, 7), (7, 10)]
    assert net(torch.randn(4, 3, 8, 8)).shape == (4, 10)
    assert net.in_shape == (3, 8, 8) and net.out_shape == (10,)
    # the final linear layer is the last one outside residual blocks; 1-D inputs work alike
    net1 = wn.Serial(wn.Conv(3), "relu", wn.Conv(3, stride=2), wn.Flatten()).build((2, 9), width=4, out_features=3)
    assert net1(torch.randn(5, 2, 9)).shape == (5, 3 * 5)


def test_same_seed_same_parameters_on_every_dtype():
    arch = wn.Serial(wn.Conv((2, 3)), "tanh", wn.GlobalAvgPool(), wn.Dense(), bias_variance=0.1)
    a = arch.build((2, 5, 5), width=8, out_features=3, seed=11, dtype=torch.float64)
    b = arch.build((2, 5, 5), width=8, out_features=3, seed=11, dtype=torch.float32)
    c = arch.build((2, 5, 5), width=8, out_features=3, seed=12, dtype=torch.float64)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert q.dtype == torch.float32
        assert torch.equal(p.float(), q), n
        assert not torch.equal(p, r), n
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(b(x.float()).double(), a(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("padding", ["same", "valid", "circular"])
def test_convolution_is_a_scaled_torch_convolution(param, padding):
    """z = √(σ_w²/(k·C)) W ⋆ x + σ_b b (NTK) or W ~ N(0, σ_w²/(k·C)) (standard), with stax padding."""
    w2, b2 = 1.7, 0.3
    arch = wn.Serial(wn.Conv((2, 3), stride=(1, 2), padding=padding), weight_variance=w2, bias_variance=b2,
                     parameterization=param)
    net = arch.build((3, 5, 6), width=4, out_features=4, seed=3, dtype=torch.float64)
    conv = net[0]
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 3, 2, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    scale, bscale = math.sqrt(w2 / (3 * 6)), math.sqrt(b2)
    if param == "ntk":
        assert torch.equal(conv.weight, w) and torch.equal(conv.bias, b)
    else:
        torch.testing.assert_close(conv.weight, w * scale, rtol=1e-15, atol=0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    if padding == "valid":
        xp = x
    else:  # stax/TensorFlow "same": out = ⌈S/s⌉; H: total 1 → (0, 1); W: ⌈6/2⌉ = 3, total 1 → (0, 1)
        xp = F.pad(x, (0, 1, 0, 1), mode="circular" if padding == "circular" else "constant")
    ref = F.conv2d(xp, w * scale, b * bscale, stride=(1, 2))
    torch.testing.assert_close(net(x), ref, rtol=1e-13, atol=1e-13)


def test_pooling_modules():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    net = wn.Serial(wn.AvgPool(2, padding="same"), wn.GlobalAvgPool()).build((3, 5, 4), width=2, out_features=2)
    pooled = F.avg_pool2d(F.pad(x, (0, 0, 0, 1)), 2)  # H: ⌈5/2⌉ = 3 → one zero row at the end
    torch.testing.assert_close(net[0](x), pooled)
    torch.testing.assert_close(net(x), pooled.mean((-2, -1)))
    circ = wn.Serial(wn.AvgPool(3, stride=1, padding="circular")).build((3, 5, 4), width=2, out_features=2)
    torch.testing.assert_close(circ(x), F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 3, 1))


def test_built_network_works_with_the_library():
    """empirical_ntk, slicing and torch.func see a plain nn.Sequential."""
    arch = wn.Serial(wn.Conv(3), "relu", wn.Residual(wn.Serial(wn.Conv(3), "relu", wn.Conv(3))),
                     wn.GlobalAvgPool(), wn.Dense())
    net = arch.build((2, 6), width=8, out_features=3, seed=0, dtype=torch.float64)
    x = torch.randn(4, 2, 6, dtype=torch.float64)
    assert wn.empirical_ntk(net, x, mode="full").shape == (4, 4, 3, 3)
    assert net[:-1](x).shape == (4, 8)
