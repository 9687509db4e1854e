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

__all__ = ["equal_rows", "pair_mask", "equal_pairs"]


def equal_rows(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor] | None:
    """Integer labels (…, N) and (…, M) such that x1[…, i] == x2[…, j] exactly (every feature)
    iff the labels are equal; None when no row of x2 equals one of x1, or inside ``vmap``
    (which cannot batch the data-dependent ``unique``; those entries keep the bivariate form)."""
    d = x1.shape[-1]
    a, b = x1.detach().reshape(-1, d), x2.detach().reshape(-1, d)
    try:
        _, inv = torch.unique(torch.cat([a, b]), dim=0, return_inverse=True)
    except RuntimeError:  # a batched (vmapped) tensor: no data-dependent shapes
        return None
    l1, l2 = inv[:a.shape[0]], inv[a.shape[0]:]
    if not bool(torch.isin(l2, l1).any()):
        return None
    return l1.reshape(x1.shape[:-1]), l2.reshape(x2.shape[:-1])


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
