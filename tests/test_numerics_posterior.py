"""Finite-time posteriors at the edge of singularity, and posterior argument checks.

A training input repeated with a different target and zero noise makes the training kernel
singular; rounding then leaves eigenvalues of ~1e-16·λ_max whose eigenvectors are noise.  At
large finite t those directions must be treated as at t = ∞ (not fitted), or the mean is
noise × t.  Reference: the t = ∞ posterior (pseudo-inverse), and continuity in t.
"""
from __future__ import annotations

import math

import pytest
import torch

import wideNN as wn

F64 = torch.float64


def _duplicated(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=g, dtype=F64)
    x = torch.cat([x, x[:2]])                       # two inputs repeated ...
    y = torch.randn(10, 1, generator=g, dtype=F64)  # ... with different targets
    return x, y, torch.randn(5, 3, generator=g, dtype=F64)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_large_finite_times_converge_to_the_infinite_time_posterior(kernel, activation):
    x, y, xt = _duplicated()
    arch = wn.Architecture(depth=2, activation=activation, weight_variance=2.0, bias_variance=0.1)
    limit = wn.posterior(arch, x, y, xt, kernel=kernel, t=math.inf)
    scale = float(limit.mean.abs().max())
    means = []
    for t in (1e10, 1e14, 1e17, 1e20):
        post = wn.posterior(arch, x, y, xt, kernel=kernel, t=t)
        assert bool(torch.isfinite(post.mean).all()) and bool(torch.isfinite(post.variance).all())
        means.append(post.mean)
        # before: 4 % (t = 1e14) to 4e4× (t = 1e20) away; now equal up to the regularisation
        # difference between the finite-t (eigen) and t = ∞ paths
        assert float((post.mean - limit.mean).abs().max()) <= 1e-5 * scale
    # beyond convergence nothing moves at all: the same rule applies at every t
    for m in means[1:]:
        torch.testing.assert_close(m, means[0], rtol=1e-12, atol=1e-12 * scale)


def test_flow_weights_are_continuous_in_time_on_rounding_level_eigenvalues():
    lam = torch.tensor([1e-18, 1e-3, 1.0], dtype=F64)
    f = wn.linalg.flow_weights(lam, torch.tensor([[1e3], [1e16], [1e20], [math.inf]], dtype=F64))
    assert torch.all(f[:, 0] == 0)  # below N·eps·max λ at every s
    torch.testing.assert_close(f[1:, 1:], (1 / lam[1:]).expand(3, 2))


# ---------------------------------------------------------------- argument checks (posterior)
# Owned by the predictor (wideNN/prediction.py); kept here as expectations until it adopts them.
@pytest.mark.parametrize("kwargs", [dict(t=True), dict(t="1.0"), dict(learning_rate=True)],
                         ids=["t=True", "t=str", "learning_rate=True"])
def test_posterior_rejects_bool_and_str_numbers(kwargs):
    x, y, xt = _duplicated()
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        wn.posterior(wn.Architecture(depth=1), x, y, xt, kernel="ntk", **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_posterior_rejects_half_precision(dtype):
    x, y, xt = _duplicated()
    name = str(dtype).split(".")[-1]
    with pytest.raises(TypeError, match=name):
        wn.posterior(wn.Architecture(depth=1), x.to(dtype), y.to(dtype), xt.to(dtype))
    with pytest.raises(TypeError, match=f"x_train.*{name}|{name}.*x_train"):
        wn.posterior(wn.Architecture(depth=1), x.to(dtype), y, xt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_cpu_eigendecomposition_through_mrrr_matches_torch(dtype):
    """From ``SCIPY_EIGH_MIN`` on, ``eigh_psd`` uses LAPACK's MRRR driver (faster on CPU): the
    same spectrum as torch's, a residual and orthogonality at round-off, clipping unchanged."""
    from wideNN import linalg
    n = linalg.SCIPY_EIGH_MIN + 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 40, dtype=torch.float64, generator=g)
    a = (x @ x.T / 40).to(dtype)  # rank 40: n − 40 eigenvalues at round-off, clipped to 0
    lam, vec = linalg.eigh_psd(a)
    ref = torch.linalg.eigvalsh(a.double())
    eps = torch.finfo(dtype).eps
    assert lam.dtype == dtype and vec.shape == (n, n) and bool((lam >= 0).all())
    torch.testing.assert_close(lam.double(), ref.clamp_min(0), rtol=0, atol=float(100 * n * eps * ref.max()))
    res = (vec * lam) @ vec.T - a
    assert float(res.abs().max() / a.abs().max()) < 10 * n * eps
    assert float((vec.T @ vec - torch.eye(n, dtype=dtype)).abs().max()) < 10 * n * eps
