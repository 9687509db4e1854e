"""A finite network's own trajectory (squared loss: gradient flow, GD, momentum; softmax
cross-entropy: flow, GD, momentum) against wn.linearize trained by wn.train, scipy's expm and
solve_ivp (rtol 1e-10); Monte Carlo kernels against the analytic ones."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import wideNN as wn
from wideNN.monte_carlo import monte_carlo_kernels
from wideNN.trajectory import NetworkTrajectory
from wideNN.xent import CrossEntropyTrajectory

DT = torch.float64
ARCH = wn.Architecture(2, "erf", 1.5, 0.1)


@pytest.fixture(scope="module")
def net_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, dtype=DT, generator=g)
    xt = torch.randn(4, 3, dtype=DT, generator=g)
    y = torch.randn(10, 3, dtype=DT, generator=g)
    labels = torch.randint(0, 3, (10,), generator=g)
    net = ARCH.build(3, 48, 3, seed=0, dtype=DT)
    th, f0, tht, f0t = wn.network_kernels(net, x, xt)
    return dict(net=net, x=x, xt=xt, y=y, labels=labels, f0=f0, f0t=f0t, th=th, tht=tht)


def _trained(d, steps, lr, loss="mse", **opt):
    lin = wn.linearize(d["net"])
    wn.train(lin, d["x"], d["y"] if loss == "mse" else d["labels"], steps=steps, learning_rate=lr,
             loss=loss, progress=False, **opt)
    with torch.no_grad():
        return lin(d["x"]), lin(d["xt"])


@pytest.mark.parametrize("dyn,opt", [(wn.GradientDescent(0.7), dict(optimizer="gd")),
                                     (wn.Momentum(0.3, 0.8), dict(optimizer="momentum", momentum=0.8))])
def test_discrete_trajectory_equals_the_trained_linearized_network(net_data, dyn, opt):
    d = net_data
    traj = NetworkTrajectory(d["th"], d["f0"], d["y"], dyn)
    steps = torch.tensor([0, 3, 25])
    out_train, out_test = traj.train_outputs(steps), traj.outputs(d["tht"], d["f0t"], steps)
    for i, s in enumerate(steps.tolist()):
        a, b = _trained(d, s, dyn.learning_rate, **opt)
        torch.testing.assert_close(out_train[i], a, rtol=1e-10, atol=1e-11)
        torch.testing.assert_close(out_test[i], b, rtol=1e-10, atol=1e-11)
    assert (out_train[-1] - d["f0"]).abs().max() > 0.5   # it did move


def test_gradient_flow_trajectory_matches_expm_and_small_step_training(net_data):
    d = net_data
    n, o = d["f0"].shape
    eta, noise = 0.9, 0.01
    traj = NetworkTrajectory(d["th"], d["f0"], d["y"], wn.GradientFlow(eta), noise)
    times = [0.0, 0.02, 7.0, 1e5, math.inf]
    th = d["th"].permute(0, 2, 1, 3).reshape(n * o, n * o).numpy() + noise * np.eye(n * o)
    thx = d["tht"].permute(0, 2, 1, 3).reshape(-1, n * o).numpy()
    r0 = (d["y"] - d["f0"]).numpy().reshape(-1)
    out_train, out_test = traj.train_outputs(torch.tensor(times)), traj.outputs(d["tht"], d["f0t"], torch.tensor(times))
    for i, t in enumerate(times):
        if math.isinf(t):
            a = np.linalg.solve(th, r0)
        else:
            a = np.linalg.solve(th, (np.eye(n * o) - scipy.linalg.expm(-eta * t * th / n)) @ r0)
        ref_train = d["f0"].numpy() + ((th - noise * np.eye(n * o)) @ a).reshape(n, o)
        ref_test = d["f0t"].numpy() + (thx @ a).reshape(-1, o)
        np.testing.assert_allclose(out_train[i].numpy(), ref_train, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(out_test[i].numpy(), ref_test, rtol=1e-7, atol=1e-9)
    # small-step GD of the linearized network approaches the flow (first order in η)
    flow = NetworkTrajectory(d["th"], d["f0"], d["y"], wn.GradientFlow(0.02)).outputs(d["tht"], d["f0t"], 150.0)
    _, b = _trained(d, 150, 0.02)
    gap = float((flow - b).abs().max() / (b - d["f0t"]).abs().max())
    assert 1e-6 < gap < 3e-3, gap


def test_trace_kernel_with_one_output_equals_the_full_kernel(net_data):
    d = net_data
    net = ARCH.build(3, 32, 1, seed=1, dtype=DT)
    with torch.no_grad():
        f0, f0t = net(d["x"]), net(d["xt"])
    y = d["y"][:, :1]
    full = NetworkTrajectory(wn.empirical_ntk(net, d["x"], mode="full"), f0, y, wn.GradientFlow(0.5))
    trace = NetworkTrajectory(wn.empirical_ntk(net, d["x"]), f0, y, wn.GradientFlow(0.5))
    t = torch.tensor([1.0, 30.0])
    torch.testing.assert_close(full.outputs(wn.empirical_ntk(net, d["xt"], d["x"], mode="full"), f0t, t),
                               trace.outputs(wn.empirical_ntk(net, d["xt"], d["x"]), f0t, t))


@pytest.mark.parametrize("dyn,opt", [(wn.GradientDescent(1.5), dict(optimizer="gd")),
                                     (wn.Momentum(0.4, 0.9), dict(optimizer="momentum", momentum=0.9))])
def test_cross_entropy_discrete_equals_the_trained_linearized_network(net_data, dyn, opt):
    d = net_data
    traj = CrossEntropyTrajectory(d["th"], d["f0"], d["labels"], dyn)
    steps = torch.tensor([0, 4, 30])
    out_train, out_test = traj.train_outputs(steps), traj.outputs(d["tht"], d["f0t"], steps)
    for i, s in enumerate(steps.tolist()):
        a, b = _trained(d, s, dyn.learning_rate, loss="xent", **opt)
        torch.testing.assert_close(out_train[i], a, rtol=1e-10, atol=1e-11)
        torch.testing.assert_close(out_test[i], b, rtol=1e-10, atol=1e-11)


def _xent_reference(th_flat, thx_flat, f0, f0t, p, eta, times):
    """(f_X, f_x) by scipy's solve_ivp (DOP853, rtol 1e-10) on the augmented system (f_X, G)."""
    n, o = f0.shape

    def rhs(_, z):
        f = z[:n * o].reshape(n, o)
        e = np.exp(f - f.max(1, keepdims=True))
        g = (e / e.sum(1, keepdims=True) - p).reshape(-1)
        return np.concatenate([-(eta / n) * th_flat @ g, g])
    z0 = np.concatenate([f0.reshape(-1), np.zeros(n * o)])
    sol = scipy.integrate.solve_ivp(rhs, (0, max(times)), z0, t_eval=times, method="DOP853",
                                    rtol=1e-10, atol=1e-12)
    zs = sol.y.T
    train = zs[:, :n * o].reshape(-1, n, o)
    test = f0t[None] - (eta / n) * (zs[:, n * o:] @ thx_flat.T).reshape(len(times), -1, o)
    return train, test


