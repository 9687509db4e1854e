"""wn.Predictor against float64 references written out here with numpy / scipy (matrix
exponentials by scipy.linalg.expm, dense solves), for every kernel source, regime, noise
convention and time (0, small, large, ∞, tensors of times)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import wideNN as wn
import wideNN.predictor as predictor_module
from wideNN import QueryKernels, _factors
from wideNN.linalg import NotPSDError

DT = torch.float64
ARCH = wn.Architecture(2, "relu", 1.6, 0.2)
TIMES = [0.0, 0.05, 3.0, 1e4, math.inf]


def _data(n=12, m=5, d=3, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, o, generator=g, dtype=DT),
            torch.randn(m, d, generator=g, dtype=DT))


def _reference(kind, x, y, xt, t, eta=1.0, noise=0.0, convention="both"):
    """μ = M_xX A Y and Σ = K_xx − M_xX A K_Xx − K_xX A M_Xx + M_xX A C A M_Xx with
    A = M⁻¹(I − expm(−ηtM/N)) (M⁻¹ at t = ∞), M = Θ + σ²I (or K + σ²I), C = K + σ²I / K."""
    k, th = (a.numpy() for a in ARCH.kernels(x))
    kx, thx = (a.numpy() for a in ARCH.kernels(xt, x))
    kxx = ARCH.nngp(xt).numpy()
    n, eye = x.shape[0], np.eye(x.shape[0])
    if kind == "nngp":
        th, thx = k, kx
    m = th + noise * eye
    c = k + noise * eye if (convention == "both" or kind == "nngp") else k
    a = np.linalg.inv(m) if math.isinf(t) else np.linalg.solve(m, eye - scipy.linalg.expm(-eta * t * m / n))
    mean = thx @ a @ y.numpy()
    cov = kxx - thx @ a @ kx.T - kx @ a @ thx.T + thx @ a @ c @ a @ thx.T
    return mean, cov


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("convention,noise", [("both", 0.0), ("both", 0.05), ("ntk", 0.05)])
def test_every_time_from_one_eigendecomposition_matches_expm(kind, convention, noise):
    x, y, xt = _data()
    pred = wn.Predictor(ARCH, x, y, kind, wn.GradientFlow(0.7), noise, noise_convention=convention)
    post = pred.predict(xt, torch.tensor(TIMES), full_covariance=True)
    assert post.mean.shape == (5, 5, 2) and post.covariance.shape == (5, 5, 5)
    for i, t in enumerate(TIMES):
        mean, cov = _reference(kind, x, y, xt, t, 0.7, noise, convention)
        np.testing.assert_allclose(post.mean[i].numpy(), mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(post.covariance[i].numpy(), cov, rtol=1e-6, atol=1e-8)
        one = pred.predict(xt, t)                      # scalar t, variance only
        np.testing.assert_allclose(one.mean.numpy(), mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(one.variance.numpy(), np.diag(cov), rtol=1e-6, atol=1e-8)


def test_noise_conventions_differ_only_in_the_covariance():
    x, y, xt = _data(seed=1)
    both = wn.posterior(ARCH, x, y, xt, kernel="ntk", noise_variance=0.1, full_covariance=True)
    ntk = wn.posterior(ARCH, x, y, xt, kernel="ntk", noise_variance=0.1, full_covariance=True,
                       noise_convention="ntk")
    torch.testing.assert_close(both.mean, ntk.mean)
    # the difference is exactly σ² Θ_xX (Θ + σ²I)⁻² Θ_Xx
    th = ARCH.ntk(x) + 0.1 * torch.eye(12, dtype=DT)
    z = torch.linalg.solve(th, ARCH.ntk(x, xt))
    torch.testing.assert_close(both.covariance - ntk.covariance, 0.1 * z.T @ z, rtol=1e-8, atol=1e-10)
    # readout training at t = ∞ with "both" is the Bayesian NNGP posterior
    ro = wn.Predictor(ARCH, x, y, "nngp", noise_variance=0.1).predict(xt, math.inf, full_covariance=True)
    bayes = wn.posterior(ARCH, x, y, xt, kernel="nngp", noise_variance=0.1, full_covariance=True)
    torch.testing.assert_close(ro.covariance, bayes.covariance, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="noise_convention"):
        wn.Predictor(ARCH, x, y, noise_convention="theta")


def test_cholesky_factorization_matches_the_eigen_path_at_infinity():
    x, y, xt = _data(seed=2)
    for kind in ("ntk", "nngp"):
        ch = wn.Predictor(ARCH, x, y, kind, noise_variance=0.01, factorization="cholesky")
        ei = wn.Predictor(ARCH, x, y, kind, noise_variance=0.01)
        a, b = ch.predict(xt, full_covariance=True), ei.predict(xt, full_covariance=True)
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(a.covariance, b.covariance, rtol=1e-7, atol=1e-9)
        assert a.log_marginal_likelihood is not None and b.log_marginal_likelihood is None
        with pytest.raises(ValueError, match="cholesky"):
            ch.predict(xt, 2.0)


def _matrices(x, xt):
    k, th = ARCH.kernels(x)
    kx, thx = ARCH.kernels(xt, x)
    return k, th, QueryKernels(nngp_test_train=kx, ntk_test_train=thx, nngp_test=ARCH.nngp(xt))


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_precomputed_matrices_equal_the_architecture_to_round_off(kind):
    x, y, xt = _data(seed=3)
    k, th, tests = _matrices(x, xt)
    mats = wn.Predictor.from_matrices(y, nngp_train=k, ntk_train=th, kernel=kind, noise_variance=0.02)
    arch = wn.Predictor(ARCH, x, y, kind, noise_variance=0.02)
    times = torch.tensor(TIMES)
    a, b = mats.predict(tests, times, full_covariance=True), arch.predict(xt, times, full_covariance=True)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.covariance, b.covariance, rtol=1e-12, atol=1e-12)
    # the diagonal alone is enough for the variance; the inputs are not modified
    diag = QueryKernels(nngp_test_train=tests.nngp_test_train, ntk_test_train=tests.ntk_test_train,
                       nngp_test_diag=tests.nngp_test.diagonal())
    torch.testing.assert_close(mats.predict(diag, times).variance, b.variance, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k, ARCH.nngp(x))


class _ImageKernels:
    """A composed description's interface: .kernels(x1, x2=None, diag=False) on (N, C, H, W)."""

    def kernels(self, x1, x2=None, diag=False):
        f1 = x1.flatten(1)
        if diag:
            return ARCH.kernels(f1, diag=True)
        return ARCH.kernels(f1, None if x2 is None else x2.flatten(1))


