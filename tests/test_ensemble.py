"""wn.Ensemble: seeding rule, equality with members trained one by one, and the
infinite-width predictions (NTK-GP / NNGP at time t) it should sample from."""
from __future__ import annotations

import math

import pytest
import torch

import wideNN as wn

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=10, d=5, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, o, generator=g, dtype=D64)


def test_seeding_rule_and_forward():
    arch = wn.Architecture(2, "erf", 1.5, 0.1)
    x, _ = _data()
    ens = wn.Ensemble(arch, 12, 5, 2, size=3, seed=7, dtype=D64)
    out = ens(x)
    assert out.shape == (3, 10, 2)
    for i in range(3):
        ref = arch.build(5, 12, 2, seed=7 + i, dtype=D64)
        torch.testing.assert_close(out[i], ref(x), rtol=1e-13, atol=1e-14)
        for (k, a), (_, b) in zip(ens.member(i).named_parameters(), ref.named_parameters()):
            assert torch.equal(a, b), k
    # per-member inputs
    xs = torch.randn(3, 4, 5, dtype=D64)
    per = ens(xs)
    for i in range(3):
        torch.testing.assert_close(per[i], ens.member(i)(xs[i]), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ens.mean(x), out.mean(0).detach())
    torch.testing.assert_close(ens.variance(x), out.var(0).detach())
    cov = ens.covariance(x)
    assert cov.shape == (2, 10, 10)
    torch.testing.assert_close(cov.diagonal(dim1=1, dim2=2).T, ens.variance(x))


@pytest.mark.parametrize("optimizer,trainable", [("gd", "all"), ("adam", "all"), ("gd", "readout"),
                                                 ("sgd", "all")])
def test_ensemble_equals_members_one_by_one(optimizer, trainable):
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, y = _data(n=12)
    kw = dict(steps=15, learning_rate=0.3 if optimizer != "adam" else 0.02, optimizer=optimizer,
              trainable=trainable, batch_size=4 if optimizer == "sgd" else None, seed=3)
    ens = wn.Ensemble(arch, 16, 5, 2, size=4, seed=11, dtype=D64)
    h = ens.train(x, y, **kw)
    assert h.loss.shape == (16, 4)
    for i in range(4):
        net = arch.build(5, 16, 2, seed=11 + i, dtype=D64)
        hi = wn.train(net, x, y, **kw)
        torch.testing.assert_close(h.loss[:, i], hi.loss, rtol=1e-11, atol=1e-13)
        for (k, a), (_, b) in zip(ens.member(i).named_parameters(), net.named_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13, msg=k)
    assert (h.loss[-1] < h.loss[0]).all()


