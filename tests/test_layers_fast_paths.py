"""The fast paths of the layered kernels: the fused ReLU dual (per-example factors computed
once, NumPy's arccos and sqrt on the CPU) and the tiles shared out between worker threads."""
import math

import numpy as np
import pytest
import torch

import wideNN as wn
from wideNN.layers import _evaluate
from wideNN._numpy_math import arccos, arccos_into, sqrt_
from wideNN.layers.activation import relu_dual_fused, relu_dual_inplace, relu_factors


def _closed_form(k11: float, k12: float, k22: float) -> tuple[float, float]:
    """ReLU's duals from the arc-cosine kernel of degree 1 (Cho & Saul 2009), in Python floats,
    with correlations within 8 ulps of ±1 taken as ±1 (``wideNN._gaussian.snap_correlation``)."""
    if k11 <= 0 or k22 <= 0:
        return 0.0, 0.25  # c = 0: T = 0 (s = 0), Ṫ = (π − π/2)/2π
    c = max(-1.0, min(1.0, k12 / math.sqrt(k11) / math.sqrt(k22)))
    tol = 8 * np.finfo(np.float64).eps
    c = 1.0 if c >= 1 - tol else (-1.0 if c <= -1 + tol else c)
    theta = math.acos(c)
    t = math.sqrt(k11 * k22) / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - theta) * c)
    return t, (math.pi - theta) / (2 * math.pi)


def _cases():
    g = torch.Generator().manual_seed(0)
    k11 = torch.rand(6, 1, 5, generator=g, dtype=torch.float64) * 3 + 0.1
    k22 = torch.rand(1, 7, 5, generator=g, dtype=torch.float64) * 3 + 0.1
    c = torch.rand(6, 7, 5, generator=g, dtype=torch.float64) * 2 - 1
    c[0, 0], c[1, 1], c[2, 2] = 1.0, -1.0, 1.0 - 1e-15      # coincident and antipodal points
    c[3, 3] = 1.0 + 1e-15                                    # rounding past 1
    k11[4, 0, :2] = 0.0                                      # a zero variance: c = 0
    return k11, (c * (k11 * k22).sqrt()), k22


def test_fused_relu_dual_matches_the_closed_form():
    k11, k12, k22 = _cases()
    t, td = relu_dual_fused(k12, relu_factors(k11), relu_factors(k22))
    for i, j, p in np.ndindex(*k12.shape):
        ref_t, ref_td = _closed_form(float(k11[i, 0, p]), float(k12[i, j, p]), float(k22[0, j, p]))
        assert float(t[i, j, p]) == pytest.approx(ref_t, rel=1e-13, abs=1e-15)
        assert float(td[i, j, p]) == pytest.approx(ref_td, rel=1e-13, abs=1e-15)
    # the same snap as the in-place dual: exactly ±1 within 8 ulps
    t0, td0 = relu_dual_inplace(k11, k12, k22)
    torch.testing.assert_close(t, t0, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(td, td0, rtol=1e-13, atol=1e-15)
    assert td[0, 0, 0] == 0.5 and td[1, 1, 0] == 0.0 and td[2, 2, 0] == 0.5 and td[3, 3, 0] == 0.5
    assert td[4, 0, 0] == 0.25 and t[4, 0, 0] == 0.0


def test_numpy_transcendentals_agree_with_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1000, generator=g, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(arccos(x), torch.arccos(x), rtol=4e-16, atol=4e-16)
    out = torch.zeros(40, 50, dtype=torch.float64)[:, ::2]  # a strided view, written in place
    arccos_into(x.reshape(40, 25), out)
    torch.testing.assert_close(out, torch.arccos(x.reshape(40, 25)), rtol=4e-16, atol=4e-16)
    y = x.abs()
    torch.testing.assert_close(sqrt_(y.clone()), y.sqrt(), rtol=4e-16, atol=0)
    # autograd and float32 keep working (torch's own ops where NumPy cannot serve)
    z = x.clone().requires_grad_()
    arccos(z).sum().backward()
    torch.testing.assert_close(z.grad, -1 / (1 - x * x).sqrt())
    assert arccos(x.float()).dtype == torch.float32


ARCHS = {
    "flatten": wn.Serial(wn.Conv(3), "relu", wn.Conv(3, stride=2), "relu", wn.Flatten(), wn.Dense(),
                         bias_variance=0.05),
    "gap-residual": wn.Serial(wn.Conv(3), wn.Residual(wn.Serial("relu", wn.Conv(3))), "relu",
                              wn.GlobalAvgPool(), wn.Dense(), bias_variance=0.1),
}


@pytest.fixture
def two_workers(monkeypatch):
    """Two worker threads whatever the machine's load, torch's intra-op threads at 2."""
    monkeypatch.setattr(_evaluate, "tile_threads", lambda threads=None: 2)
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_worker_threads_give_the_sequential_kernels(name, two_workers):
    arch = ARCHS[name]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 2, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64)
    calls = [lambda: arch.kernels(x, block_size=2), lambda: arch.kernels(x, y, block_size=3)]
    threaded = [c() for c in calls]
    with torch.inference_mode():  # the workers write into the caller's inference tensors
        inference = [c() for c in calls]
    torch.set_num_threads(1)
    _evaluate.tile_threads = lambda threads=None: 1
    for c, a, b in zip(calls, threaded, inference):
        ref = c()
        for got in (a, b):
            torch.testing.assert_close(got[0], ref[0], rtol=1e-14, atol=0)
            torch.testing.assert_close(got[1], ref[1], rtol=1e-14, atol=0)
    assert torch.equal(threaded[0][0], threaded[0][0].T)


def test_worker_threads_leave_autograd_to_the_calling_thread(two_workers):
    """Kernels that carry autograd run every tile in the caller's thread, and the gradient is
    the one of the tiled no-grad kernels (checked against a central difference)."""
    x = torch.randn(6, 1, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def total(w):
        arch = wn.Serial(wn.Conv(3), "relu", wn.Flatten(), wn.Dense(), weight_variance=w, bias_variance=0.1)
        return arch.nngp(x, block_size=2).sum()

    w = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    (gw,) = torch.autograd.grad(total(w), (w,))
    with torch.no_grad():
        h = 1e-5
        fd = (total(w + h) - total(w - h)) / (2 * h)
    assert gw.item() == pytest.approx(fd.item(), rel=1e-7)
    assert torch.get_num_threads() == 2  # restored after the worker-thread run


def test_one_side_with_autograd():
    """x2 requiring grad (x1 not): that side has no precomputed factors, the kernel carries
    autograd, and its gradient matches a central difference."""
    arch = ARCHS["flatten"]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    y = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = arch.nngp(x, y)
    (gy,) = torch.autograd.grad(k.sum(), (y,))
    with torch.no_grad():
        torch.testing.assert_close(k, arch.nngp(x, y.detach()), rtol=1e-14, atol=0)
        e = torch.zeros_like(y)
        e[1, 0, 2, 3] = 1e-6
        fd = (arch.nngp(x, y + e).sum() - arch.nngp(x, y - e).sum()) / 2e-6
    assert gy[1, 0, 2, 3].item() == pytest.approx(fd.item(), rel=1e-6)
