"""GPU-only paths: each checked against the same computation on the CPU (and, where the CUDA
code path differs in memory behaviour, its peak memory).  Skipped without a CUDA device."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import wideNN as wn
from wideNN.linalg import cholesky

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

D64 = torch.float64
METHODS = ["jacobian", "ntk_vp", "structured"]


def _data(n=24, d=5, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, o, generator=g, dtype=D64)


def _peak_growth(fn):
    """(fn(), bytes allocated on the current CUDA device at the peak of fn beyond what was live before)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - base


# ----------------------------------------------------------------------------- linalg / analytic
def test_cholesky_factors_in_place_on_cuda():
    # the GP solves rely on factoring the N×N kernel in its own memory (cholesky_ex into the
    # column-major view); on CUDA that is cuSOLVER's potrf through the out= variant
    n = 2048
    a = _data(n, d=64)[0]
    m = a @ a.T + n * torch.eye(n, dtype=D64)
    ref = torch.linalg.cholesky(m)
    mg = m.cuda()
    (L, jitter), grew = _peak_growth(lambda: cholesky(mg, overwrite=True))
    assert jitter == 0.0 and L.is_cuda and L.data_ptr() == mg.data_ptr()
    assert grew < 0.5 * mg.numel() * mg.element_size(), f"{grew / 2**20:.0f} MiB beyond the matrix"
    assert_close(L.cpu(), ref, rtol=1e-10, atol=1e-10)


def test_quadrature_kernel_tiles_fit_in_gpu_memory():
    # tanh on inputs of different norms is integrated node by node, with (rows, M, nodes)
    # temporaries: the automatic CUDA tiles must leave room for them (the closed-form tile size
    # would need ~90 GB here)
    x1 = _data(600, d=10)[0] * torch.linspace(0.5, 1.5, 600, dtype=D64)[:, None]
    x2 = _data(20000, d=10, seed=1)[0]
    arch = wn.Architecture(1, "tanh", 2.0, 0.1)
    x1g, x2g = x1.cuda(), x2.cuda()
    k, grew = _peak_growth(lambda: arch.nngp(x1g, x2g))
    assert grew < 8 * 2**30, f"{grew / 2**30:.1f} GiB"
    # a different tiling uses a different rule per tile: agreement to the quadrature error
    assert_close(k[:4, :300].cpu(), arch.nngp(x1[:4], x2[:300]), rtol=1e-6, atol=1e-9)


def test_tensor_variances_on_cuda_and_standard_parameterization():
    x = _data(30)[0]
    w = torch.tensor(1.7, dtype=D64)
    for act in ("relu", "erf", "gelu", "tanh"):
        cpu = wn.Architecture(2, act, w, 0.2).kernels(x)
        gpu = wn.Architecture(2, act, w.cuda(), 0.2).kernels(x.cuda())
        for a, b in zip(cpu, gpu):
            assert b.is_cuda
            assert_close(b.cpu(), a, rtol=1e-9, atol=1e-12)
    std = wn.Architecture(2, "relu", 2.0, 0.1, "standard")
    assert_close(std.ntk(x.cuda(), widths=[16, 32]).cpu(), std.ntk(x, widths=[16, 32]), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="weight_variance is on"):
        wn.Architecture(1, "relu", w, 0.1).nngp(x.cuda())  # a CPU hyperparameter tensor is refused


