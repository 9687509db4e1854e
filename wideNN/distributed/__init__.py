"""Kernels and GP inference beyond one device, on ``torch.distributed``.

The same calls run in one process, under ``torchrun --nproc-per-node=K`` (gloo on CPUs, NCCL on
GPUs, one device per rank) or in processes started with ``wideNN.distributed.spawn``:

* ``kernel(kern, x1, x2=None, store=DIR)`` — the kernel matrix as checksummed ``.npy`` tiles
  plus a JSON manifest (``TiledStore``), split over the ranks, resumable (a restart recomputes
  only missing or corrupt tiles), upper triangle only for a training kernel;
* ``solve(store, y, ...)`` — α = (K + σ²I)⁻¹ Y by in-place Cholesky when K fits in one process,
  otherwise by preconditioned conjugate gradients on row blocks (pivoted Cholesky + diagonal);
* ``predict(kern, x_test, x_train, alpha)`` — K(x_test, X) α streamed tile by tile;
* ``posterior(...)`` — the three in a row; with ``variance=True`` also the posterior variances
  (NNGP, or NTK-GP at t → ∞) from the same factor or the same PCG, block by block of test
  points (``posterior_mean`` is the mean alone).

Modules: ``group`` (ranks, collectives, spawn, progress), ``plan`` (tiles), ``fingerprint``,
``store``, ``job``, ``rows`` (a rank's rows of a stored kernel), ``preconditioner``, ``pcg``,
``systems`` (the training system for many solves), ``solve``, ``predict``, ``variance``,
``posterior``.
"""
from .group import Group, current_group, spawn
from .job import KernelResult, kernel
from .pcg import PCGInfo, pcg
from .plan import TilePlan
from .posterior import DistributedPosterior, posterior, posterior_mean
from .predict import predict
from .preconditioner import LowRankPlusDiagonal, pivoted_cholesky
from .solve import Solution, SolveOptions, solve
from .store import CorruptTileError, StoreMismatchError, TiledStore
from .variance import VarianceOptions, VarianceReport

__all__ = [
    "Group", "current_group", "spawn", "KernelResult", "kernel", "PCGInfo", "pcg", "TilePlan",
    "DistributedPosterior", "posterior", "posterior_mean", "predict", "LowRankPlusDiagonal",
    "pivoted_cholesky", "Solution", "SolveOptions", "solve", "CorruptTileError",
    "StoreMismatchError", "TiledStore", "VarianceOptions", "VarianceReport",
]
