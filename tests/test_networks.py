"""Finite networks: both parameterizations exactly as docs/design.md states, seeding, widths."""
import math

import pytest
import torch

import wideNN as wn

F64 = torch.float64


def test_ntk_parameterization_forward_by_hand():
    arch = wn.Architecture(depth=1, activation="erf", weight_variance=1.7, bias_variance=0.3)
    net = arch.build(3, 5, 2, seed=0, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    l1, l2 = net.dense_layers()
    h = torch.erf(math.sqrt(1.7 / 3) * x @ l1.weight.T + math.sqrt(0.3) * l1.bias)
    expected = math.sqrt(1.7 / 5) * h @ l2.weight.T + math.sqrt(0.3) * l2.bias
    torch.testing.assert_close(net(x), expected)
    # parameters are standard normal draws in the NTK parameterization
    big = wn.Architecture(1, "relu", 2.0, 0.5).build(400, 400, 1, seed=1, dtype=F64)
    w = big.dense_layers()[0].weight
    assert abs(w.mean().item()) < 5 / 400 and abs(w.var().item() - 1) < 5 * math.sqrt(2 / w.numel())


def test_standard_parameterization_computes_the_same_function_with_scaled_parameters():
    ntk = wn.Architecture(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    std = ntk.replace(parameterization="standard")
    a, b = ntk.build(6, [7, 9], 3, seed=4, dtype=F64), std.build(6, [7, 9], 3, seed=4, dtype=F64)
    x = torch.randn(5, 6, dtype=F64)
    torch.testing.assert_close(a(x), b(x))
    for la, lb in zip(a.dense_layers(), b.dense_layers()):
        torch.testing.assert_close(lb.weight, la.weight * math.sqrt(2.0 / la.in_features))
        torch.testing.assert_close(lb.bias, la.bias * math.sqrt(0.1))
        assert lb.weight_scale == 1.0 and lb.bias_scale == 1.0


def test_seeded_init_is_reproducible_across_dtypes_and_widths_list():
    arch = wn.Architecture(depth=2, activation="tanh", weight_variance=1.0, bias_variance=0.0)
    n1, n2 = arch.build(4, [8, 3], 2, seed=11), arch.build(4, [8, 3], 2, seed=11, dtype=F64)
    for p1, p2 in zip(n1.parameters(), n2.parameters()):
        torch.testing.assert_close(p1.double(), p2, rtol=1e-7, atol=1e-7)
    assert n1.widths == [8, 3] and n1.in_features == 4 and n1.out_features == 2
    other = arch.build(4, [8, 3], 2, seed=12)
    assert not torch.equal(n1[0].weight, other[0].weight)
    assert isinstance(n1[:-1], torch.nn.Sequential) and len(n1[:-1]) == len(n1) - 1
    depth0 = wn.Architecture(depth=0).build(4, [], 2, seed=0)
    assert len(depth0) == 1


def test_bad_architecture_and_build_arguments():
    with pytest.raises(ValueError, match="weight_variance"):
        wn.Architecture(depth=1, weight_variance=-1.0)
    with pytest.raises(ValueError, match="bias_variance"):
        wn.Architecture(depth=1, bias_variance=float("nan"))
    with pytest.raises(ValueError, match="depth"):
        wn.Architecture(depth=-1)
    with pytest.raises(TypeError, match="depth"):
        wn.Architecture(depth=1.5)
    with pytest.raises(ValueError, match="unknown activation"):
        wn.Architecture(depth=1, activation="relu6")
    with pytest.raises(ValueError, match="parameterization"):
        wn.Architecture(depth=1, parameterization="mup")
    arch = wn.Architecture(depth=2)
    with pytest.raises(ValueError, match="width"):
        arch.build(3, [4], 2)
    with pytest.raises(ValueError, match="in_features"):
        arch.build(0, 4, 2)
    with pytest.raises(TypeError, match="dtype"):
        arch.build(3, 4, 2, dtype=torch.int64)
    assert arch == wn.Architecture(depth=2) and hash(arch) == hash(wn.Architecture(depth=2))
    assert arch.name == "GP-2-2.00-0.00"


def test_feature_mismatch_with_the_network_is_a_clear_error():
    net = wn.Architecture(depth=1).build(3, 4, 2, seed=0)
    with pytest.raises(ValueError, match="in_features=3"):
        net(torch.randn(2, 5))
    for method in ("auto", "jacobian"):
        with pytest.raises(ValueError, match="features"):
            wn.empirical_ntk(net, torch.randn(2, 5), method=method)
    with pytest.raises(TypeError, match="dtype"):
        wn.Architecture(depth=1).build(3, 4, 2, dtype="float64")
    with pytest.raises(TypeError, match="dtype"):
        wn.data.load_digits(dtype=torch.int64)


def test_each_layer_of_each_network_has_its_own_activation():
    arch = wn.Architecture(3, wn.activations.LeakyReLU(0.2), 2.0, 0.1)
    a, b = arch.build(4, 8, 2, seed=0), arch.build(4, 8, 2, seed=0)
    acts = [m for net in (a, b) for m in net if isinstance(m, wn.activations.Activation)]
    assert len(acts) == 6 and len({id(m) for m in acts}) == 6 and all(m is not arch.phi for m in acts)
    assert all(type(m) is type(arch.phi) and m.negative_slope == 0.2 for m in acts)
    # a hook on one layer stays on that layer
    seen = []
    acts[0].register_forward_hook(lambda *args: seen.append(1))
    b(torch.randn(3, 4))
    assert seen == []
    a(torch.randn(3, 4))
    assert seen == [1]
