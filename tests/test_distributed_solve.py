"""Distributed solve (wideNN.distributed.solve): preconditioned CG against the Cholesky solution
on an MNIST NNGP, the preconditioner's effect, float32 storage, and the pieces on their own."""
import sys
from pathlib import Path

import pytest
import torch

import wideNN as wn
from wideNN import distributed as wd
from wideNN.data import accuracy

sys.path.insert(0, str(Path(__file__).parent))
from _data import DATA  # noqa: E402  ($WIDENN_DATA or ../shared/data next to the checkout)

MNIST = next((p for p in (DATA / "mnist", Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist")
              if p.is_dir()), DATA / "mnist")


def _data(n_train: int, n_test: int):
    """MNIST (Lee et al. subset) when the data folder is there, else the bundled 8×8 digits."""
    if MNIST.is_dir():
        s = wn.data.load_mnist(MNIST, n_train=n_train, n_test=n_test)
        return s.x_train, s.y_train, s.x_test, s.labels_test
    x, labels = wn.data.load_digits()
    y = wn.data.one_hot(labels, 10, dtype=torch.float64)
    n_train = min(n_train, 1200)
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], labels[n_train:n_train + n_test]


ARCH = wn.Architecture(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.01)
NOISE = 1e-3


def _pcg_vs_cholesky(tmp_path, n_train, n_test, tile):
    x, y, xt, lab = _data(n_train, n_test)
    job = wd.kernel(ARCH, x, store=tmp_path / "k", components=("nngp",), tile_size=tile)
    chol = wd.solve(job.store, y, noise_variance=NOISE, method="cholesky")
    pcg = wd.solve(job.store, y, noise_variance=NOISE, method="pcg",
                   options=wd.SolveOptions(tol=1e-10, rank=100))
    plain = wd.solve(job.store, y, noise_variance=NOISE, method="pcg",
                     options=wd.SolveOptions(tol=1e-10, preconditioner=None))
    preds = [wd.predict(ARCH, xt, x, s.alpha, tile_size=tile) for s in (chol, pcg)]
    return chol, pcg, plain, preds, lab


def test_pcg_reaches_cholesky_on_mnist_nngp(tmp_path):
    chol, pcg, plain, (p_chol, p_pcg), lab = _pcg_vs_cholesky(tmp_path, 1000, 500, 250)
    assert pcg.method == "pcg" and pcg.converged and pcg.residual < 1e-9
    assert float((pcg.alpha - chol.alpha).norm() / chol.alpha.norm()) < 1e-8
    assert float((p_pcg - p_chol).norm() / p_chol.norm()) < 1e-8
    assert accuracy(p_pcg, lab) == accuracy(p_chol, lab) > 0.8
    assert pcg.iterations == len(pcg.history) and pcg.preconditioner_rank == 100 and pcg.tol == 1e-10
    assert plain.converged and plain.iterations > 1.5 * pcg.iterations   # measured: 295 vs 140


@pytest.mark.slow
def test_pcg_reaches_cholesky_on_mnist_5k(tmp_path):
    chol, pcg, plain, (p_chol, p_pcg), lab = _pcg_vs_cholesky(tmp_path, 5000, 1000, 1000)
    assert float((pcg.alpha - chol.alpha).norm() / chol.alpha.norm()) < 1e-8
    assert accuracy(p_pcg, lab) == accuracy(p_chol, lab)
    assert plain.iterations > 1.5 * pcg.iterations


def test_float32_storage_costs_accuracy_but_converges(tmp_path):
    """Rows kept in float32 (products accumulated in float64) solve the float32-rounded
    matrix: α differs from the float64 solution by about κ·6e-8, far above float64 PCG's."""
    x, y, _, _ = _data(400, 10)
    job = wd.kernel(ARCH, x, store=tmp_path / "k", components=("nngp",), tile_size=100)
    chol = wd.solve(job.store, y, noise_variance=1e-2, method="cholesky")
    f64 = wd.solve(job.store, y, noise_variance=1e-2, method="pcg", options=wd.SolveOptions(tol=1e-10))
    f32 = wd.solve(job.store, y, noise_variance=1e-2, method="pcg",
                   options=wd.SolveOptions(tol=1e-10, storage_dtype=torch.float32))
    e64 = float((f64.alpha - chol.alpha).norm() / chol.alpha.norm())
    e32 = float((f32.alpha - chol.alpha).norm() / chol.alpha.norm())
    assert f32.converged and e64 < 1e-8 and 1e-8 < e32 < 1e-3


