"""``RowBlock``: this rank's contiguous rows of a symmetric kernel held in a ``TiledStore``.

The ranks split the tile rows of the N×N matrix K into contiguous ranges
(``TilePlan.row_partition``); rank r keeps rows [r0, r1) against every column.  A product
(K + sI) P is then the local (r1 − r0)×N product written into rows r0:r1 of an N×k buffer and
one all-reduce; a quadratic form Zᵀ(K + sI)Z needs only the all-reduce of a k-vector (its
diagonal) or a k×k matrix, since Σ_r Z[r0:r1]ᵀ (K[r0:r1] Z) = Zᵀ K Z.  Every product is
accumulated in float64 whatever the storage dtype.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .group import Group
from .store import TiledStore

__all__ = ["RowBlock"]


@dataclasses.dataclass
class RowBlock:
    """Rows ``r0:r1`` of an ``n``×``n`` kernel on this rank (``block``: (r1 − r0, n));
    ``bounds``: every rank's (r0, r1)."""

    group: Group
    block: Tensor
    r0: int
    r1: int
    n: int
    bounds: list[tuple[int, int]]

    @classmethod
    def load(cls, group: Group, st: TiledStore, component: str, dtype: torch.dtype) -> "RowBlock":
        """Read this rank's rows of ``component`` (a corrupt tile raises on every rank)."""
        plan = st.plan
        parts = plan.row_partition(group.world_size)
        bounds = [(plan.rows(p).start, plan.rows(q - 1).stop) for p, q in parts]
        a, b = parts[group.rank]
        block, err = None, None
        try:
            block = st.rows(component, a, b).to(device=group.device, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as e:
            err = e
        group.agree(err)
        r0, r1 = bounds[group.rank]
        return cls(group, block, r0, r1, plan.n_rows, bounds)

    def local(self, p: Tensor) -> Tensor:
        """K[r0:r1] @ p (p: (n, k) float64), accumulated in float64; a float32 block is upcast
        ~16M entries at a time."""
        if self.block.dtype == torch.float64:
            return self.block @ p
        chunk = max(1, 2 ** 24 // self.block.shape[1])
        out = torch.empty(self.block.shape[0], p.shape[1], dtype=torch.float64, device=p.device)
        for s in range(0, self.block.shape[0], chunk):
            out[s:s + chunk] = self.block[s:s + chunk].to(torch.float64) @ p
        return out

    def matvec(self, p: Tensor, shift: float = 0.0) -> Tensor:
        """(K + shift·I) p on every rank (p: (n, k) float64, the same on every rank)."""
        out = torch.zeros(self.n, p.shape[1], dtype=torch.float64, device=p.device)
        out[self.r0:self.r1] = self.local(p)
        if shift:
            out[self.r0:self.r1] += shift * p[self.r0:self.r1]
        return self.group.all_reduce_(out)

    def quadratic(self, z: Tensor, shift: float = 0.0, full: bool = False) -> Tensor:
        """zᵀ(K + shift·I)z on every rank: its diagonal (k,), or the (k, k) matrix with ``full``."""
        kz = self.local(z)
        if shift:
            kz = kz + shift * z[self.r0:self.r1]
        zr = z[self.r0:self.r1]
        out = zr.T @ kz if full else (zr * kz).sum(0)
        return self.group.all_reduce_(out.contiguous())

    def diagonal(self) -> Tensor:
        """diag(K) (n,) float64 on every rank."""
        d = torch.zeros(self.n, dtype=torch.float64, device=self.block.device)
        d[self.r0:self.r1] = self.block.diagonal(offset=self.r0).to(torch.float64)
        return self.group.all_reduce_(d)

    def row(self, p: int) -> Tensor:
        """Row p of K (n,) float64 on every rank (broadcast by the rank that owns it)."""
        owner = next(r for r, (s, e) in enumerate(self.bounds) if s <= p < e)
        if owner == self.group.rank:
            buf = self.block[p - self.r0].to(torch.float64).clone()
        else:
            buf = torch.empty(self.n, dtype=torch.float64, device=self.block.device)
        return self.group.broadcast_(buf, owner)
