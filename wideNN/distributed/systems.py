"""The training system M = K + σ²I of a tiled store, set up once for many solves.

* ``CholeskySystem``: rank 0 gathers K, factors M = L Lᵀ in place (escalating jitter,
  ``wideNN.linalg.cholesky``) and keeps L; a solve M⁻¹B runs on rank 0 and is broadcast.
* ``PCGSystem``: every rank keeps its rows of K (``RowBlock``) and the preconditioner (pivoted
  Cholesky + diagonal, built once); a solve is preconditioned CG on all columns of B at once.

``wideNN.distributed.solve`` uses one for α = M⁻¹Y; the posterior variance reuses the same
system for M⁻¹ K(X, x_test), block by block of test points.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._factors import cholesky_solve
from ..linalg import cholesky
from .group import Group
from .pcg import PCGInfo, pcg
from .preconditioner import DiagonalPreconditioner, LowRankPlusDiagonal
from .rows import RowBlock
from .store import TiledStore

__all__ = ["CholeskySystem", "PCGSystem", "build_system"]


class CholeskySystem:
    """M = L Lᵀ with L (N×N) on rank 0 only; ``jitter`` the relative jitter that was needed."""

    method = "cholesky"
    preconditioner_rank = 0

    def __init__(self, group: Group, st: TiledStore, component: str, noise: float, opts: Any):
        self.group, self.n, self.L = group, st.plan.n_rows, None
        err, jitter = None, 0.0
        if group.rank == 0:
            try:
                def build() -> Tensor:
                    k = st.dense(component).to(device=group.device, dtype=torch.float64)
                    k.diagonal().add_(noise)
                    return k
                self.L, jitter = cholesky(build, opts.jitters, overwrite=True,
                                          name=f"{component.upper()} training kernel")
            except (ValueError, RuntimeError, OSError) as e:
                err = e
        group.agree(err)
        self.jitter = group.broadcast_object(jitter, 0)

    def _on_root(self, fn, shape: tuple[int, ...]) -> Tensor:
        """fn(L) computed on rank 0 (float64 of ``shape``), broadcast to every rank."""
        out = torch.empty(shape, dtype=torch.float64, device=self.group.device)
        err = None
        if self.group.rank == 0:
            try:
                out = fn(self.L).contiguous()
            except RuntimeError as e:                   # e.g. out of memory: raise on every rank
                err = e
        self.group.agree(err)
        return self.group.broadcast_(out, 0)

    def solve(self, b: Tensor) -> tuple[Tensor, PCGInfo | None]:
        """M⁻¹ b (b: (N, k) float64, the same on every rank), on every rank."""
        return self._on_root(lambda L: cholesky_solve(b.to(L.device), L), tuple(b.shape)), None

    def whitened_gram(self, b: Tensor, full: bool = False) -> Tensor:
        """bᵀ M⁻¹ b as ‖L⁻¹b‖² per column (k,), or (L⁻¹b)ᵀ(L⁻¹b) (k, k) with ``full``: the
        single-process NNGP variance's triangular solve and sum of squares."""
        def fn(L: Tensor) -> Tensor:
            v = torch.linalg.solve_triangular(L, b.to(L.device), upper=False)
            return v.T @ v if full else (v * v).sum(0)
        k = b.shape[1]
        return self._on_root(fn, (k, k) if full else (k,))


class PCGSystem:
    """Rows of K on every rank and a preconditioner for M = K + σ²I; ``solve`` runs PCG."""

    method = "pcg"
    jitter = 0.0

    def __init__(self, group: Group, st: TiledStore, component: str, noise: float, opts: Any):
        self.rows = RowBlock.load(group, st, component, opts.storage_dtype)
        self.noise, self.opts, self.n = noise, opts, st.plan.n_rows
        diag = self.rows.diagonal()
        if opts.preconditioner == "pivoted_cholesky":
            self.pre = LowRankPlusDiagonal.from_pivoted_cholesky(diag, self.rows.row, opts.rank, noise)
        elif opts.preconditioner == "diagonal":
            self.pre = DiagonalPreconditioner(diag + noise)
        else:
            self.pre = None
        self.preconditioner_rank = 0 if self.pre is None else self.pre.rank

    def matvec(self, p: Tensor) -> Tensor:
        """M p on every rank."""
        return self.rows.matvec(p, self.noise)

    def solve(self, b: Tensor) -> tuple[Tensor, PCGInfo]:
        """M⁻¹ b by PCG on all k columns of b (N, k) at once, to ``opts.tol`` per column."""
        return pcg(self.matvec, b.to(self.rows.block.device), None if self.pre is None else self.pre.apply,
                   self.opts.tol, self.opts.max_iterations)


def build_system(group: Group, st: TiledStore, component: str, noise: float, method: str,
                 opts: Any) -> CholeskySystem | PCGSystem:
    """The system for ``method`` ("cholesky" or "pcg"; "auto" is resolved by the caller)."""
    return (CholeskySystem if method == "cholesky" else PCGSystem)(group, st, component, noise, opts)
