"""Low-rank-plus-diagonal preconditioners for kernel systems (K + σ²I) x = b.

Pivoted Cholesky (Harbrecht, Peters & Schneider 2012; used for GP solves by Gardner et al.
2018, "GPyTorch") picks k pivot rows greedily by the largest remaining diagonal and builds
L (N×k) with K ≈ L Lᵀ; it needs only the diagonal and k rows of K, which is what makes it
cheap on a row-distributed matrix: the rank that owns pivot row p broadcasts it.  The
preconditioner is P = L Lᵀ + D with D = diag(K + σ²I − L Lᵀ) (the residual diagonal, floored),
applied with the Woodbury identity

    P⁻¹ r = D⁻¹ r − D⁻¹ L C⁻¹ Lᵀ D⁻¹ r,     C = I_k + Lᵀ D⁻¹ L   (k×k, Cholesky-factored once).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from .._checks import check_int
from .._predict_checks import check_number, check_tensor

__all__ = ["pivoted_cholesky", "LowRankPlusDiagonal", "DiagonalPreconditioner"]


def pivoted_cholesky(diag: Tensor, row: Callable[[int], Tensor], rank: int,
                     rtol: float = 1e-12) -> tuple[Tensor, list[int]]:
    """Greedy pivoted Cholesky of a PSD matrix given by its diagonal (N,) and a function
    returning row p (N,).  Returns (L of shape (N, k), pivots); stops early when the largest
    remaining diagonal is below ``rtol`` × the largest initial one (the matrix is then
    reproduced to that accuracy by rank k)."""
    check_tensor("diag", diag)
    if diag.dim() != 1:
        raise ValueError(f"diag must be the (N,) diagonal of the matrix, got shape {tuple(diag.shape)}")
    if bool((diag < 0).any()):
        raise ValueError("diag has negative entries: the matrix is not positive semi-definite")
    if not callable(row):
        raise TypeError(f"row must be a function p -> row p of the matrix, got {type(row).__name__}")
    rank = check_int("rank", rank, minimum=0)
    rtol = check_number("rtol", rtol)
    n = diag.shape[0]
    k = min(rank, n)
    d = diag.clone()
    L = torch.zeros(k, n, dtype=diag.dtype, device=diag.device)
    stop = rtol * float(d.max())
    pivots: list[int] = []
    for m in range(k):
        p = int(torch.argmax(d))
        if float(d[p]) <= stop:
            L = L[:m]
            break
        l = (row(p).to(diag) - L[:m, p] @ L[:m]) / d[p].sqrt()
        L[m] = l
        d -= l * l
        d[p] = 0.0
        pivots.append(p)
    return L.T.contiguous(), pivots


@dataclasses.dataclass
class LowRankPlusDiagonal:
    """P = L Lᵀ + diag(d); ``apply(r)`` is P⁻¹ r for r (N,) or (N, O) by Woodbury."""

    L: Tensor
    d: Tensor

    def __post_init__(self) -> None:
        check_tensor("L", self.L, min_dim=2)
        check_tensor("d", self.d)
        if self.L.dim() != 2 or self.d.shape != self.L.shape[:1]:
            raise ValueError(f"L must be (N, k) and d (N,), got shapes {tuple(self.L.shape)} and "
                             f"{tuple(self.d.shape)}")
        if not bool((self.d > 0).all()):
            raise ValueError("d must be positive (the diagonal of a positive definite preconditioner)")
        k = self.L.shape[1]
        self._dinv = 1.0 / self.d
        dl = self.L * self._dinv.unsqueeze(1)
        c = torch.eye(k, dtype=self.L.dtype, device=self.L.device) + self.L.T @ dl
        self._chol = torch.linalg.cholesky(c)
        self._dl = dl

    @classmethod
    def from_pivoted_cholesky(cls, diag: Tensor, row: Callable[[int], Tensor], rank: int,
                              noise: float) -> "LowRankPlusDiagonal":
        """P for K + σ²I from a rank-``rank`` pivoted Cholesky of K (diag and rows of K without
        the noise).  D is floored at 1e-10 × mean diag so P stays invertible when σ² = 0."""
        L, _ = pivoted_cholesky(diag, row, rank)
        resid = (diag - (L * L).sum(1)).clamp_min(0.0) + noise
        floor = 1e-10 * float(diag.mean()) + noise
        return cls(L, resid.clamp_min(floor))

    @property
    def rank(self) -> int:
        return self.L.shape[1]

    def apply(self, r: Tensor) -> Tensor:
        """P⁻¹ r for P = D + L Lᵀ by Woodbury: D⁻¹r − D⁻¹L (I + LᵀD⁻¹L)⁻¹ LᵀD⁻¹ r (r: (N,) or (N, k))."""
        vec = r.dim() == 1
        rr = r.unsqueeze(1) if vec else r
        t = torch.cholesky_solve(self._dl.T @ rr, self._chol)
        out = self._dinv.unsqueeze(1) * rr - self._dl @ t
        return out.squeeze(1) if vec else out


@dataclasses.dataclass
class DiagonalPreconditioner:
    """P = diag(d) (Jacobi)."""

    d: Tensor
    rank: int = 0

    def apply(self, r: Tensor) -> Tensor:
        """P⁻¹ r = r / d (r: (N,) or (N, k))."""
        return r / (self.d if r.dim() == 1 else self.d.unsqueeze(1))