def test_cross_entropy_flow_matches_solve_ivp_empirical_and_analytic(net_data):
    d = net_data
    n, o = d["f0"].shape
    p = torch.nn.functional.one_hot(d["labels"], o).double().numpy()
    times = [0.0, 0.3, 8.0, 400.0]
    # empirical full NTK, the network's own initial outputs
    traj = CrossEntropyTrajectory(d["th"], d["f0"], d["labels"], wn.GradientFlow(2.0))
    ref_train, ref_test = _xent_reference(d["th"].permute(0, 2, 1, 3).reshape(n * o, n * o).numpy(),
                                          d["tht"].permute(0, 2, 1, 3).reshape(-1, n * o).numpy(),
                                          d["f0"].numpy(), d["f0t"].numpy(), p, 2.0, times)
    np.testing.assert_allclose(traj.train_outputs(torch.tensor(times)).numpy(), ref_train, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(traj.outputs(d["tht"], d["f0t"], torch.tensor(times)).numpy(), ref_test,
                               rtol=1e-7, atol=1e-8)
    # analytic NTK shared by the outputs (Θ ⊗ I), from zero initial outputs, soft targets
    th, thx = ARCH.ntk(d["x"]), ARCH.ntk(d["xt"], d["x"])
    soft = torch.softmax(d["y"], -1)
    z0, z0t = torch.zeros(n, o, dtype=DT), torch.zeros(4, o, dtype=DT)
    traj = CrossEntropyTrajectory(th, z0, soft, wn.GradientFlow(1.0))
    ref_train, ref_test = _xent_reference(np.kron(th.numpy(), np.eye(o)), np.kron(thx.numpy(), np.eye(o)),
                                          z0.numpy(), z0t.numpy(), soft.numpy(), 1.0, times)
    np.testing.assert_allclose(traj.train_outputs(torch.tensor(times)).numpy(), ref_train, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(traj.outputs(thx, z0t, 8.0).numpy(), ref_test[2], rtol=1e-7, atol=1e-8)


def test_trajectory_bad_input(net_data):
    d = net_data
    with pytest.raises(ValueError, match="regression targets"):
        CrossEntropyTrajectory(d["th"], d["f0"], d["y"])
    with pytest.raises(ValueError, match="labels"):
        CrossEntropyTrajectory(d["th"], d["f0"], d["labels"] + 5)
    xent = CrossEntropyTrajectory(d["th"], d["f0"], d["labels"])
    with pytest.raises(ValueError, match="finite"):
        xent.train_outputs(None)
    with pytest.raises(ValueError, match=">= 0"):
        xent.train_outputs(-1.0)
    with pytest.raises(ValueError, match="ntk_train"):
        NetworkTrajectory(d["th"][:, :, :2], d["f0"], d["y"])
    with pytest.raises(ValueError, match="f0_train and y_train"):
        NetworkTrajectory(d["th"], d["f0"], d["y"][:, :2])
    with pytest.raises(ValueError, match="ntk_test_train"):
        NetworkTrajectory(d["th"], d["f0"], d["y"]).outputs(d["tht"][:, :5], d["f0t"], 1.0)
    with pytest.raises(TypeError, match="t must be"):
        NetworkTrajectory(d["th"], d["f0"], d["y"]).train_outputs(True)


def test_monte_carlo_kernels_match_the_analytic_ones_within_standard_errors():
    """One hidden layer: the Monte Carlo estimates are unbiased at any width, so every entry
    must lie within 5 standard errors of the analytic kernel (and the errors must be small)."""
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    g = torch.Generator().manual_seed(0)
    x, x2 = torch.randn(4, 3, dtype=DT, generator=g), torch.randn(3, 3, dtype=DT, generator=g)
    mc = monte_carlo_kernels(arch, x, x2, n_samples=96, batch_size=48, in_features=3, width=64,
                             out_features=2, dtype=DT)
    k, th = arch.kernels(x, x2)
    assert mc.nngp.shape == (4, 3) and mc.n_samples == 96
    assert ((mc.nngp - k).abs() <= 5 * mc.nngp_se).all()
    assert ((mc.ntk - th).abs() <= 5 * mc.ntk_se).all()
    assert (mc.ntk_se < 0.1 * th.abs().max()).all()
    # a wrong kernel is detected: the NTK is not the NNGP
    assert ((mc.ntk - k).abs() > 5 * mc.ntk_se).any()
    # a build callable gives the same numbers as the object with .build
    same = monte_carlo_kernels(lambda s: arch.build(3, 64, 2, seed=s, dtype=DT), x, x2, n_samples=96,
                               batch_size=32, compute=("nngp",))
    torch.testing.assert_close(same.nngp, mc.nngp)
    assert same.ntk is None
    with pytest.raises(ValueError, match="n_samples"):
        monte_carlo_kernels(arch, x, n_samples=1, in_features=3, width=8, out_features=1)
