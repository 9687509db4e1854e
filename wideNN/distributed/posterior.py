"""``posterior``: kernel job → solve → streamed prediction, the whole distributed GP posterior.

μ = K(x_test, X) (K(X, X) + σ²I)⁻¹ Y for ``component="nngp"`` (the NNGP posterior mean) and
Θ(x_test, X) (Θ + σ²I)⁻¹ Y for ``"ntk"`` (the NTK-GP mean at t → ∞), as
``wideNN.posterior(..., t=None).mean``; with ``variance=True`` also the variances (and with
``VarianceOptions(full_covariance=True)`` the covariance) of ``wideNN.posterior(..., t=None)``:
the NNGP posterior's, or the NTK-GP's at t → ∞ (formulas and costs in
``wideNN.distributed.variance``).  Finite training times (an eigendecomposition of the whole
training kernel) are not offered here: use ``wideNN.Predictor`` where the kernel fits one device.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._posterior import Posterior
from .fingerprint import tensor_digest
from .job import KernelResult, check_kernel_inputs, kernel as kernel_job
from .predict import predict
from .rows import RowBlock
from .solve import Solution, SolveOptions, prepare, solve_system
from .variance import StreamSetup, VarianceOptions, VarianceReport, as_variance_options, stream_posterior

__all__ = ["posterior", "posterior_mean", "DistributedPosterior"]


@dataclasses.dataclass
class DistributedPosterior:
    """mean (N_test, O) [(N_test,) for 1-D targets]; solution (α, method, iterations, residual);
    the kernel job's record; with ``variance=True`` also variance (N_test,), covariance
    (N_test, N_test) when asked for, and ``variance_report`` (blocks, PCG iterations)."""

    mean: Tensor
    solution: Solution
    train_kernel: KernelResult
    variance: Tensor | None = None
    covariance: Tensor | None = None
    variance_report: VarianceReport | None = None
    component: str = "nngp"
    noise_variance: float = 0.0

    def as_posterior(self) -> Posterior:
        """The same numbers as a ``wideNN.Posterior`` (t = ∞), for its ``log_likelihood``, ``std``
        and ``sample``."""
        return Posterior(mean=self.mean, variance=self.variance, covariance=self.covariance,
                         kernel=self.component, t=None, learning_rate=math.nan,
                         noise_variance=self.noise_variance, jitter=self.solution.jitter)


def posterior(kern: Any, x_train: Tensor, y_train: Tensor, x_test: Tensor, *,
              store: str | os.PathLike, component: str = "nngp", noise_variance: float = 0.0,
              method: str = "auto", options: SolveOptions = SolveOptions(),
              variance: bool | VarianceOptions = False, tile_size: int | None = None,
              dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
              description: str | None = None, keep_test_tiles: bool = False) -> DistributedPosterior:
    """The GP posterior at t → ∞ over the ranks of the current group, as ``wideNN.posterior``.
    Call on every rank with the same arguments; every rank gets the result.

    With M the trained kernel (K for ``component="nngp"``, Θ for ``"ntk"``) and σ² =
    ``noise_variance``:  μ(x) = M(x, X) (M + σ²I)⁻¹ Y;  with ``variance``,
    NNGP:  v(x) = K(x, x) − K(x, X) (K + σ²I)⁻¹ K(X, x);
    NTK-GP:  v(x) = K(x, x) − 2 K(x, X) z + zᵀ C z,  z = (Θ + σ²I)⁻¹ Θ(X, x),
    C = K + σ²I (``noise_convention="both"``) or K (``"ntk"``); the covariance likewise with
    x, x' in place of x, x.  Cholesky: exact (float64, like the single process); PCG: each
    (M + σ²I)⁻¹ column to relative residual ``options.tol``, which bounds an NNGP variance's
    error by tol·‖K(X, x)‖²/σ².

    The training kernel goes to ``store`` (resumable); test×train tiles are streamed, or kept in
    ``store/test`` with ``keep_test_tiles=True``.  ``variance``: False (mean only, the default:
    for huge N the variance's many right-hand sides cost ~N_test/O times the mean's solve under
    PCG), True, or a ``VarianceOptions``.  The NTK-GP variance also needs the NNGP, so the
    training store then holds both components (a store written for the NTK mean alone is
    refused as a different config: use another folder).  Other arguments as in ``kernel``,
    ``solve`` and ``predict``.

    Raises ValueError for an NTK-GP variance with a kernel function that returns one matrix
    (it needs (nngp, ntk); ask for the mean only, or use component="nngp").
    """
    vopts = as_variance_options(variance)
    if component not in ("nngp", "ntk"):
        raise ValueError(f"component must be 'nngp' or 'ntk', got {component!r}")
    comps = ("nngp", "ntk") if vopts is not None and component == "ntk" else (component,)
    check_kernel_inputs(kern, x_test, x_train, comps)        # before any work
    if len(comps) == 2:
        _check_gives_both(kern, x_train)
    job = kernel_job(kern, x_train, store=store, components=comps, tile_size=tile_size,
                     dtype=dtype, device=device, description=description)
    t0 = time.perf_counter()
    group, st, yy, system = prepare(job.store, y_train, component, noise_variance, method, options,
                                    device, None)
    sol = solve_system(system, yy)
    sol.seconds = time.perf_counter() - t0
    test_store = Path(store) / "test" if keep_test_tiles else None
    if vopts is None:
        del system                                            # frees a Cholesky factor first
        mean = predict(kern, x_test, x_train, sol.alpha, component=component, store=test_store,
                       tile_size=tile_size, dtype=dtype, device=device, description=description)
        return _result(mean, sol, job, y_train, component, noise_variance)
    group.same_on_all_ranks("posterior variance arguments", (tensor_digest(x_test), repr(vopts)))
    ts = job.store.plan.tile_size
    prior = None
    if component == "ntk":
        rows_dtype = options.storage_dtype if system.method == "pcg" else torch.float64
        prior = RowBlock.load(group, st, "nngp", rows_dtype)
    setup = StreamSetup(group, kern, x_test, x_train, component, ts, dtype, prior=prior,
                        prior_shift=float(noise_variance) if vopts.noise_convention == "both" else 0.0)
    if test_store is not None:
        setup.test_store = kernel_job(kern, x_test, x_train, store=test_store, components=comps,
                                      tile_size=ts, dtype=dtype, device=device,
                                      description=description).store
    mean, var, cov, report = stream_posterior(setup, system, sol.alpha, vopts)
    return _result(mean, sol, job, y_train, component, noise_variance, var, cov, report)


def _result(mean, sol, job, y_train, component, noise, var=None, cov=None, report=None):
    if y_train.dim() == 1:
        mean = mean.squeeze(1)
    return DistributedPosterior(mean=mean, solution=sol, train_kernel=job, variance=var, covariance=cov,
                                variance_report=report, component=component, noise_variance=float(noise))


def _check_gives_both(kern: Any, x_train: Tensor) -> None:
    """ValueError unless ``kern`` gives (nngp, ntk): a function is probed on one example."""
    if hasattr(kern, "kernels") or not callable(kern) or not isinstance(x_train, Tensor):
        return
    with torch.no_grad():
        out = kern(x_train[:1], None)
    if isinstance(out, Tensor):
        raise ValueError("the NTK-GP variance needs the NNGP as well as the NTK, but the kernel "
                         "function returns one matrix: pass a function returning (nngp, ntk), or "
                         "variance=False for the NTK mean alone (or component='nngp' for the "
                         "NNGP posterior with its variance)")


def posterior_mean(kern: Any, x_train: Tensor, y_train: Tensor, x_test: Tensor, *,
                   store: str | os.PathLike, component: str = "nngp", noise_variance: float = 0.0,
                   method: str = "auto", options: SolveOptions = SolveOptions(),
                   tile_size: int | None = None, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None, description: str | None = None,
                   keep_test_tiles: bool = False) -> DistributedPosterior:
    """``posterior(..., variance=False)``: the mean alone (module docstring)."""
    return posterior(kern, x_train, y_train, x_test, store=store, component=component,
                     noise_variance=noise_variance, method=method, options=options, variance=False,
                     tile_size=tile_size, dtype=dtype, device=device, description=description,
                     keep_test_tiles=keep_test_tiles)
