"""Distributed posterior variances in one process: the PCG error bound with a loose tolerance,
the ``wn.Posterior`` view, and argument errors.  (The multi-rank equality with the
single-process posterior is in tests/test_distributed.py, in its one spawned run.)"""
import sys
from pathlib import Path

import pytest
import torch

import wideNN as wn
from wideNN import distributed as wd

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_workers as workers  # noqa: E402
from test_distributed import _pcg_variance_bound  # noqa: E402

NOISE = 0.01


def test_pcg_variance_error_is_within_its_residual_bound(tmp_path):
    """With a loose tolerance (1e-5) the variance error is visible, and still below the
    per-point bound ρ‖k*‖‖(K + σ²I)⁻¹k*‖ (NNGP) that the reported residual ρ implies; a
    tighter tolerance takes more iterations per block and lands much closer."""
    x, y, xt = workers.problem()
    xf, xtf = x.flatten(1), xt.flatten(1)
    ref = wn.posterior(workers.arch(), xf, y, xtf, kernel="nngp", noise_variance=NOISE)
    runs = {}
    for tol in (1e-5, 1e-10):
        runs[tol] = wd.posterior(workers.arch(), xf, y, xtf, store=tmp_path / "k", noise_variance=NOISE,
                                 method="pcg", tile_size=8, variance=wd.VarianceOptions(test_block_size=6),
                                 options=wd.SolveOptions(tol=tol, rank=2))
    loose = runs[1e-5]
    rep = loose.variance_report
    assert rep.tol == 1e-5 and rep.converged and rep.blocks == 2 and rep.block_size == 6
    assert rep.residual <= 2e-5                      # stopping uses the recursion's residual
    err = (loose.variance - ref.variance).abs()
    bound = _pcg_variance_bound("nngp", xf, xtf, rep.residual, NOISE)
    assert bool((err <= bound).all()) and float(err.max()) > 1e-12     # visible, yet bounded
    tight = runs[1e-10].variance_report
    assert all(t > lo for t, lo in zip(tight.iterations, rep.iterations))
    assert float((runs[1e-10].variance - ref.variance).abs().max()) < 1e-2 * float(err.max())


def test_as_posterior_and_mean_only(tmp_path):
    """``as_posterior()`` scores like the single-process ``Posterior``; without ``variance``
    there is none (the default: variances are opt-in) and the NTK store holds Θ alone."""
    x, y, xt = workers.problem()
    xf, xtf = x.flatten(1), xt.flatten(1)
    y1, yt = y[:, 0], torch.linspace(-1, 1, xt.shape[0], dtype=torch.float64)
    p = wd.posterior(workers.arch(), xf, y1, xtf, store=tmp_path / "k", noise_variance=NOISE,
                     component="ntk", variance=True, tile_size=8)
    ref = wn.posterior(workers.arch(), xf, y1, xtf, kernel="ntk", noise_variance=NOISE)
    assert p.mean.shape == ref.mean.shape == (11,) and p.solution.method == "cholesky"
    assert torch.allclose(p.as_posterior().log_likelihood(yt, NOISE), ref.log_likelihood(yt, NOISE),
                          rtol=1e-12, atol=0)
    assert wd.TiledStore.open(tmp_path / "k").components == ("nngp", "ntk")
    mean_only = wd.posterior(workers.arch(), xf, y1, xtf, store=tmp_path / "m", component="ntk",
                             noise_variance=NOISE, tile_size=8)
    assert mean_only.variance is None and mean_only.variance_report is None
    assert wd.TiledStore.open(tmp_path / "m").components == ("ntk",)
    with pytest.raises(ValueError, match="compute_variance=True"):
        mean_only.as_posterior().log_likelihood(yt)


def _ntk_only(x1, x2=None):
    """A kernel function giving one matrix (the NTK of the flattened images)."""
    return workers.arch().ntk(x1.flatten(1), None if x2 is None else x2.flatten(1))


def test_variance_argument_errors(tmp_path):
    x, y, xt = workers.problem()
    kw = dict(store=tmp_path / "k", noise_variance=NOISE, tile_size=8)
    with pytest.raises(ValueError, match="NTK-GP variance needs the NNGP as well .* variance=False"):
        wd.posterior(_ntk_only, x, y, xt, component="ntk", variance=True, **kw)
    assert not (tmp_path / "k").exists()                   # refused before any tile is written
    with pytest.raises(TypeError, match="variance must be a bool or a VarianceOptions"):
        wd.posterior(workers.flat_kernels, x, y, xt, variance="diag", **kw)
    with pytest.raises(ValueError, match="component must be 'nngp' or 'ntk'"):
        wd.posterior(workers.flat_kernels, x, y, xt, component="cov", variance=True, **kw)
    with pytest.raises(ValueError, match="noise_convention"):
        wd.VarianceOptions(noise_convention="label")
    with pytest.raises(TypeError, match="full_covariance must be a bool"):
        wd.VarianceOptions(full_covariance=1)
    with pytest.raises((TypeError, ValueError), match="test_block_size"):
        wd.VarianceOptions(test_block_size=0)
    with pytest.raises(ValueError, match="x1 and x2 have different example shapes"):
        wd.posterior(workers.flat_kernels, x, y, xt[:, :1], variance=True, **kw)
    with pytest.raises(TypeError, match="options must be a SolveOptions"):
        wd.posterior(workers.flat_kernels, x, y, xt, options={"tol": 1e-8}, **kw)
    # the NTK mean alone works with a one-matrix kernel
    p = wd.posterior(_ntk_only, x, y, xt, component="ntk", store=tmp_path / "m", noise_variance=NOISE,
                     tile_size=8, description="flattened-image MLP NTK")
    assert p.variance is None and p.mean.shape == (11, 3)