def test_auto_picks_cholesky_when_it_fits(tmp_path):
    x, y, _, _ = _data(100, 10)
    job = wd.kernel(ARCH, x, store=tmp_path / "k", components=("nngp",), tile_size=50)
    assert wd.solve(job.store, y, noise_variance=NOISE).method == "cholesky"
    assert wd.solve(job.store, y, noise_variance=NOISE, max_dense_bytes=8 * 99 * 99).method == "pcg"


def test_pivoted_cholesky_and_woodbury_against_dense():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(30, 6, generator=g, dtype=torch.float64)
    k = f @ f.T                                            # rank 6
    L, piv = wd.pivoted_cholesky(k.diagonal().clone(), lambda p: k[p], rank=10)
    assert L.shape == (30, 6) and len(set(piv)) == 6       # stops at the numerical rank
    assert float((L @ L.T - k).abs().max()) < 1e-12
    d = torch.rand(30, generator=g, dtype=torch.float64) + 0.5
    pre = wd.LowRankPlusDiagonal(L, d)
    r = torch.randn(30, 3, generator=g, dtype=torch.float64)
    dense = torch.linalg.solve(L @ L.T + torch.diag(d), r)
    assert float((pre.apply(r) - dense).abs().max() / dense.abs().max()) < 1e-12


def test_pcg_many_columns_against_direct_solve():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(0, 3, 60, dtype=torch.float64)) @ q.T
    b = torch.randn(60, 4, generator=g, dtype=torch.float64)
    b[:, 3] = 0                                            # a zero column converges at once
    x, info = wd.pcg(lambda p: a @ p, b, None, tol=1e-12, max_iterations=500)
    ref = torch.linalg.solve(a, b)
    # the classical bound ½·√κ·ln(2/δ) on the A-norm error δ; a residual ε needs δ = ε/√κ:
    # κ = 1e3, ε = 1e-12 → 503 iterations at most (measured: 136)
    assert info.converged and info.residual < 1e-11 and 10 < info.iterations <= 503
    assert float((x - ref).norm() / ref.norm()) < 1e-9 and bool((x[:, 3] == 0).all())
    _, capped = wd.pcg(lambda p: a @ p, b, None, tol=1e-12, max_iterations=3)
    assert not capped.converged and capped.iterations == 3


def test_solve_argument_errors(tmp_path):
    x, y, xt, _ = _data(40, 8)
    job = wd.kernel(ARCH, x, store=tmp_path / "k", components=("nngp",), tile_size=20)
    rect = wd.kernel(ARCH, xt, x, store=tmp_path / "r", components=("nngp",), tile_size=20)
    with pytest.raises(ValueError, match="rectangular"):
        wd.solve(rect.store, y)
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, O\) with N = 40"):
        wd.solve(job.store, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        wd.solve(job.store, y * float("nan"))
    with pytest.raises(ValueError, match="component 'ntk'"):
        wd.solve(job.store, y, component="ntk")
    with pytest.raises(ValueError, match="method"):
        wd.solve(job.store, y, method="lu")
    with pytest.raises(ValueError, match="noise_variance"):
        wd.solve(job.store, y, noise_variance=-1.0)
    with pytest.raises(ValueError, match="preconditioner"):
        wd.SolveOptions(preconditioner="ilu")
    with pytest.raises(ValueError, match="alpha must have shape"):
        wd.predict(ARCH, xt, x, torch.zeros(39, 10, dtype=torch.float64))
    # an incomplete store (a tile record removed by hand) is refused until the job finishes it
    (tmp_path / "k" / "tiles" / "0_1.json").unlink()
    st = wd.TiledStore.open(tmp_path / "k")
    st.manifest["complete"] = False
    with pytest.raises(ValueError, match="incomplete"):
        wd.solve(st, y)
