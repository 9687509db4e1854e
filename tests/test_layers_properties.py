"""Invariances and numerics of the layered kernels: diag, tiling, symmetry, dtypes, autograd,
GPyTorch wrappers, CUDA."""
import pytest
import torch

import wideNN as wn

ARCHS = {
    "flatten": wn.Serial(wn.Conv(3), "relu", wn.Conv(2, stride=2), "erf", wn.Flatten(), wn.Dense(),
                         bias_variance=0.1),
    "gap-residual": wn.Serial(wn.Conv(3), "relu", wn.Residual(wn.Serial(wn.Conv(3), "relu", wn.Conv(3))),
                              wn.AvgPool(2), wn.GlobalAvgPool(), wn.Dense(), weight_variance=1.5,
                              bias_variance=0.05),
    # tanh has no closed form: quadrature (1-D inputs keep its cost small)
    "quadrature": wn.Serial(wn.Conv(2, padding="circular"), "tanh", wn.AvgPool(2, stride=1),
                            wn.GlobalAvgPool(), wn.Dense(), bias_variance=0.2),
}


def data(n=5, seed=0, dtype=torch.float64, name=None):
    """Inputs (n, 2, 4, 5) (1-D (n, 2, 5) for the quadrature description), scaled so that
    pre-activation variances stay ≲ 1: quadrature activations then use ~50 nodes per axis
    instead of hundreds (their node count grows with √variance)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 2, 5) if name == "quadrature" else (n, 2, 4, 5)
    return 0.5 * torch.randn(*shape, generator=g, dtype=dtype)


def tol(name):
    """Tiling changes the largest variance in a call and so a quadrature rule's node count:
    entries then differ by the quadrature error, largest for coincident points (E[tanh'(u)²]:
    8e-8 relative at degree 48, see wideNN/_activation_base.py)."""
    return 1e-7 if name == "quadrature" else 1e-14


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_diag_is_the_diagonal(name):
    arch, x = ARCHS[name], data(name=name)
    y = data(seed=1, name=name)
    k, t = arch.kernels(x)
    rtol = max(tol(name), 1e-13)
    kd, td = arch.kernels(x, diag=True)
    torch.testing.assert_close(kd, k.diagonal(), rtol=rtol, atol=0)
    torch.testing.assert_close(td, t.diagonal(), rtol=rtol, atol=0)
    kxy, txy = arch.kernels(x, y)
    kd, td = arch.kernels(x, y, diag=True)
    torch.testing.assert_close(kd, kxy.diagonal(), rtol=rtol, atol=0)
    torch.testing.assert_close(td, txy.diagonal(), rtol=rtol, atol=0)
    assert arch.nngp(x, diag=True).shape == (5,) and arch.ntk(x, y, diag=True).shape == (5,)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_tiling_and_symmetry(name):
    arch, x = ARCHS[name], data(n=7, name=name)
    k, t = arch.kernels(x)
    assert torch.equal(k, k.T) and torch.equal(t, t.T)
    rtol = tol(name)
    for block in (1, 3):
        kb, tb = arch.kernels(x, block_size=block)
        torch.testing.assert_close(kb, k, rtol=rtol, atol=0)
        torch.testing.assert_close(tb, t, rtol=rtol, atol=0)
    # x2 = x through the unsymmetric path, and a rectangular tiled kernel
    kx, tx = arch.kernels(x, x.clone(), block_size=2)
    torch.testing.assert_close(kx, k, rtol=max(rtol, 1e-13), atol=0)
    torch.testing.assert_close(tx, t, rtol=max(rtol, 1e-13), atol=0)
    kr = arch.nngp(x, x[2:5], block_size=2)
    torch.testing.assert_close(kr, k[:, 2:5], rtol=max(rtol, 1e-13), atol=0)


def test_float32_close_to_float64():
    for name, arch in ARCHS.items():
        x = data(name=name)
        k64, t64 = arch.kernels(x)
        k32, t32 = arch.kernels(x.float())
        assert k32.dtype == torch.float32
        torch.testing.assert_close(k32.double(), k64, rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(t32.double(), t64, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("shift", [(1, 0), (0, 2), (3, 4)])
def test_circular_gap_kernel_is_shift_invariant(shift):
    """With circular padding and stride 1 every layer commutes with circular shifts, and GAP
    averages over all positions: the kernel cannot see a shift of either input."""
    arch = wn.Serial(wn.Conv(3, padding="circular"), "relu", wn.Conv((2, 3), padding="circular"), "erf",
                     wn.AvgPool(3, stride=1, padding="circular"), wn.GlobalAvgPool(), wn.Dense(),
                     bias_variance=0.1)
    x, y = data(4), data(3, seed=5)
    k, t = arch.kernels(x, y)
    xs = torch.roll(x, shifts=shift, dims=(2, 3))
    for a, b in ((xs, y), (x, torch.roll(y, shifts=shift, dims=(2, 3)))):
        ks, ts = arch.kernels(a, b)
        torch.testing.assert_close(ks, k, rtol=1e-12, atol=0)
        torch.testing.assert_close(ts, t, rtol=1e-12, atol=0)
    # a shift is seen without GAP (flatten readout of zero-padded convs): the test can fail
    flat = wn.Serial(wn.Conv(3), "relu", wn.Conv(3), wn.GlobalAvgPool(), wn.Dense())
    assert not torch.allclose(flat.nngp(xs, y), flat.nngp(x, y), rtol=1e-6)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_autograd_through_variances_matches_finite_differences(act):
    x = data(3)

    def total(w, b):
        arch = wn.Serial(wn.Conv(3), act, wn.AvgPool(2), wn.Conv(2, bias_variance=0.3), act,
                         wn.GlobalAvgPool(), wn.Dense(), weight_variance=w, bias_variance=b)
        k, t = arch.kernels(x)
        return (k * torch.arange(1.0, 10.0, dtype=k.dtype).reshape(3, 3)).sum() + t.sum()

    w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    gw, gb = torch.autograd.grad(total(w, b), (w, b))
    h = 1e-5
    with torch.no_grad():
        fw = (total(w + h, b) - total(w - h, b)) / (2 * h)
        fb = (total(w, b + h) - total(w, b - h)) / (2 * h)
    assert gw.item() == pytest.approx(fw.item(), rel=1e-6)
    assert gb.item() == pytest.approx(fb.item(), rel=1e-6)
    # the no-grad result equals the autograd one
    with torch.no_grad():
        plain = total(w.detach(), b.detach())
    assert plain.item() == pytest.approx(total(w, b).item(), rel=1e-13)


def test_gpytorch_kernels_take_flattened_inputs():
    arch = ARCHS["gap-residual"]
    x, y = data(4), data(3, seed=2)
    for cls, ref in ((wn.NNGPKernel, arch.nngp), (wn.NTKKernel, arch.ntk)):
        kern = cls(arch, in_shape=(2, 4, 5)).double()
        kern.weight_variance = torch.tensor(1.5, dtype=torch.float64)
        kern.bias_variance = torch.tensor(0.05, dtype=torch.float64)
        torch.testing.assert_close(kern(x.flatten(1), y.flatten(1)).to_dense(), ref(x, y), rtol=1e-12, atol=0)
        torch.testing.assert_close(kern(x.flatten(1), diag=True), ref(x, diag=True), rtol=1e-12, atol=0)
        kern(x.flatten(1)).to_dense().sum().backward()
        assert kern.raw_weight_variance.grad is not None and kern.raw_weight_variance.grad.abs() > 0
    # GPyTorch batch dims: one kernel per batch entry
    xb = torch.stack([x.flatten(1), data(4, seed=3).flatten(1)])
    kern = wn.NNGPKernel(arch, in_shape=(2, 4, 5)).double()
    kb = kern(xb).to_dense()
    assert kb.shape == (2, 4, 4)
    ref = kern.architecture  # the description with the kernel's current variances
    torch.testing.assert_close(kb[1], ref.nngp(data(4, seed=3)), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="in_shape"):
        wn.NNGPKernel(arch)
    with pytest.raises(ValueError, match=r"in_shape=\(2, 4, 5\)"):
        wn.NNGPKernel(arch, in_shape=(2, 4, 5)).double()(torch.randn(3, 7, dtype=torch.float64)).to_dense()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for name, arch in ARCHS.items():
        x = data(6, name=name)
        k, t = arch.kernels(x)
        kc, tc = arch.kernels(x.cuda())
        assert kc.is_cuda
        torch.testing.assert_close(kc.cpu(), k, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(tc.cpu(), t, rtol=1e-12, atol=1e-14)
        k32 = arch.nngp(x.float().cuda(), block_size=2)
        torch.testing.assert_close(k32.cpu().double(), k, rtol=2e-5, atol=1e-6)
