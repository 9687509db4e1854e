"""wn.linearize / wn.taylor against explicit Jacobians and Hessians (torch.func.jacrev /
hessian on functional_call) and the closed-form linear dynamics."""
from __future__ import annotations

import pytest
import torch
from torch.func import hessian, jacrev

import wideNN as wn
from _reference_ntk import flat_jacobian

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=8, d=4, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, o, generator=g, dtype=D64)


def test_linearized_equals_first_order_taylor():
    arch = wn.Architecture(2, "tanh", 1.5, 0.2)
    x, _ = _data()
    net = arch.build(4, 10, 2, seed=0, dtype=D64)
    lin = wn.linearize(net)
    torch.testing.assert_close(lin(x), net(x), rtol=0, atol=0)
    f, th0 = flat_jacobian(net, x)
    jac = jacrev(f)(th0)
    delta = 0.1 * torch.randn(th0.shape, dtype=D64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        i = 0
        for p in lin.network.parameters():
            p.add_(delta[i:i + p.numel()].reshape(p.shape))
            i += p.numel()
    want = (f(th0) + jac @ delta).reshape(8, 2)
    torch.testing.assert_close(lin(x), want, rtol=1e-12, atol=1e-13)
    assert not torch.allclose(lin(x), lin.network(x))  # the network itself is non-linear
    # the original model is untouched; reset() restores θ0
    torch.testing.assert_close(net(x), f(th0).reshape(8, 2), rtol=0, atol=0)
    lin.reset()
    torch.testing.assert_close(lin(x), net(x), rtol=0, atol=0)


def test_linearized_training_follows_empirical_ntk_dynamics():
    """f_s = f_0 + ((I − ηΘ̂/N)^s − I)(f_0 − y) exactly for GD, Θ̂ = J Jᵀ from jacrev; and
    within O(η) of the gradient-flow e^{−ηtΘ̂/N} for small η."""
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, y = _data()
    n = 8
    net = arch.build(4, 32, 2, seed=2, dtype=D64)
    f, th0 = flat_jacobian(net, x)
    jac = jacrev(f)(th0)
    theta = jac @ jac.T                                          # (N·O, N·O), example-major
    f0 = f(th0).detach()
    r0 = f0 - y.reshape(-1)
    eta, steps = 0.05, 200
    lin = wn.linearize(net)
    wn.train(lin, x, y, steps=steps, learning_rate=eta)
    eye = torch.eye(16, dtype=D64)
    want = f0 + (torch.linalg.matrix_power(eye - eta * theta / n, steps) - eye) @ r0
    torch.testing.assert_close(lin(x).detach().reshape(-1), want, rtol=1e-10, atol=1e-11)
    flow = f0 + (torch.linalg.matrix_exp(-eta * steps * theta / n) - eye) @ r0
    err = (lin(x).detach().reshape(-1) - flow).abs().max()
    assert err < 0.02 * r0.abs().max()
    # training only the readout of the linearized model also works
    lin2 = wn.linearize(net)
    wn.train(lin2, x, y, steps=3, learning_rate=0.1, trainable="readout")
    moved = [not torch.equal(a, b) for a, b in zip(lin2.network.parameters(), net.parameters())]
    assert moved == [False, False, True, True]


def test_quadratic_model():
    """order 2 = f0 + Jδ + ½δᵀHδ (explicit Hessian); exact for a bilinear network."""
    arch = wn.Architecture(1, "tanh", 1.5, 0.3)
    x, _ = _data(n=3, d=3, o=1)
    net = arch.build(3, 4, 1, seed=0, dtype=D64)
    f, th0 = flat_jacobian(net, x)
    delta = 0.3 * torch.randn(th0.shape, dtype=D64, generator=torch.Generator().manual_seed(0))
    jac, hes = jacrev(f)(th0), hessian(f)(th0)
    want = f(th0) + jac @ delta + 0.5 * torch.einsum("npq,p,q->n", hes, delta, delta)
    q = wn.taylor(net, order=2)
    with torch.no_grad():
        i = 0
        for p in q.network.parameters():
            p.add_(delta[i:i + p.numel()].reshape(p.shape))
            i += p.numel()
    torch.testing.assert_close(q(x).reshape(-1), want, rtol=1e-11, atol=1e-12)
    # an identity-activation net is bilinear in (W1, W2): order 2 exact, order 1 not
    lin_arch = wn.Architecture(1, "identity", 1.0, 0.5)
    net2 = lin_arch.build(3, 5, 2, seed=1, dtype=D64)
    x2, y2 = _data(n=6, d=3, o=2)
    for order, exact in ((2, True), (1, False), (3, True)):
        tm = wn.taylor(net2, order=order)
        wn.train(tm, x2, y2, steps=20, learning_rate=0.5)
        ref = lin_arch.build(3, 5, 2, seed=1, dtype=D64)
        ref.load_state_dict({k.removeprefix("network."): v for k, v in tm.state_dict().items()
                             if k.startswith("network.")})
        assert torch.allclose(tm(x2), ref(x2), rtol=1e-10, atol=1e-12) == exact, order


def test_bad_input():
    net = wn.Architecture(1).build(3, 4, 1)
    with pytest.raises(ValueError, match="order"):
        wn.taylor(net, order=0)
    with pytest.raises(TypeError, match="Module"):
        wn.linearize(lambda x: x)
    with pytest.raises(TypeError, match="already"):
        wn.linearize(wn.linearize(net))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_linearize_cuda():
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, y = _data()
    lin_c = wn.linearize(arch.build(4, 16, 2, seed=0, dtype=D64))
    lin_g = wn.linearize(arch.build(4, 16, 2, seed=0, dtype=D64, device="cuda"))
    h1 = wn.train(lin_c, x, y, steps=10, learning_rate=0.3)
    h2 = wn.train(lin_g, x.cuda(), y.cuda(), steps=10, learning_rate=0.3)
    torch.testing.assert_close(h1.loss, h2.loss, rtol=1e-9, atol=1e-12)
