"""Meta tensors (shape only, no data) at the networks' public entry points: a clear ValueError
naming ``x`` where the network holds real parameters, while the library's own evaluations of
networks whose parameters live on the meta device (shape inference, vmapped ensembles) keep working."""
from __future__ import annotations

import copy

import pytest
import torch

import wideNN as wn

F64 = torch.float64
X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)


def _nets():
    arch = wn.Architecture(depth=2, activation="relu")
    conv = wn.Serial(wn.Conv(kernel_size=3), "relu", wn.Flatten(), wn.Dense())
    return {
        "Network": (arch.build(3, 8, 2, seed=0, dtype=F64), X),
        "LayerNetwork": (conv.build(in_shape=(1, 6), width=4, out_features=2, seed=0, dtype=F64),
                         torch.randn(5, 1, 6, dtype=F64)),
    }


@pytest.mark.parametrize("kind", ["Network", "LayerNetwork"])
def test_meta_batch_into_a_real_network_is_refused(kind):
    net, x = _nets()[kind]
    with pytest.raises(ValueError, match=r"x is a meta tensor.*parameters are on cpu"):
        net(x.to("meta"))
    # neighbours: the real batch, and a network moved to meta for shape inference
    assert net(x).shape == (5, 2)
    out = copy.deepcopy(net).to("meta")(x.to("meta"))
    assert out.is_meta and out.shape == (5, 2)


@pytest.mark.parametrize("order", [1, 2])
def test_meta_batch_into_a_taylor_model_is_refused(order):
    net, x = _nets()["Network"]
    model = wn.taylor(net, order) if order > 1 else wn.linearize(net)
    with pytest.raises(ValueError, match="x is a meta tensor"):
        model(x.to("meta"))
    torch.testing.assert_close(model(x), net(x))


def test_internal_meta_evaluations_still_work():
    """Monte-Carlo NNGP (a meta copy of the network evaluated with functional_call), the
    vmapped ensemble (meta structure) and the empirical NTK's cost estimate."""
    arch = wn.Architecture(depth=1, activation="relu")
    k = wn.empirical_nngp(arch, X, width=16, n_samples=4, seed=0)
    assert k.shape == (5, 5) and bool(torch.isfinite(k).all())
    ens = wn.Ensemble(arch, width=8, in_features=3, out_features=1, size=3, seed=0, dtype=F64)
    assert ens(X).shape[:2] in ((3, 5), (5, 3))
    theta = wn.empirical_ntk(arch.build(3, 8, 1, seed=0, dtype=F64), X)
    assert theta.shape == (5, 5)
