"""Preconditioned conjugate gradients for A X = B with many right-hand sides at once.

Each column o runs its own CG recursion (its own step sizes α_o, β_o) but every iteration does
one shared mat-vec A P for all columns, so on a row-distributed A one iteration is one local
product and one all-reduce regardless of the number of outputs.  Iteration stops when every
column's relative residual ‖b_o − A x_o‖ / ‖b_o‖ is at most ``tol``; converged columns are
frozen.  All vectors and scalars are float64 whatever the storage of A.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from .._checks import check_int, check_positive
from .._predict_checks import check_tensor

__all__ = ["pcg", "PCGInfo"]


@dataclasses.dataclass
class PCGInfo:
    """iterations; residual: final max relative residual (recomputed as b − A x, not the
    recursion's estimate); history: max relative residual after each iteration."""

    iterations: int
    residual: float
    converged: bool
    history: list[float]


def pcg(matvec: Callable[[Tensor], Tensor], b: Tensor, precondition: Callable[[Tensor], Tensor] | None,
        tol: float = 1e-10, max_iterations: int = 1000) -> tuple[Tensor, PCGInfo]:
    """Solve A X = B (B of shape (N, O)) by preconditioned CG from X = 0.

    ``matvec(P)`` returns A P; ``precondition(R)`` returns M⁻¹ R for an SPD M ≈ A (None: M = I).
    """
    if not callable(matvec):
        raise TypeError(f"matvec must be a function P -> A P, got {type(matvec).__name__}")
    if precondition is not None and not callable(precondition):
        raise TypeError(f"precondition must be a function R -> M⁻¹ R or None, got {type(precondition).__name__}")
    check_tensor("b", b)
    if b.dim() > 2:
        raise ValueError(f"b must be (N,) or (N, O), got shape {tuple(b.shape)}")
    tol = check_positive("tol", tol)
    max_iterations = check_int("max_iterations", max_iterations, minimum=0)
    apply = precondition if precondition is not None else (lambda r: r)
    x = torch.zeros_like(b)
    r = b.clone()
    bnorm0 = b.norm(dim=0)
    bnorm = bnorm0.clamp_min(torch.finfo(b.dtype).tiny)
    z = apply(r)
    p = z.clone()
    rz = (r * z).sum(0)
    history: list[float] = []
    active = bnorm0 > 0                        # a zero right-hand side is solved by x = 0
    it = 0
    while it < max_iterations and bool(active.any()):
        q = matvec(p)
        pq = (p * q).sum(0)
        alpha = torch.where(active, rz / torch.where(active, pq, torch.ones_like(pq)), torch.zeros_like(rz))
        x += alpha * p
        r -= alpha * q
        it += 1
        rel = r.norm(dim=0) / bnorm
        history.append(float(rel.max()))
        active = rel > tol
        if not bool(active.any()):
            break
        z = apply(r)
        rz_new = (r * z).sum(0)
        beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    true_rel = float(((b - matvec(x)).norm(dim=0) / bnorm).max())
    return x, PCGInfo(iterations=it, residual=true_rel, converged=not bool(active.any()),
                      history=history)