def test_any_kernel_source_gives_the_same_prediction():
    x, y, xt = _data(n=10, m=4, d=6, seed=4)
    ref = wn.Predictor(ARCH, x, y, "ntk").predict(xt, torch.tensor([0.5, math.inf]))
    img = wn.Predictor(_ImageKernels(), x.reshape(10, 1, 2, 3), y, "ntk").predict(
        xt.reshape(4, 1, 2, 3), torch.tensor([0.5, math.inf]))
    torch.testing.assert_close(img.mean, ref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(img.variance, ref.variance, rtol=1e-12, atol=1e-12)
    pair = wn.Predictor(lambda a, b: ARCH.kernels(a, b), x, y, "ntk").predict(xt, 0.5)
    torch.testing.assert_close(pair.variance, ref.variance[0], rtol=1e-12, atol=1e-12)
    # one matrix: the trained kernel; the NNGP posterior needs nothing else
    nref = wn.Predictor(ARCH, x, y, "nngp", noise_variance=0.1).predict(xt, 2.0)
    single = wn.Predictor(lambda a, b: ARCH.nngp(a, b), x, y, "nngp", noise_variance=0.1).predict(xt, 2.0)
    torch.testing.assert_close(single.mean, nref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(single.variance, nref.variance, rtol=1e-12, atol=1e-12)
    # a GPyTorch kernel: the same as its own matrices given precomputed (its values differ from
    # the Architecture's by ~3e-7 relative, a property of NNGPKernel's code path)
    kern = wn.NNGPKernel(ARCH).double()
    with torch.no_grad():
        gp = wn.Predictor(kern, x, y, "nngp", noise_variance=0.1).predict(xt, 2.0)
        mats = wn.Predictor.from_matrices(y, nngp_train=kern(x, x).to_dense(), kernel="nngp", noise_variance=0.1)
        gp_ref = mats.predict(QueryKernels(nngp_test_train=kern(xt, x).to_dense(),
                                           nngp_test_diag=kern(xt, xt, diag=True)), 2.0)
    torch.testing.assert_close(gp.mean, gp_ref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gp.variance, gp_ref.variance, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gp.mean, nref.mean, rtol=1e-5, atol=1e-6)
    # a single NTK matrix gives the NTK mean; the variance would need K
    only_ntk = wn.Predictor(lambda a, b: ARCH.ntk(a, b), x, y, "ntk", compute_variance=False)
    torch.testing.assert_close(only_ntk.predict(xt, 0.5).mean, ref.mean[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="NNGP"):
        wn.Predictor(lambda a, b: ARCH.ntk(a, b), x, y, "ntk")


def test_many_times_and_test_sets_cost_one_factorization(monkeypatch):
    calls = {"eigh": 0, "cholesky": 0}
    real_eigh, real_chol = predictor_module._f.eigh_psd, predictor_module._f.cholesky

    def eigh(*a, **k):
        calls["eigh"] += 1
        return real_eigh(*a, **k)

    def chol(*a, **k):
        calls["cholesky"] += 1
        return real_chol(*a, **k)
    monkeypatch.setattr(predictor_module._f, "eigh_psd", eigh)
    monkeypatch.setattr(predictor_module._f, "cholesky", chol)
    x, y, _ = _data(seed=5)
    pred = wn.Predictor(ARCH, x, y, "ntk", noise_variance=0.01)
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        xt = torch.randn(3 + i, 3, generator=g, dtype=DT)
        pred.predict(xt, torch.linspace(0, 50, 7), full_covariance=(i % 2 == 0))
        pred.predict(xt, float(i))
    assert calls == {"eigh": 1, "cholesky": 0}
    chol_pred = wn.Predictor(ARCH, x, y, "nngp", factorization="cholesky")
    for _ in range(3):
        chol_pred.predict(torch.randn(4, 3, generator=g, dtype=DT))
    assert calls == {"eigh": 1, "cholesky": 1}


def test_gradient_descent_and_momentum_weights_match_parameter_space_training():
    """An explicit linear model f(x) = φ(x)·δ (features φ, Θ = ΦΦᵀ) trained from δ = 0 in
    parameter space with numpy: its outputs are the predictor's mean for the same kernel."""
    rng = np.random.default_rng(0)
    n, m, p, o = 8, 3, 20, 2
    phi, phit = rng.normal(size=(n, p)), rng.normal(size=(m, p))
    y = rng.normal(size=(n, o))
    th, thx = phi @ phi.T, phit @ phi.T
    eta, mu, steps = 0.4, 0.7, [0, 1, 5, 40]
    for dyn in (wn.GradientDescent(eta), wn.Momentum(eta, mu)):
        pred = wn.Predictor.from_matrices(torch.tensor(y), ntk_train=torch.tensor(th), kernel="ntk",
                                          dynamics=dyn, compute_variance=False)
        out = pred.predict(QueryKernels(ntk_test_train=torch.tensor(thx)), torch.tensor(steps)).mean
        delta, vel = np.zeros((p, o)), None
        for s in range(max(steps) + 1):
            if s in steps:
                np.testing.assert_allclose(out[steps.index(s)].numpy(), phit @ delta, rtol=1e-9, atol=1e-11)
            grad = phi.T @ (phi @ delta - y) / n
            vel = grad if vel is None or isinstance(dyn, wn.GradientDescent) else mu * vel + grad
            delta = delta - eta * vel


def test_posterior_sample_prior_and_log_likelihood():
    x, y, xt = _data(seed=6)
    post = wn.posterior(ARCH, x, y, xt, kernel="nngp", noise_variance=0.1, full_covariance=True)
    s = post.sample(4000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4000, 5, 2)
    # sample mean and covariance within Monte Carlo error (5 standard errors)
    se = (post.variance / 4000).sqrt()
    assert ((s.mean(0) - post.mean).abs() <= 5 * se.unsqueeze(-1)).all()
    emp = torch.einsum("snk,smk->nm", s - post.mean, s - post.mean) / (2 * 4000)
    assert (emp - post.covariance).abs().max() < 0.1 * post.covariance.diagonal().max()
    prior_samples, jitter = wn.prior(ARCH, xt).sample(3, generator=torch.Generator().manual_seed(1),
                                                       return_jitter=True)
    assert prior_samples.shape == (3, 5) and jitter == 0.0
    yt = torch.randn(5, 2, dtype=DT, generator=torch.Generator().manual_seed(2))
    v = post.variance.unsqueeze(-1) + 0.1
    ref = (-0.5 * (math.log(2 * math.pi) + v.log() + (yt - post.mean) ** 2 / v)).mean()
    torch.testing.assert_close(post.log_likelihood(yt, noise_variance=0.1), ref)
    times = wn.posterior(ARCH, x, y, xt, kernel="ntk", t=torch.tensor([1.0, 5.0]))
    assert times.log_likelihood(yt).shape == (2,)
    with pytest.raises(ValueError, match="full_covariance"):
        times.sample(2)
    torch.testing.assert_close(wn.mse_loss(post.mean, yt), ((post.mean - yt) ** 2).sum() / 10)


@pytest.mark.parametrize("bad, match", [
    (dict(t=-1.0), ">= 0"), (dict(t=True), "t must be"), (dict(t="2"), "t must be"),
    (dict(t=[1.0, float("nan")]), "NaN"), (dict(t=torch.ones(2, 2)), "1-D"),
])
def test_bad_times(bad, match):
    x, y, xt = _data(n=6, m=2)
    pred = wn.Predictor(ARCH, x, y)
    with pytest.raises((TypeError, ValueError), match=match):
        pred.predict(xt, **bad)


def test_bad_input_names_the_argument():
    x, y, xt = _data(n=6, m=2)
    k, th, tests = _matrices(x, xt)
    with pytest.raises(TypeError, match="learning_rate"):
        wn.GradientFlow("0.5")
    with pytest.raises(TypeError, match="learning_rate"):
        wn.posterior(ARCH, x, y, xt, t=1.0, learning_rate="0.5")
    with pytest.raises(TypeError, match="noise_variance"):
        wn.posterior(ARCH, x, y, xt, noise_variance=True)
    with pytest.raises(TypeError, match="t must be"):
        wn.posterior(ARCH, x, y, xt, t=True)
    with pytest.raises(TypeError, match="learning_rate"):
        wn.GradientDescent(True)
    with pytest.raises(ValueError, match="momentum"):
        wn.Momentum(0.1, 1.0)
    with pytest.raises(ValueError, match="whole numbers"):
        wn.Predictor(ARCH, x, y, dynamics=wn.GradientDescent(0.1)).predict(xt, 2.5)
    with pytest.raises(ValueError, match="square"):
        wn.Predictor.from_matrices(y, ntk_train=th[:, :4])
    with pytest.raises(ValueError, match="symmetric"):
        wn.Predictor.from_matrices(y, ntk_train=th + torch.triu(torch.ones_like(th), 1))
    with pytest.raises(ValueError, match="NaN"):
        wn.Predictor.from_matrices(y, ntk_train=th.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="y_train has 5 rows"):
        wn.Predictor.from_matrices(y[:5], ntk_train=th)
    with pytest.raises(ValueError, match="ntk_test_train"):
        wn.Predictor.from_matrices(y, ntk_train=th, compute_variance=False).predict(
            QueryKernels(ntk_test_train=tests.ntk_test_train[:, :3]))
    with pytest.raises(TypeError, match="float16"):
        wn.Predictor.from_matrices(y, ntk_train=th.half())
    with pytest.raises(TypeError, match="x_train.*bfloat16"):
        wn.Predictor(ARCH, x.bfloat16(), y)
    with pytest.raises(ValueError, match="meta"):
        wn.Predictor(ARCH, x.to("meta"), y)
    with pytest.raises(ValueError, match="example shapes"):
        wn.Predictor(ARCH, x, y).predict(xt[:, :2])
    with pytest.raises(TypeError, match="kernels must be"):
        wn.Predictor(3.0, x, y)
    with pytest.raises(TypeError, match="QueryKernels"):
        wn.Predictor.from_matrices(y, ntk_train=th, compute_variance=False).predict(xt)
    with pytest.raises(ValueError, match="nngp_train"):
        wn.Predictor.from_matrices(y, ntk_train=th)   # the NTK variance needs K
    with pytest.raises(NotPSDError):
        wn.Predictor.from_matrices(y, ntk_train=-th, compute_variance=False)
    with pytest.raises(ValueError, match="compute_variance=False"):
        wn.Predictor(ARCH, x, y, compute_variance=False).predict(xt, full_covariance=True)


def test_many_times_compressed_variance_equals_the_direct_sum(monkeypatch):
    """With T ≥ 8 times the NTK variance goes through a rank-r factorization of the weights
    (r ≪ T); it must agree with the direct T-fold sum and with expm at sampled times."""
    import wideNN._factors as factors
    x, y, xt = _data(n=60, m=6, seed=11)
    times = torch.cat([torch.zeros(1), torch.logspace(-2, 5, 78), torch.tensor([math.inf])])
    pred = wn.Predictor(ARCH, x, y, "ntk", wn.GradientFlow(0.7), 0.01)
    w = wn.GradientFlow(0.7).weights(pred._factor.lam, times, 60)
    assert factors.compress_times(w) is not None
    fast = pred.predict(xt, times)
    monkeypatch.setattr(factors, "compress_times", lambda w: None)
    slow = pred.predict(xt, times)
    torch.testing.assert_close(fast.variance, slow.variance, rtol=1e-9, atol=1e-11)
    for i in (0, 5, 40, 79):
        _, cov = _reference("ntk", x, y, xt, float(times[i]), 0.7, 0.01)
        np.testing.assert_allclose(fast.variance[i].numpy(), np.diag(cov), rtol=1e-6, atol=1e-8)


def test_sample_draws_l_times_z_with_samples_last_and_keeps_time_dims():
    _, _, xt = _data(m=7, seed=12)
    k = ARCH.nngp(xt)
    s = wn.prior(ARCH, xt).sample(3, generator=torch.Generator().manual_seed(4))
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=DT)
    torch.testing.assert_close(s, (torch.linalg.cholesky(k) @ z).T)
    x, y, _ = _data(seed=12)
    post = wn.posterior(ARCH, x, y, xt, kernel="ntk", t=torch.tensor([0.0, 2.0]), full_covariance=True)
    draws = post.sample(5, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (5, 2, 7, 2)
    # t = 0 is the prior: zero mean, covariance K
    torch.testing.assert_close(post.covariance[0], k, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_means_alone_reuse_the_coefficients_of_the_same_times(kernel, monkeypatch):
    """Means without variances come from M_xX (V W VᵀY), computed once per set of times: they
    equal the means of the variance path (M_xX V)(W VᵀY) to round-off, and a second test set at
    the same times does not recompute the coefficients."""
    x, y, _ = _data(seed=7)
    pred = wn.Predictor(ARCH, x, y, kernel, noise_variance=0.01)
    times = torch.linspace(0, 40, 3)
    g = torch.Generator().manual_seed(1)
    made = []
    real = _factors._mean_coefficients

    def spy(f, w, wy):
        before = f.mean_coef
        out = real(f, w, wy)
        made.append(f.mean_coef is not before)
        return out
    monkeypatch.setattr(_factors, "_mean_coefficients", spy)
    for _ in range(2):
        xt = torch.randn(5, 3, generator=g, dtype=DT)
        fast = pred.predict(xt, times, compute_variance=False)
        ref = pred.predict(xt, times)
        torch.testing.assert_close(fast.mean, ref.mean, rtol=1e-12, atol=1e-12)
    assert made == [True, False]
    pred.predict(xt, times + 1.0, compute_variance=False)
    assert made == [True, False, True]
