"""NNGPKernel / NTKKernel: equal to the analytic kernels, GPyTorch's own kernel test suite,
learnable hyperparameters, ScaleKernel + ExactGP + MLL, CUDA and MultiDeviceKernel."""
from __future__ import annotations

import pickle
import unittest

import gpytorch
import pytest
import torch
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase

import wideNN as wn
from wideNN.gp_kernels import NNGPKernel, NTKKernel

DT = torch.float64
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _x(n, d=4, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DT).to(device)


@pytest.mark.parametrize("cls,which", [(NNGPKernel, "nngp"), (NTKKernel, "ntk")])
@pytest.mark.parametrize("act,depth", [("relu", 2), ("erf", 1), ("relu", 0),
                                       pytest.param("tanh", 2, marks=pytest.mark.slow)])
def test_equals_analytic_kernel(cls, which, act, depth):
    arch = wn.Architecture(depth, act, 1.3, 0.25)
    kern = cls(arch).double()
    # the architecture as the kernel holds it (the raw float32 parameter rounds 1.3)
    ref_arch = kern.architecture
    assert abs(ref_arch.weight_variance - 1.3) < 1e-6 and abs(ref_arch.bias_variance - 0.25) < 1e-6
    x1, x2 = _x(9), _x(6, seed=1)
    ref = getattr(ref_arch, which)
    with torch.no_grad():
        torch.testing.assert_close(kern(x1, x2).to_dense(), ref(x1, x2), rtol=1e-10, atol=1e-12)
        full = kern(x1).to_dense()
        torch.testing.assert_close(full, ref(x1), rtol=1e-10, atol=1e-12)
        # the fused ReLU path evaluates arccos at c = 1 − O(eps) on the diagonal, which costs
        # ~sqrt(eps) ≈ 1e-8 relative; the diagonal path is exact there
        torch.testing.assert_close(kern(x1, diag=True), full.diagonal(), rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(kern(x1, x1.clone(), diag=True), full.diagonal(), rtol=1e-7, atol=1e-12)
    # with autograd on (the generic path) the values are the same
    torch.testing.assert_close(kern(x1, x2).to_dense().detach(), ref(x1, x2), rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_difference():
    arch = wn.Architecture(2, "relu", 1.5, 0.3)
    kern = NTKKernel(arch).double()
    x = _x(5)
    kern(x).to_dense().sum().backward()
    g = kern.raw_weight_variance.grad.clone()
    eps = 1e-4
    w = float(kern.weight_variance.detach())
    b = torch.tensor(float(kern.bias_variance.detach()), dtype=DT)

    def total(wv):
        # tensor variances select the generic path (the fused one has ~1e-8 noise on the
        # diagonal, which a finite difference would amplify)
        return float(wn.Architecture(2, "relu", torch.tensor(wv, dtype=DT), b).ntk(x).sum())
    dsdw = (total(w + eps) - total(w - eps)) / (2 * eps)
    dwdraw = torch.sigmoid(kern.raw_weight_variance.detach())  # softplus'
    torch.testing.assert_close(g, dsdw * dwdraw, rtol=1e-5, atol=1e-8)


def test_hyperparameters_setters_priors_constraints():
    kern = NNGPKernel(wn.Architecture(1, "relu", 2.0, 0.1),
                      weight_variance_prior=gpytorch.priors.GammaPrior(2.0, 1.0))
    assert kern.weight_variance.shape == (1,)
    kern.weight_variance = 0.7
    kern.bias_variance = torch.tensor(0.05)
    assert abs(float(kern.weight_variance) - 0.7) < 1e-6
    assert abs(float(kern.bias_variance) - 0.05) < 1e-6
    names = [n for n, *_ in kern.named_priors()]
    assert names == ["weight_variance_prior"]
    assert not kern.is_stationary and not kern.has_lengthscale
    with pytest.raises(ValueError, match="non-negative"):
        kern.weight_variance = -1.0
    with pytest.raises(TypeError, match="Prior"):
        NNGPKernel(wn.Architecture(1), weight_variance_prior=1.0)
    with pytest.raises(TypeError, match="Architecture"):
        NNGPKernel("relu")
    with pytest.raises(ValueError, match="widths"):
        NTKKernel(wn.Architecture(1, parameterization="standard"))
    # zero bias variance is representable (raw = -inf) and stays exactly zero
    k0 = NTKKernel(wn.Architecture(1, "relu", 2.0, 0.0))
    assert float(k0.bias_variance) == 0.0
    # standard parameterization with widths
    ks = NTKKernel(wn.Architecture(1, "relu", 2.0, 0.1, "standard"), widths=[64]).double()
    x = _x(4)
    with torch.no_grad():
        torch.testing.assert_close(ks(x).to_dense(), ks.architecture.ntk(x, widths=[64]))


def test_batch_shape_kernel_matches_each_member():
    kern = NTKKernel(wn.Architecture(2, "erf", 1.0, 0.1), batch_shape=torch.Size([3])).double()
    kern.weight_variance = torch.tensor([[0.5], [1.0], [2.0]])
    x = _x(6)
    with torch.no_grad():
        out = kern(x).to_dense()
        assert out.shape == (3, 6, 6)
        for i in range(3):
            torch.testing.assert_close(out[i], kern[i].architecture.ntk(x), rtol=1e-9, atol=1e-12)
        assert kern(x, diag=True).shape == (3, 6)
    with pytest.raises(ValueError, match="index it first"):
        kern.architecture


def test_exact_gp_with_scale_kernel_trains():
    torch.manual_seed(0)
    x = _x(30, d=3, seed=3)
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.05 * torch.randn(30, dtype=DT)

    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            lik = gpytorch.likelihoods.GaussianLikelihood()
            super().__init__(x, y, lik)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(NTKKernel(wn.Architecture(2, "relu", 1.0, 1.0)))

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    model = GP().double()
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    before = (float(model.covar_module.base_kernel.weight_variance),
              float(model.covar_module.base_kernel.bias_variance))
    values = []
    for _ in range(10):
        opt.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        opt.step()
        values.append(-float(loss))
    assert values[-1] > values[0] + 0.05
    after = (float(model.covar_module.base_kernel.weight_variance),
             float(model.covar_module.base_kernel.bias_variance))
    assert abs(after[0] - before[0]) > 1e-2 and abs(after[1] - before[1]) > 1e-2
    # predictions agree with the closed form through the fitted hyperparameters
    model.eval()
    xt = _x(7, d=3, seed=4)
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        pred = model(xt)
        base = model.covar_module.base_kernel.architecture
        s = float(model.covar_module.outputscale)
        noise = float(model.likelihood.noise)
        k = s * base.ntk(x) + noise * torch.eye(30, dtype=DT)
        kx = s * base.ntk(xt, x)
        mean = kx @ torch.linalg.solve(k, y)
        var = s * base.ntk(xt, diag=True) - (kx * torch.linalg.solve(k, kx.T).T).sum(-1)
    torch.testing.assert_close(pred.mean, mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(pred.variance, var, rtol=1e-5, atol=1e-8)


def test_pickle_roundtrip():
    kern = NNGPKernel(wn.Architecture(2, "tanh", 1.2, 0.3))
    back = pickle.loads(pickle.dumps(kern))
    x = torch.randn(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(back(x).to_dense(), kern(x).to_dense())


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("cls", [NNGPKernel, NTKKernel])
def test_cuda_matches_cpu(cls):
    kern = cls(wn.Architecture(2, "relu", 1.4, 0.2)).double()
    x = _x(30)
    with torch.no_grad():
        cpu = kern(x).to_dense()
        gpu = kern.cuda()(x.cuda()).to_dense()
        diag = kern(x.cuda(), diag=True)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(diag.cpu(), cpu.diagonal(), rtol=1e-9, atol=1e-12)


@cuda
@pytest.mark.cuda
def test_multi_device_kernel():
    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    base = NTKKernel(wn.Architecture(2, "relu", 1.4, 0.2)).double()
    x = _x(50)
    with torch.no_grad():
        ref = base(x).to_dense()
        multi = gpytorch.kernels.MultiDeviceKernel(base.cuda(), device_ids=devices,
                                                   output_device=devices[0])
        out = multi(x.cuda()).to_dense()
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ GPyTorch's own suite
class _Suite(BaseKernelTestCase):
    seed = 0
    kernel_class = NNGPKernel
    arch = wn.Architecture(2, "relu", 1.6, 0.2)

    def create_kernel_no_ard(self, **kwargs):
        return self.kernel_class(self.arch, **kwargs)
    # our kernels have no ARD: the base class skips its ARD tests on NotImplementedError


class TestNNGPKernelGPyTorchSuite(_Suite, unittest.TestCase):
    kernel_class = NNGPKernel


class TestNTKKernelGPyTorchSuite(_Suite, unittest.TestCase):
    kernel_class = NTKKernel


class TestNTKKernelErfGPyTorchSuite(_Suite, unittest.TestCase):
    kernel_class = NTKKernel
    arch = wn.Architecture(3, "erf", 1.1, 0.05)
