"""Posterior variances, streamed over blocks of test points, for both solve methods.

For a block x of b test points, B_M = M(X, x) (N×b) is the train×test kernel of the trained
kernel (K for ``component="nngp"``, Θ for ``"ntk"``) and B_K = K(X, x); with
M = (trained kernel) + σ²I, the conventions of ``wideNN.posterior`` at t = ∞ are

* NNGP (Bayesian posterior):  Σ = K_xx − B_Kᵀ (K + σ²I)⁻¹ B_K;
* NTK-GP (Lee et al. 2019, eqs. 15–16, t → ∞), z = (Θ + σ²I)⁻¹ B_Θ:
  Σ = K_xx − B_Kᵀ z − zᵀ B_K + zᵀ C z,  C = K + σ²I (``noise_convention="both"``) or K (``"ntk"``).

"variance" is diag Σ (the latent function; add the test noise σ² for a noisy target), K_xx's
diagonal comes from the kernel's diag=True path (a plain function f(x1, x2): the diagonal of
f(x, None) on blocks of 512 points).  Per block, the ranks share B's column tiles
(computed, or read from a test×train store) and one all-reduce of N×b gives every rank all of
B; the block's mean B_Mᵀα comes from the same tiles.  Then

* Cholesky (rank 0 holds L, M = L Lᵀ): NNGP Σ = K_xx − VᵀV with V = L⁻¹B_K (a triangular
  solve, a sum of squares: b·N² flops on rank 0); NTK z = L⁻ᵀL⁻¹B_Θ, broadcast;
* PCG (rows of K on the ranks): z = M⁻¹B_M by PCG on all b columns at once (the preconditioner
  built for α is reused), each iteration one local (N/W × N)·(N × b) product and one all-reduce
  of N×b; NNGP Σ = K_xx − B_Kᵀz.  Cost: about the α solve's iteration count per block, with b
  columns instead of O, i.e. ~N_test/O times the work of the mean.  An error ε per column in
  relative residual moves an NNGP variance by at most ε‖k*‖²/σ².

The NTK's zᵀCz is Σ_r z[r-rows]ᵀ (C[r-rows] z): each rank keeps its rows of K (N²/W), and a
b-vector (b×b for the covariance) is all-reduced.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int
from .._kernel_sources import as_source
from .group import Group, progress
from .job import evaluate_tile
from .plan import TilePlan
from .rows import RowBlock
from .store import TiledStore

__all__ = ["VarianceOptions", "VarianceReport", "as_variance_options", "stream_posterior", "StreamSetup"]

NOISE_CONVENTIONS = ("both", "ntk")


@dataclasses.dataclass(frozen=True)
class VarianceOptions:
    """What ``wideNN.distributed.posterior(..., variance=...)`` computes besides the mean.

    ``full_covariance``: the (N_test, N_test) covariance (all test points then form one block:
    N×N_test floats per rank, ~6× that for PCG); ``noise_convention``: where σ² enters the NTK-GP
    covariance ("both": C = K + σ²I, "ntk": C = K), as in ``wideNN.posterior``;
    ``test_block_size``: test points per block (default: ~2²⁴ floats per N×b buffer, a quarter
    of that for PCG, whose solve keeps about six of them)."""

    full_covariance: bool = False
    noise_convention: str = "both"
    test_block_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.full_covariance, bool):
            raise TypeError(f"full_covariance must be a bool, got {self.full_covariance!r}")
        if self.noise_convention not in NOISE_CONVENTIONS:
            raise ValueError(f"noise_convention must be one of {NOISE_CONVENTIONS}, got {self.noise_convention!r}")
        if self.test_block_size is not None:
            check_int("test_block_size", self.test_block_size)


@dataclasses.dataclass
class VarianceReport:
    """How the variances were found: ``method``, test ``blocks`` of ``block_size`` points, PCG
    ``iterations`` per block (empty for Cholesky), the largest final relative ``residual`` over
    all blocks' columns against ``tol`` (PCG), ``converged``, and this rank's ``seconds``."""

    method: str
    blocks: int
    block_size: int
    iterations: list[int]
    residual: float | None
    converged: bool
    tol: float | None
    seconds: float


def as_variance_options(variance: Any) -> VarianceOptions | None:
    """None for ``False``; defaults for ``True``; a ``VarianceOptions`` as it is."""
    if isinstance(variance, VarianceOptions):
        return variance
    if not isinstance(variance, bool):
        raise TypeError(f"variance must be a bool or a VarianceOptions, got {type(variance).__name__}")
    return VarianceOptions() if variance else None


@dataclasses.dataclass
class StreamSetup:
    """Everything the block loop needs: the kernel, inputs and tiling, the trained ``component``,
    the rows of K (NTK only) with ``prior_shift`` = σ² when C = K + σ²I (else 0), and an
    optional test×train store to read tiles from."""

    group: Group
    kern: Any
    x_test: Tensor
    x_train: Tensor
    component: str
    tile_size: int
    dtype: torch.dtype
    prior: RowBlock | None = None
    prior_shift: float = 0.0
    test_store: TiledStore | None = None

    @property
    def components(self) -> tuple[str, ...]:
        return (self.component,) if self.component == "nngp" else ("nngp", "ntk")


def _block_size(setup: StreamSetup, opts: VarianceOptions, pcg: bool) -> int:
    n_test, n = setup.x_test.shape[0], setup.x_train.shape[0]
    if opts.full_covariance:
        return n_test
    if opts.test_block_size is not None:
        return min(n_test, opts.test_block_size)
    budget = 2 ** (27 if setup.group.device.type == "cuda" else 24) // (4 if pcg else 1)
    return max(1, min(n_test, budget // n))


def _cross(setup: StreamSetup, a: int, b: int, first: int) -> dict[str, Tensor]:
    """B_c = c(X, x_test[a:b]) (N, b) float64 on every rank for each needed component; the
    column tiles are shared round-robin, continuing from tile number ``first``."""
    g, n = setup.group, setup.x_train.shape[0]
    plan = TilePlan(setup.x_test.shape[0], n, setup.tile_size, symmetric=False)
    comps = setup.components
    out = {c: torch.zeros(n, b - a, dtype=torch.float64, device=g.device) for c in comps}
    err = None
    try:
        for j in range(plan.col_blocks):
            if (first + j) % g.world_size != g.rank:
                continue
            cols = plan.cols(j)
            for c, piece in _piece(setup, plan, a, b, j).items():
                out[c][cols] = piece.to(device=g.device, dtype=torch.float64).T
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        err = e
    g.agree(err)
    return {c: g.all_reduce_(t) for c, t in out.items()}


def _piece(setup: StreamSetup, plan: TilePlan, a: int, b: int, j: int) -> dict[str, Tensor]:
    """Rows a:b of tile-column j: read from the test store's tiles, or computed."""
    comps = setup.components
    if setup.test_store is None:
        xa = setup.x_test[a:b].to(device=setup.group.device, dtype=setup.dtype)
        xb = setup.x_train[plan.cols(j)].to(device=setup.group.device, dtype=setup.dtype)
        with torch.no_grad():
            return evaluate_tile(setup.kern, xa, xb, comps)
    t = plan.tile_size
    rows = range(a // t, (b - 1) // t + 1)
    return {c: torch.cat([setup.test_store.read_tile(c, i, j) for i in rows])[a - rows[0] * t:b - rows[0] * t]
            for c in comps}


def _test_prior(setup: StreamSetup, a: int, b: int, full: bool, owner: int) -> Tensor:
    """K(x, x) of the block: its diagonal (diag=True path) or, with ``full``, the b×b matrix;
    computed by rank ``owner``, all-reduced."""
    g = setup.group
    out = torch.zeros((b - a, b - a) if full else (b - a,), dtype=torch.float64, device=g.device)
    err = None
    if g.rank == owner:
        try:
            src = as_source(setup.kern, setup.component)
            x = setup.x_test[a:b].to(device=g.device, dtype=setup.dtype)
            with torch.no_grad():
                k = src.pair(x, None, True, False)[0] if full else src.nngp_diag(x)
            out.copy_(k.to(torch.float64))
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            err = e
    g.agree(err)
    return g.all_reduce_(out)


def stream_posterior(setup: StreamSetup, system: Any, alpha: Tensor, opts: VarianceOptions
                     ) -> tuple[Tensor, Tensor, Tensor | None, VarianceReport]:
    """(mean (N_test, O), variance (N_test,), covariance or None, report) on every rank."""
    t0 = time.perf_counter()
    pcg = system.method == "pcg"
    full = opts.full_covariance
    n_test = setup.x_test.shape[0]
    bs = _block_size(setup, opts, pcg)
    n_cols = -(-setup.x_train.shape[0] // setup.tile_size)
    means, variances, cov, infos = [], [], None, []
    with progress(-(-n_test // bs), "variance blocks", setup.group) as bar:
        for blk, a in enumerate(range(0, n_test, bs)):
            b = min(a + bs, n_test)
            cross = _cross(setup, a, b, blk * n_cols)
            bm = cross[setup.component]
            means.append(bm.T @ alpha)
            kxx = _test_prior(setup, a, b, full, blk % setup.group.world_size)
            sigma, info = _block_covariance(setup, system, cross, full)
            infos.append(info)
            if full:
                cov = kxx - sigma
            else:
                variances.append(kxx - sigma)
            bar.update()
    var = cov.diagonal().clone() if full else torch.cat(variances)
    report = VarianceReport(
        method=system.method, blocks=len(infos), block_size=bs,
        iterations=[i.iterations for i in infos] if pcg else [],
        residual=max(i.residual for i in infos) if pcg else None,
        converged=all(i.converged for i in infos) if pcg else True,
        tol=system.opts.tol if pcg else None, seconds=time.perf_counter() - t0)
    return torch.cat(means), var, cov, report


def _block_covariance(setup: StreamSetup, system: Any, cross: dict[str, Tensor], full: bool):
    """What the block's prior covariance loses: B_Kᵀ M⁻¹ B_K (NNGP) or
    B_Kᵀz + zᵀB_K − zᵀCz (NTK); its diagonal (b,), or (b, b) with ``full``; and the PCG info."""
    bk = cross["nngp"]
    if setup.component == "nngp" and system.method == "cholesky":
        return system.whitened_gram(bk, full), None
    z, info = system.solve(cross[setup.component])
    if setup.component == "nngp":
        if full:
            q = bk.T @ z
            return 0.5 * (q + q.T), info
        return (bk * z).sum(0), info
    quad = setup.prior.quadratic(z, setup.prior_shift, full)
    if full:
        c = bk.T @ z
        return c + c.T - quad, info
    return 2 * (bk * z).sum(0) - quad, info
