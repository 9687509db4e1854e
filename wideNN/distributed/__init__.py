"""Kernels and GP inference beyond one device, on ``torch.distributed``.

The same calls run in one process, under ``torchrun --nproc-per-node=K`` (gloo on CPUs, NCCL on
GPUs, one device per rank) or in processes started with ``wideNN.distributed.spawn``:

* ``kernel(kern, x1, x2=None, store=DIR)`` — the kernel matrix as checksummed ``.npy`` tiles
  plus a JSON manifest (``TiledStore``), split over the ranks, resumable (a restart recomputes
  only missing or corrupt tiles), upper triangle only for a training kernel;
* ``solve(store, y, ...)`` — α = (K + σ²I)⁻¹ Y by in-place Cholesky when K fits in one process,
  otherwise by preconditioned conjugate gradients on row blocks (pivoted Cholesky + diagonal);
* ``predict(kern, x_test, x_train, alpha)`` — K(x_test, X) α streamed tile by tile;
* ``posterior_mean(...)`` — the three in a row.

Modules: ``group`` (ranks, collectives, spawn, progress), ``plan`` (tiles), ``fingerprint``,
``store``, ``job``, ``preconditioner``, ``pcg``, ``solve``, ``predict``, ``posterior``.
"""
from .group import Group, current_group, spawn
from .job import KernelResult, kernel
from .pcg import PCGInfo, pcg
from .plan import TilePlan
from .posterior import DistributedPosterior, posterior_mean
from .predict import predict
from .preconditioner import LowRankPlusDiagonal, pivoted_cholesky
from .solve import Solution, SolveOptions, solve
from .store import CorruptTileError, StoreMismatchError, TiledStore

__all__ = [
    "Group", "current_group", "spawn", "KernelResult", "kernel", "PCGInfo", "pcg", "TilePlan",
    "DistributedPosterior", "posterior_mean", "predict", "LowRankPlusDiagonal", "pivoted_cholesky",
    "Solution", "SolveOptions", "solve", "CorruptTileError", "StoreMismatchError", "TiledStore",
]