def test_ensemble_ntk_snapshots_equal_members_one_by_one():
    from _reference_ntk import reference_ntk

    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    x, y = _data(n=8)
    xs = _data(n=5, seed=1)[0]
    kw = dict(steps=20, learning_rate=0.5, ntk_at=[0, 10, 20], ntk_x=xs, ntk_mode="full")
    ens = wn.Ensemble(arch, 16, 5, 2, size=3, seed=4, dtype=D64)
    ref0 = [reference_ntk(ens.member(i), xs, "full") for i in range(3)]
    h = ens.train(x, y, **kw)
    assert h.ntk_steps == [0, 10, 20] and h.ntk[0].shape == (3, 5, 5, 2, 2)
    drift = h.ntk_drift()
    assert drift.shape == (3, 3) and (drift[0] == 0).all() and (drift[-1] > 0).all()
    for i in range(3):
        torch.testing.assert_close(h.ntk[0][i], ref0[i], rtol=1e-10, atol=1e-12)
        hi = wn.train(arch.build(5, 16, 2, seed=4 + i, dtype=D64), x, y, **kw)
        for a, b in zip(h.ntk, hi.ntk):
            torch.testing.assert_close(a[i], b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(drift[:, i], hi.ntk_drift(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="ntk_x"):
        ens.train(x, y, steps=1, ntk_at=[0], ntk_x=torch.randn(4, 3, dtype=D64))
    with pytest.raises(ValueError, match="ntk_at"):
        ens.train(x, y, steps=1, ntk_at=[2])


def test_ensemble_eval_and_xent():
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, _ = _data(n=12)
    labels = torch.arange(12) % 3
    ens = wn.Ensemble(arch, 16, 5, 3, size=3, seed=0, dtype=D64)
    h = ens.train(x, labels, steps=6, learning_rate=0.5, loss="xent", eval_data=(x, labels), eval_every=3)
    assert h.metric_steps == [0, 3, 6]
    torch.testing.assert_close(h.metrics["test_loss"][-1], h.loss[-1])
    assert h.metrics["test_accuracy"][-1].shape == (3,)


def test_nn_module_train_flag_still_works():
    ens = wn.Ensemble(wn.Architecture(1), 4, 3, 1, size=2)
    assert ens.eval() is ens and not ens.training
    ens.train()
    assert ens.training


def test_bad_input():
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, y = _data()
    ens = wn.Ensemble(arch, 8, 5, 2, size=2, dtype=D64)
    with pytest.raises(ValueError, match="learning_rate"):
        ens.train(x, y, steps=1, learning_rate=0)
    with pytest.raises(ValueError, match="steps"):
        ens.train(x, y, steps=-2)
    with pytest.raises(ValueError, match="shape"):
        ens.train(x, y[:, :1], steps=1)
    with pytest.raises(ValueError, match="features"):
        ens.train(x[:, :4], y, steps=1)
    xn = x.clone()
    xn[2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ens.train(xn, y, steps=1)
    with pytest.raises(ValueError, match="per-member"):
        ens(torch.randn(3, 4, 5, dtype=D64))
    with pytest.raises(ValueError, match="trainable"):
        ens.train(x, y, steps=1, trainable="hidden")
    with pytest.raises(ValueError, match="size"):
        wn.Ensemble(arch, 8, 5, 2, size=0)
    with pytest.raises(ValueError, match="needs targets"):
        ens.train(x)


def test_divergent_member_is_named():
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, y = _data()
    ens = wn.Ensemble(arch, 32, 5, 2, size=3, dtype=D64)
    with pytest.warns(RuntimeWarning, match="member"):
        h = ens.train(x, y, steps=300, learning_rate=1e4)
    assert h.diverged and h.loss.shape[1] == 3


# ----------------------------------------------------------------------------- vs. infinite width
def _discrete_reference(arch, x, y, xt, eta, steps, kernel):
    """Mean/variance at x_test of infinitely wide nets trained by `steps` GD steps: the
    linearized dynamics f_s = f_0 − A(f_0(X) − Y) with A = Θ(x,X)Θ⁻¹(I − (I − ηΘ/N)^s),
    f_0 ~ GP(0, K) (Lee et al. 2019 eq. 15-16 in discrete time); Θ → K for readout-only."""
    n = x.shape[0]
    xx = torch.cat([x, xt])
    k = arch.nngp(xx)
    th = arch.ntk(xx) if kernel == "ntk" else k
    e = torch.linalg.matrix_power(torch.eye(n, dtype=D64) - eta * th[:n, :n] / n, steps)
    a = th[n:, :n] @ torch.linalg.solve(th[:n, :n], torch.eye(n, dtype=D64) - e)
    kxt = k[n:, :n]
    cov = k[n:, n:] - a @ kxt.T - kxt @ a.T + a @ k[:n, :n] @ a.T
    return (a @ y)[:, 0], cov.diagonal()


def _ensemble_vs_gp(kernel: str, width: int, size: int, steps: int = 100):
    arch = wn.Architecture(1, "relu", 2.0, 0.2)
    g = torch.Generator().manual_seed(0)
    n, m, d = 8, 6, 4
    x, xt = torch.randn(n, d, generator=g, dtype=D64), torch.randn(m, d, generator=g, dtype=D64)
    y = torch.randn(n, 1, generator=g, dtype=D64)
    eta = 0.5 * wn.max_learning_rate(arch.ntk(x) if kernel == "ntk" else arch.nngp(x))
    ens = wn.Ensemble(arch, width, d, 1, size=size, seed=0)
    ens.train(x.float(), y.float(), steps=steps, learning_rate=eta,
              trainable="all" if kernel == "ntk" else "readout")
    out = ens(xt.float()).detach().double()[..., 0]
    mu, var = out.mean(0), out.var(0)
    mu_d, var_d = _discrete_reference(arch, x, y, xt, eta, steps, kernel)
    post = wn.posterior(arch, x, y, xt, kernel=kernel, t=steps, learning_rate=eta)
    # Tolerances.  Statistical: se(mean) = √(var/S), se(var)/var ≈ √(2/(S−1)); we allow 4 se.
    # Finite width: measured at width 1024, S = 256, the ensemble is within 1.4 se of the
    # reference for the mean and within 7% for the variance (< 1 se), so 0.03·√var_ref and
    # 5% suffice as bias allowances.  Continuous vs discrete time (η = ½η_max): the GD
    # reference differs from wn.posterior's e^{−ηtΘ/N} by ≲ 1% here; allowed separately.
    se = (var / size).sqrt()
    assert ((mu - mu_d).abs() <= 4 * se + 0.03 * var_d.sqrt()).all(), ((mu - mu_d) / se)
    rel = var / var_d - 1
    assert (rel.abs() <= 4 * math.sqrt(2 / (size - 1)) + 0.05).all(), rel
    assert rel.mean().abs() <= 2 * math.sqrt(2 / (size - 1)) + 0.05, rel
    torch.testing.assert_close(post.mean[:, 0], mu_d, rtol=0.02, atol=0.01)
    torch.testing.assert_close(post.variance, var_d, rtol=0.02, atol=0.01)
    # the test has power: the prior (t = 0) and a much earlier time are rejected
    mu_early, _ = _discrete_reference(arch, x, y, xt, eta, steps // 10, kernel)
    assert ((mu - mu_early).abs() / se).max() > 6


def test_ensemble_matches_ntk_posterior_at_t():
    _ensemble_vs_gp("ntk", width=1024, size=256)


def test_readout_ensemble_matches_nngp_posterior_at_t():
    _ensemble_vs_gp("nngp", width=1024, size=256)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_ensemble_matches_posterior_wide(kernel):
    _ensemble_vs_gp(kernel, width=4096, size=1024, steps=200)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ensemble_cuda_matches_cpu():
    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    x, y = _data()
    cpu = wn.Ensemble(arch, 32, 5, 2, size=8, seed=0, dtype=D64)
    gpu = wn.Ensemble(arch, 32, 5, 2, size=8, seed=0, dtype=D64, device="cuda")
    h1 = cpu.train(x, y, steps=20, learning_rate=0.3)
    h2 = gpu.train(x.cuda(), y.cuda(), steps=20, learning_rate=0.3)
    torch.testing.assert_close(h1.loss, h2.loss, rtol=1e-9, atol=1e-12)