@pytest.mark.slow
def test_compiled_relu_path_on_cuda():
    arch = wn.Architecture(3, "relu", 2.0, 0.1)
    x = _data(3000, d=50)[0].cuda()
    for xx in (x, x.float()):
        eager = arch.kernels(xx)
        compiled = arch.kernels(xx, compile=True)
        tol = 1e-10 if xx.dtype == D64 else 1e-4
        for a, b in zip(eager, compiled):
            assert_close(b, a, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- GP inference
def test_posterior_paths_on_cuda_match_cpu():
    x, y = _data(30)
    xt = _data(9, seed=1)[0]
    arch = wn.Architecture(2, "erf", 1.6, 0.2)  # the generic (non-ReLU) kernel path
    times = torch.tensor([0.5, 3.0, float("inf")], dtype=D64)  # a CPU tensor with CUDA data
    for kernel in ("nngp", "ntk"):
        for t in (None, times):
            kw = dict(kernel=kernel, t=t, noise_variance=0.01, full_covariance=True)
            cpu = wn.posterior(arch, x, y, xt, **kw)
            gpu = wn.posterior(arch, x.cuda(), y.cuda(), xt.cuda(), **kw)
            assert gpu.mean.is_cuda and gpu.covariance.is_cuda
            assert_close(gpu.mean.cpu(), cpu.mean, rtol=1e-7, atol=1e-9)
            assert_close(gpu.covariance.cpu(), cpu.covariance, rtol=1e-6, atol=1e-9)
    # float32 data, float64 computation (the default), mean only
    gpu = wn.posterior(arch, x.float().cuda(), y.float().cuda(), xt.float().cuda(), kernel="nngp",
                       noise_variance=0.01, compute_variance=False)
    assert gpu.mean.dtype == D64 and gpu.mean.is_cuda and gpu.variance is None


def test_marginal_likelihood_and_its_gradients_on_cuda():
    x, y = _data(20)

    def lml(dev):
        w = torch.tensor(1.3, dtype=D64, device=dev, requires_grad=True)
        b = torch.tensor(0.2, dtype=D64, device=dev, requires_grad=True)
        noise = torch.tensor(0.05, dtype=D64, requires_grad=True)  # a CPU scalar is accepted
        value = wn.log_marginal_likelihood(wn.Architecture(2, "tanh", w, b), x.to(dev), y.to(dev), noise)
        value.backward()
        return value.detach().cpu(), w.grad.cpu(), b.grad.cpu(), noise.grad

    for a, b in zip(lml("cpu"), lml("cuda")):
        assert_close(b, a, rtol=1e-8, atol=1e-10)


def test_fit_hyperparameters_on_cuda_matches_cpu():
    x, y = _data(30)
    arch = wn.Architecture(2, "relu", 1.0, 0.1)
    for yy, opt in ((y, "adam"), (y[:, 0], "lbfgs")):
        cpu = wn.fit_hyperparameters(arch, x, yy, steps=4, optimizer=opt, progress=False)
        gpu = wn.fit_hyperparameters(arch, x.cuda(), yy.cuda(), steps=4, optimizer=opt, progress=False)
        assert next(gpu.model.parameters()).is_cuda
        for a, b in zip(cpu.history, gpu.history):
            assert b == pytest.approx(a, rel=1e-6)
        assert gpu.noise_variance == pytest.approx(cpu.noise_variance, rel=1e-6)


# ----------------------------------------------------------------------------- finite networks
def test_empirical_kernels_on_cuda_choose_their_own_tiles():
    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    x = _data(40, d=6)[0]
    net = arch.build(6, 64, 3, seed=0, dtype=D64)
    net_g = arch.build(6, 64, 3, seed=0, dtype=D64, device="cuda")  # same seed: same parameters
    xg = x.cuda()
    for method in METHODS:  # chunk_size=None: the tile comes from torch.cuda.mem_get_info
        for mode in ("full", "trace"):
            gpu = wn.empirical_ntk(net_g, xg, xg[:7], mode=mode, method=method)
            assert gpu.is_cuda
            assert_close(gpu.cpu(), wn.empirical_ntk(net, x, x[:7], mode=mode, method=method),
                         rtol=1e-10, atol=1e-12)
    # the linearized network has the same NTK at θ₀
    assert_close(wn.empirical_ntk(wn.linearize(net_g), xg).cpu(), wn.empirical_ntk(net, x), rtol=1e-10, atol=1e-12)
    assert_close(wn.empirical_nngp(arch, xg, width=32, n_samples=6, mode="diagonal").cpu(),
                 wn.empirical_nngp(arch, x, width=32, n_samples=6, mode="diagonal"), rtol=1e-10, atol=1e-12)


def test_training_features_on_cuda_match_cpu():
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    x, y = _data(40)
    xe, ye = _data(10, seed=3)

    def run(dev):
        net = arch.build(5, 32, 2, seed=0, dtype=D64, device=dev)
        return wn.train(net, x.to(dev), y.to(dev), steps=12, learning_rate=0.05, optimizer="adam",
                        batch_size=16, seed=4, eval_data=(xe.to(dev), ye.to(dev)), eval_every=4,
                        ntk_at=[0, 12])

    h1, h2 = run("cpu"), run("cuda")
    # minibatches are drawn on the CPU, so both devices see the same batches
    assert_close(h2.loss, h1.loss, rtol=1e-9, atol=1e-12)
    assert h2.metric_steps == h1.metric_steps
    assert h2.metrics["test_loss"] == pytest.approx(h1.metrics["test_loss"], rel=1e-9)
    assert all(k.is_cuda for k in h2.ntk)
    assert_close(h2.ntk_drift().cpu(), h1.ntk_drift(), rtol=1e-8, atol=1e-12)
    lab = (y[:, 0] > 0).long().cuda()
    net = arch.build(5, 32, 2, seed=0, dtype=D64, device="cuda")
    h = wn.train(net, x.cuda(), lab, steps=5, loss="xent", learning_rate=0.5, eval_data=(x.cuda(), lab))
    assert 0.0 <= h.metrics["test_accuracy"][-1] <= 1.0
    assert wn.max_learning_rate(arch, x.cuda()) == pytest.approx(wn.max_learning_rate(arch, x), rel=1e-9)
    assert wn.max_learning_rate(net, x.cuda()) > 0


def test_divergence_on_cuda_is_reported():
    # the loss is checked every 25 steps on CUDA: the history still ends at the first bad loss
    net = wn.Architecture(1, "relu", 2.0, 0.1).build(5, 64, 2, seed=0, dtype=D64, device="cuda")
    x, y = _data(12)
    with pytest.warns(RuntimeWarning, match="check_every"):
        h = wn.train(net, x.cuda(), y.cuda(), steps=200, learning_rate=1e4)
    assert h.diverged and h.loss.shape == (h.steps + 1,) and not torch.isfinite(h.loss[-1])
    assert torch.isfinite(h.loss[:-1]).all()


def test_ensemble_on_cuda_matches_cpu():
    arch = wn.Architecture(2, "erf", 1.5, 0.1)
    x, y = _data(20)

    def run(dev):
        ens = wn.Ensemble(arch, 16, 5, 2, size=4, seed=3, dtype=D64, device=dev)
        hist = ens.train(x.to(dev), y.to(dev), steps=6, learning_rate=0.3, optimizer="sgd", batch_size=8,
                         seed=0, eval_data=(x.to(dev), y.to(dev)), eval_every=3)
        ens.train(x.to(dev), y.to(dev), steps=3, learning_rate=0.3, trainable="readout")
        return ens, hist

    (e1, h1), (e2, h2) = run("cpu"), run("cuda")
    assert_close(h2.loss, h1.loss, rtol=1e-9, atol=1e-12)
    last = h2.metrics["test_loss"][-1]
    assert not last.is_cuda  # per-member metrics come back to the host
    assert_close(last, h1.metrics["test_loss"][-1], rtol=1e-9, atol=1e-12)
    assert_close(e2.covariance(x.cuda()).cpu(), e1.covariance(x), rtol=1e-9, atol=1e-12)
    member = e2.member(2)
    assert next(member.parameters()).is_cuda
    assert_close(member(x.cuda()).cpu(), e1.member(2)(x), rtol=1e-9, atol=1e-12)
