r"""Cross pairs of identical inputs: where a row of x' equals a row of x.

At such an entry of K(x, x') the recursion sits exactly on the edge of the PSD cone
(:math:`k_{12}^2 = k_{11}k_{22}`, correlation 1) at every layer.  A closed-form dual's value is
still accurate there, but its gradient is not: through the bivariate form it is
:math:`\partial_{11}T\,dk_{11} + \partial_{12}T\,dk_{12} + \partial_{22}T\,dk_{22}`, and for
GELU's :math:`\dot T` (erf's too) the three partials are of size :math:`k^{-1/2}` while their
combination is of size :math:`k^{-3/2}`: the relative error is :math:`k\varepsilon` however
exactly each partial is evaluated, because :math:`dk_{11}` and :math:`dk_{12}` come from different
roundings of the same number.

The fix is exact and uses only first-order symmetry.  :math:`F(x, x') = K^l(x, x')` is symmetric,
so at :math:`x = x'`, :math:`\partial_x F = \tfrac12 \nabla D` with :math:`D(x) = F(x, x)`, and
the derivative in any hyperparameter is :math:`\partial_\theta D`.  Hence every first derivative
of the entry equals that of :math:`\tfrac12 D(x) + \tfrac12 D(x')` — the one-variable
``dual_diag`` of each side's own variance, whose derivative does not cancel (the same form the
symmetric kernel uses on its diagonal).  Values agree to round-off (exactly, when both sides'
variances round alike).  Second derivatives of such entries are not those of the bivariate form.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["equal_rows", "identical_pairs", "pair_mask", "equal_pairs"]


def equal_rows(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor] | None:
    """Integer labels (…, N) and (…, M) such that x1[…, i] == x2[…, j] exactly (every feature)
    iff the labels are equal; None when no row of x2 equals one of x1, or inside ``vmap``
    (which cannot batch the data-dependent ``unique``; those entries keep the bivariate form)."""
    d = x1.shape[-1]
    a, b = x1.detach().reshape(-1, d), x2.detach().reshape(-1, d)
    try:
        # an exact integer hash of each row's bits first: one pass, where sorting the rows
        # (``unique(dim=0)``) costs ~10 % of a large kernel; most calls have no identical rows
        h1, h2 = _row_hashes(a), _row_hashes(b)
        c1, c2 = torch.isin(h1, h2), torch.isin(h2, h1)
        if not bool(c2.any()):
            return None
        # only the rows whose hash has a partner are compared (sorted) in full
        _, inv = torch.unique(torch.cat([a[c1], b[c2]]), dim=0, return_inverse=True)
    except RuntimeError:  # a batched (vmapped) tensor: no data-dependent shapes
        return None
    n1 = int(c1.sum())
    # rows without a partner get labels of their own (negative: never equal to another's)
    l1 = -1 - torch.arange(a.shape[0], device=a.device)
    l2 = -1 - a.shape[0] - torch.arange(b.shape[0], device=b.device)
    l1[c1], l2[c2] = inv[:n1], inv[n1:]
    if not bool(torch.isin(l2, l1).any()):
        return None
    return l1.reshape(x1.shape[:-1]), l2.reshape(x2.shape[:-1])


def _row_hashes(x: Tensor) -> Tensor:
    """Σ_f bits(x_f)·r_f mod 2^64 per row (r fixed odd integers): equal rows hash alike exactly
    (−0.0 is made +0.0 first, so that rows equal as numbers are equal as bits)."""
    bits = (x + 0.0).contiguous()
    bits = bits.view(torch.int64) if bits.element_size() == 8 else bits.view(torch.int32).to(torch.int64)
    r = torch.randint(1, 2 ** 62, (x.shape[-1],), generator=torch.Generator().manual_seed(0x5eed),
                      dtype=torch.int64).to(x.device) * 2 + 1
    return (bits * r).sum(-1)


def identical_pairs(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor] | None:
    """Index pairs (i, j) with x1[i] == x2[j] exactly, for 2-D inputs; None when there are none."""
    labels = equal_rows(x1, x2)
    if labels is None:
        return None
    l1, l2 = labels
    # every x1 row with x2[j]'s label: a run [lo, hi) of x1's sorted labels (a row of x1 that
    # appears twice pairs with each of x2's copies)
    order = torch.argsort(l1)
    ranked = l1[order]
    lo = torch.searchsorted(ranked, l2)
    count = torch.searchsorted(ranked, l2, right=True) - lo
    j = torch.repeat_interleave(torch.arange(l2.numel(), device=l2.device), count)
    first = torch.repeat_interleave(lo, count)
    offset = torch.arange(j.numel(), device=j.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
    return order[first + offset], j


def pair_mask(labels: tuple[Tensor, Tensor] | None, start: int, rows: int) -> Tensor | None:
    """The (…, rows, M) mask of identical pairs for the row tile starting at ``start``."""
    if labels is None:
        return None
    l1, l2 = labels
    return l1[..., start:start + rows].unsqueeze(-1) == l2.unsqueeze(-2)


def equal_pairs(t: Tensor, td: Tensor, diag1: tuple[Tensor, Tensor], diag2: tuple[Tensor, Tensor],
                mask: Tensor) -> tuple[Tensor, Tensor]:
    """T and Ṫ with the identical pairs (``mask``) replaced by ½·dual_diag(k11) + ½·dual_diag(k22)
    (module docstring: equal in value and in every first derivative, without the cancellation)."""
    return (torch.where(mask, 0.5 * diag1[0] + 0.5 * diag2[0], t),
            torch.where(mask, 0.5 * diag1[1] + 0.5 * diag2[1], td))
