"""posterior / log_marginal_likelihood against independent references: the formulas written
out with numpy/scipy (matrix exponential via scipy.linalg.expm, dense solves), scipy's
multivariate normal log-density, and GPyTorch's exact GP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

import wideNN as wn
from wideNN.linalg import NotPSDError, cholesky, eigh_psd, flow_weights
from wideNN.prediction import log_marginal_likelihood, posterior

DT = torch.float64
ARCH = wn.Architecture(2, "relu", 1.6, 0.2)


def _data(n=12, m=5, d=3, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(n, o, generator=g, dtype=DT)
    xt = torch.randn(m, d, generator=g, dtype=DT)
    return x, y, xt


def _np_kernels(arch, x, xt):
    k, th = (a.numpy() for a in arch.kernels(x))
    kx, thx = (a.numpy() for a in arch.kernels(xt, x))
    kxx = arch.nngp(xt).numpy()
    return k, th, kx, thx, kxx


def _reference(kind, arch, x, y, xt, t, eta=1.0, noise=0.0):
    """Mean and covariance written out with a matrix exponential (no eigendecomposition)."""
    k, th, kx, thx, kxx = _np_kernels(arch, x, xt)
    n = x.shape[0]
    Y = y.numpy()
    eye = np.eye(n)
    k = k + noise * eye
    th = th + noise * eye
    if kind == "nngp":
        th, thx = k, kx
    if t is None:
        a = np.linalg.inv(th)
    else:
        a = np.linalg.solve(th, eye - scipy.linalg.expm(-eta * t * th / n))
    mean = thx @ a @ Y
    cov = kxx - thx @ a @ kx.T - kx @ a @ thx.T + thx @ a @ k @ a @ thx.T
    return mean, cov


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("t", [0.3, 4.0, 60.0])
def test_finite_time_matches_matrix_exponential(kind, t):
    x, y, xt = _data()
    mean, cov = _reference(kind, ARCH, x, y, xt, t, eta=0.7)
    post = posterior(ARCH, x, y, xt, kernel=kind, t=t, learning_rate=0.7, full_covariance=True)
    assert post.mean.shape == (5, 2) and post.covariance.shape == (5, 5)
    np.testing.assert_allclose(post.mean.numpy(), mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(post.covariance.numpy(), cov, rtol=1e-6, atol=1e-8)
    diag = posterior(ARCH, x, y, xt, kernel=kind, t=t, learning_rate=0.7)
    np.testing.assert_allclose(diag.variance.numpy(), np.diag(cov), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(diag.mean.numpy(), mean, rtol=1e-7, atol=1e-9)


def test_nngp_readout_closed_form_of_issue():
    """kernel='nngp', t: Σ = K_xx − K_xX K⁻¹(I − e^{−2ηtK/N}) K_Xx (the issue's formula)."""
    x, y, xt = _data(seed=1)
    k, _, kx, _, kxx = _np_kernels(ARCH, x, xt)
    n, t = x.shape[0], 5.0
    cov = kxx - kx @ np.linalg.solve(k, np.eye(n) - scipy.linalg.expm(-2 * t * k / n)) @ kx.T
    post = posterior(ARCH, x, y, xt, kernel="nngp", t=t, full_covariance=True)
    np.testing.assert_allclose(post.covariance.numpy(), cov, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_infinite_time_is_kernel_regression(kind):
    x, y, xt = _data(seed=2)
    mean, cov = _reference(kind, ARCH, x, y, xt, None)
    k, th, kx, thx, _ = _np_kernels(ARCH, x, xt)
    regression = (thx if kind == "ntk" else kx) @ np.linalg.solve(th if kind == "ntk" else k, y.numpy())
    np.testing.assert_allclose(mean, regression, rtol=1e-8, atol=1e-10)
    if kind == "ntk":
        post = posterior(ARCH, x, y, xt, kernel="ntk", t=None, full_covariance=True)
        np.testing.assert_allclose(post.mean.numpy(), mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(post.covariance.numpy(), cov, rtol=1e-6, atol=1e-8)
    # t = ∞ through the eigen path (inside a tensor of times) and a very long time agree
    multi = posterior(ARCH, x, y, xt, kernel=kind, t=torch.tensor([1e9, math.inf]))
    np.testing.assert_allclose(multi.mean[1].numpy(), mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(multi.mean[0].numpy(), mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(multi.variance[1].numpy(), np.diag(cov), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_time_zero_is_the_prior(kind):
    x, y, xt = _data(seed=3)
    post = posterior(ARCH, x, y, xt, kernel=kind, t=0.0, full_covariance=True)
    assert torch.count_nonzero(post.mean) == 0
    torch.testing.assert_close(post.covariance, ARCH.nngp(xt), rtol=1e-10, atol=1e-12)


def test_nngp_long_training_equals_noiseless_bayes_limit():
    x, y, xt = _data(seed=4)
    gd = posterior(ARCH, x, y, xt, kernel="nngp", t=1e10)
    bayes = posterior(ARCH, x, y, xt, kernel="nngp", t=None, noise_variance=1e-11)
    torch.testing.assert_close(gd.mean, bayes.mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(gd.variance, bayes.variance, rtol=1e-5, atol=1e-7)


def test_bayesian_nngp_with_noise_matches_solve():
    x, y, xt = _data(seed=5)
    k, _, kx, _, kxx = _np_kernels(ARCH, x, xt)
    m = k + 0.3 * np.eye(x.shape[0])
    post = posterior(ARCH, x, y, xt, kernel="nngp", noise_variance=0.3, full_covariance=True)
    np.testing.assert_allclose(post.mean.numpy(), kx @ np.linalg.solve(m, y.numpy()), rtol=1e-9)
    np.testing.assert_allclose(post.covariance.numpy(), kxx - kx @ np.linalg.solve(m, kx.T),
                               rtol=1e-8, atol=1e-10)
    assert post.jitter == 0.0


def test_shapes_times_blocks_and_1d_targets():
    x, y, xt = _data(n=10, m=7, o=3, seed=6)
    times = torch.tensor([0.0, 1.0, 10.0, math.inf])
    post = posterior(ARCH, x, y, xt, kernel="ntk", t=times)
    assert post.mean.shape == (4, 7, 3) and post.variance.shape == (4, 7)
    for i, ti in enumerate(times.tolist()):
        one = posterior(ARCH, x, y, xt, kernel="ntk", t=ti)
        torch.testing.assert_close(post.mean[i], one.mean, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(post.variance[i], one.variance, rtol=1e-6, atol=1e-9)
    full = posterior(ARCH, x, y, xt, kernel="ntk", t=times, full_covariance=True)
    assert full.covariance.shape == (4, 7, 7)
    torch.testing.assert_close(full.variance, post.variance, rtol=1e-7, atol=1e-9)
    for kind, t in (("ntk", None), ("nngp", None), ("ntk", 2.0), ("nngp", 2.0)):
        a = posterior(ARCH, x, y, xt, kernel=kind, t=t)
        b = posterior(ARCH, x, y, xt, kernel=kind, t=t, test_block_size=2, kernel_block_size=3)
        torch.testing.assert_close(a.mean, b.mean)
        torch.testing.assert_close(a.variance, b.variance)
        c = posterior(ARCH, x, y[:, 0], xt, kernel=kind, t=t, compute_variance=False)
        assert c.mean.shape == (7,) and c.variance is None
        torch.testing.assert_close(c.mean, a.mean[:, 0])
    f32 = posterior(ARCH, x.float(), y.float(), xt.float(), kernel="nngp")
    assert f32.mean.dtype == DT


def test_flow_weights_stable_and_limits():
    lam = torch.tensor([0.0, 1e-300, 1e-12, 1e-3, 1.0, 50.0], dtype=DT)
    s = torch.tensor([[0.0], [2.0], [math.inf]], dtype=DT)
    f = flow_weights(lam, s)
    assert torch.all(f[0] == 0)
    # below the cut N·eps·max λ = 6.7e-14 (λ = 0, 1e-300: rounding noise): weight 0 at every s,
    # as at s = ∞, so large finite times do not amplify the noise
    assert torch.all(f[:, :2] == 0)
    # small sλ: the series s − s²λ/2 + s³λ²/6 − … (no cancellation)
    torch.testing.assert_close(f[1, 2], torch.tensor(2.0, dtype=DT), rtol=1e-11, atol=0)
    torch.testing.assert_close(f[1, 3], torch.tensor(2.0 - 4.0 * 1e-3 / 2 + 8.0 * 1e-6 / 6 - 16.0 * 1e-9 / 24, dtype=DT), rtol=1e-12, atol=0)
    torch.testing.assert_close(f[1, 4:], (1 - torch.exp(-2 * lam[4:])) / lam[4:])
    # t = ∞: pseudo-inverse, zero below the cut N·eps·max λ = 6.7e-14
    assert f[2, 0] == 0 and f[2, 1] == 0
    torch.testing.assert_close(f[2, 2:], 1 / lam[2:])


def test_linalg_errors_name_the_problem():
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=DT)
    with pytest.raises(NotPSDError, match=r"jitters \[0.0, 1e-10, 1e-08, 1e-06, 0.0001\]"):
        cholesky(bad)
    with pytest.raises(NotPSDError, match="smallest eigenvalue"):
        eigh_psd(bad)
    # a singular PSD matrix succeeds with some jitter, and overwrite=True reuses the memory
    v = torch.randn(6, 2, dtype=DT)
    sing = v @ v.T
    L, jitter = cholesky(lambda: sing.clone(), overwrite=True)
    assert jitter > 0
    torch.testing.assert_close(L @ L.T, sing + jitter * sing.diagonal().mean() * torch.eye(6, dtype=DT))
    a = sing + torch.eye(6, dtype=DT)
    ptr = a.data_ptr()
    L, _ = cholesky(a, overwrite=True)
    assert L.data_ptr() == ptr


def test_posterior_bad_input():
    x, y, xt = _data()
    lin = wn.Architecture(0, "relu", 1.0, 0.0)
    dup = torch.cat([x[:, :1]] * 1, 1).repeat(1, 1)  # rank-one linear kernel on 12 points
    with pytest.raises(NotPSDError, match="jitters"):
        posterior(lin, dup, y, xt[:, :1], kernel="nngp", jitters=(0.0,))
    with pytest.raises(ValueError, match="NaN"):
        posterior(ARCH, x, y.clone().fill_(float("nan")), xt)
    with pytest.raises(ValueError, match="rows"):
        posterior(ARCH, x, y[:5], xt)
    with pytest.raises(ValueError, match="feature"):
        posterior(ARCH, x, y, xt[:, :2])
    with pytest.raises(ValueError, match=">= 0"):
        posterior(ARCH, x, y, xt, t=-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        posterior(ARCH, x, y, xt, t=torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="noise_variance"):
        posterior(ARCH, x, y, xt, noise_variance=-0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        posterior(ARCH, x, y, xt, t=1.0, learning_rate=0.0)
    with pytest.raises(ValueError, match="kernel"):
        posterior(ARCH, x, y, xt, kernel="rbf")
    with pytest.raises(TypeError, match="Architecture"):
        posterior("relu", x, y, xt)
    with pytest.raises(ValueError, match="shape"):
        posterior(ARCH, x, y.unsqueeze(0), xt)


def test_log_marginal_likelihood_matches_scipy_and_gpytorch():
    import gpytorch
    x, y, _ = _data(n=15, o=3, seed=7)
    noise = 0.05
    k = ARCH.nngp(x).numpy() + noise * np.eye(15)
    ref = sum(scipy.stats.multivariate_normal(np.zeros(15), k).logpdf(y[:, j].numpy()) for j in range(3))
    lml = log_marginal_likelihood(ARCH, x, y, noise_variance=noise)
    assert abs(float(lml) - ref) < 1e-8 * abs(ref)
    # GPyTorch's exact MLL is the same quantity divided by N (one output)
    kern = wn.NNGPKernel(ARCH).double()
    lik = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-6)).double()
    lik.noise = noise
    prior = gpytorch.distributions.MultivariateNormal(torch.zeros(15, dtype=DT), kern(x))
    with gpytorch.settings.fast_computations(False, False, False), torch.no_grad():
        gp = float(lik(prior).log_prob(y[:, 0]))
    a = kern.architecture
    assert abs(float(log_marginal_likelihood(a, x, y[:, 0], noise)) - gp) < 1e-6 * abs(gp)


def test_log_marginal_likelihood_gradient():
    x, y, _ = _data(n=10, o=2, seed=8)
    w = torch.tensor(1.3, dtype=DT, requires_grad=True)
    b = torch.tensor(0.2, dtype=DT, requires_grad=True)
    s = torch.tensor(0.1, dtype=DT, requires_grad=True)

    def fn(w, b, s):
        return log_marginal_likelihood(wn.Architecture(2, "erf", w, b), x, y, s)
    assert torch.autograd.gradcheck(fn, (w, b, s))
    with pytest.raises(ValueError, match="NaN"):
        log_marginal_likelihood(ARCH, x, torch.full((10,), float("nan"), dtype=DT))


def test_posterior_differentiable_in_hyperparameters():
    x, y, xt = _data(n=8, m=3, seed=9)
    w = torch.tensor(1.3, dtype=DT, requires_grad=True)

    def fn(w):
        return posterior(wn.Architecture(1, "erf", w, 0.1), x, y, xt, kernel="nngp",
                         noise_variance=0.1).mean
    assert torch.autograd.gradcheck(fn, (w,))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind,t", [("nngp", None), ("ntk", None), ("ntk", 3.0)])
def test_cuda_matches_cpu(kind, t):
    x, y, xt = _data(n=30, m=9, seed=10)
    cpu = posterior(ARCH, x, y, xt, kernel=kind, t=t)
    gpu = posterior(ARCH, x.cuda(), y.cuda(), xt.cuda(), kernel=kind, t=t, test_block_size=4)
    assert gpu.mean.is_cuda
    torch.testing.assert_close(gpu.mean.cpu(), cpu.mean, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gpu.variance.cpu(), cpu.variance, rtol=1e-6, atol=1e-9)


def test_duplicate_inputs_with_conflicting_targets_escalate_the_jitter():
    # LAPACK factors this kernel at jitter 0 with a round-off pivot; the mean would be noise
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x = torch.cat([x, x[:1]])
    y = torch.randn(6, 1, generator=g, dtype=torch.float64)
    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    xt = torch.randn(4, 3, generator=g, dtype=torch.float64)
    post = posterior(arch, x, y, xt, kernel="nngp")
    assert post.jitter > 0
    ref = posterior(arch, x, y, xt, kernel="nngp", noise_variance=post.jitter * float(arch.nngp(x, diag=True).mean()))
    torch.testing.assert_close(post.mean, ref.mean, rtol=1e-6, atol=1e-8)


def test_kernel_that_vanishes_on_the_training_set_raises():
    arch = wn.Architecture(1, "relu", 2.0, 0.0)
    x = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(NotPSDError, match="vanishes"):
        posterior(arch, x, torch.ones(4, 1, dtype=torch.float64), x[:2] + 1.0, kernel="nngp")


@pytest.mark.parametrize("kernel, compute_variance, budget", [("nngp", False, 1.35), ("ntk", False, 1.35),
                                                             ("ntk", True, 2.6)])
def test_posterior_memory_is_one_training_matrix(kernel, compute_variance, budget):
    """Peak RSS above the inputs is about one N×N matrix (two for the NTK variance, which
    needs K as well as Θ's factor).  ``torch.cholesky_solve`` used to copy the factor — one
    more N×N — which ran MNIST:50k (20 GB per matrix) out of memory on a 24 GB machine."""
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import resource, torch, wideNN as wn
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(0)
        n = 4000
        x = torch.randn(n, 32, dtype=torch.float64, generator=g)
        xt = torch.randn(200, 32, dtype=torch.float64, generator=g)
        y = torch.randn(n, 3, dtype=torch.float64, generator=g)
        arch = wn.Architecture(1, "relu", 1.0, 0.1)
        wn.posterior(arch, x[:300], y[:300], xt, kernel="{kernel}", noise_variance=1e-3)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wn.posterior(arch, x, y, xt, kernel="{kernel}", noise_variance=1e-3,
                     compute_variance={compute_variance})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024 / (n * n * 8))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    ratio = float(out.stdout.strip().splitlines()[-1])
    assert ratio < budget, ratio


@pytest.mark.parametrize("kernel,noise,one_d", [("nngp", 0.1, False), ("ntk", 0.01, True), ("nngp", 0.0, True)])
def test_posterior_carries_the_log_marginal_likelihood(kernel, noise, one_d):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = y[:, 0] if one_d else y
    arch = wn.Architecture(2, "erf", 1.7, 0.2)
    post = wn.posterior(arch, x, y, x[:5], kernel=kernel, noise_variance=noise, compute_variance=False)
    ref = wn.log_marginal_likelihood(arch, x, y, noise_variance=noise, kernel=kernel)
    torch.testing.assert_close(post.log_marginal_likelihood, ref, rtol=1e-10, atol=1e-8)
    # the eigendecomposition path (finite t) does not factor the GP's kernel
    assert wn.posterior(arch, x, y, x[:5], kernel=kernel, t=3.0, noise_variance=noise).log_marginal_likelihood is None
