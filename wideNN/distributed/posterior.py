"""``posterior_mean``: kernel job → solve → streamed prediction, the whole distributed GP mean.

μ = K(x_test, X) (K(X, X) + σ²I)⁻¹ Y for ``component="nngp"`` (the NNGP posterior mean) and
Θ(x_test, X) (Θ + σ²I)⁻¹ Y for ``"ntk"`` (the NTK-GP mean at t → ∞), as
``wideNN.posterior(..., t=None).mean``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .job import KernelResult, kernel as kernel_job
from .predict import predict
from .solve import Solution, SolveOptions, solve

__all__ = ["posterior_mean", "DistributedPosterior"]


@dataclasses.dataclass
class DistributedPosterior:
    """mean (N_test, O); solution (α, method, iterations, residual); the kernel job's record."""

    mean: Tensor
    solution: Solution
    train_kernel: KernelResult


def posterior_mean(kern: Any, x_train: Tensor, y_train: Tensor, x_test: Tensor, *,
                   store: str | os.PathLike, component: str = "nngp", noise_variance: float = 0.0,
                   method: str = "auto", options: SolveOptions = SolveOptions(),
                   tile_size: int | None = None, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None, description: str | None = None,
                   keep_test_tiles: bool = False) -> DistributedPosterior:
    """The GP posterior mean over the ranks of the current group (module docstring).

    The training kernel goes to ``store`` (resumable); test×train tiles are streamed, or kept in
    ``store/test`` with ``keep_test_tiles=True``.  Arguments as in ``kernel``, ``solve`` and
    ``predict``.
    """
    job = kernel_job(kern, x_train, store=store, components=(component,), tile_size=tile_size,
                     dtype=dtype, device=device, description=description)
    sol = solve(job.store, y_train, component=component, noise_variance=noise_variance,
                method=method, options=options, device=device)
    mean = predict(kern, x_test, x_train, sol.alpha, component=component,
                   store=Path(store) / "test" if keep_test_tiles else None, tile_size=tile_size,
                   dtype=dtype, device=device, description=description)
    if y_train.dim() == 1:
        mean = mean.squeeze(1)
    return DistributedPosterior(mean=mean, solution=sol, train_kernel=job)
