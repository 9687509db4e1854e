"""Gaussian expectations: the correlation geometry of a bivariate normal and a quadrature rule.

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]) the closed-form duals in ``wideNN.activations`` are
written in s = √(k11 k22), c = k12 / s and θ = arccos c; the quadrature fallback integrates
against N(0, 1) with ``normal_rule``.  Every helper here is safe at the edges (s = 0, |c| = 1)
for values and for gradients, because kernels of coincident or zero inputs hit them exactly.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

INV_2PI = 1.0 / (2.0 * math.pi)


def safe_arccos(c: Tensor) -> Tensor:
    """arccos(clamp(c, -1, 1)) with a finite gradient everywhere.

    At |c| = 1 (coincident or antipodal inputs) the true derivative is infinite, but there the
    correlation is constant in every hyperparameter, so its own derivative is exactly 0; the
    masked form returns 0 instead of 0·∞ = NaN, and (unlike a custom autograd.Function) it
    composes with torch.func transforms.
    """
    inside = c.abs() < 1
    interior = torch.arccos(torch.where(inside, c, torch.zeros_like(c)))
    edge = torch.where(c > 0, torch.zeros_like(c), torch.full_like(c, math.pi))
    return torch.where(inside, interior, edge)


def safe_sqrt(x: Tensor) -> Tensor:
    """√max(x, 0) with a zero (not infinite) gradient at 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def correlation(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    """(s, c) with s = √(k11 k22) and c = k12 / s clamped to [-1, 1] (c = 0 when s = 0).

    s is formed as √k11·√k22, never as √(k11·k22): the product overflows for variances above
    ~1e154 and underflows below ~1e-154 (float64; 1e19 / 1e-19 in float32), which turned
    representable kernels into NaN or 0.
    """
    s = safe_sqrt(k11) * safe_sqrt(k22)
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    c = torch.where(s > 0, k12 / safe_s, torch.zeros_like(k12 * s))
    return s, snap_correlation(c.clamp(-1.0, 1.0))


def shifted_gram(x11: Tensor, x12: Tensor, x22: Tensor, floor: float = 0.5) -> tuple[Tensor, Tensor]:
    """(r, q) with r = √a1·√a2 and q = D/S, for a_i = 1 + x_ii, S = a1 a2, D = S − x12².

    The Gaussian duals of GELU (x = k) and erf (x = 2k) are functions of S and D; both overflow
    (x ~ 1e154 in float64) and D loses everything to cancellation at coincident points once
    x ≳ 1/ε.  Here q = (1 + x11 + x22)/S + (x11 x22 − x12²)/S with the Gram determinant formed
    as (x11/a1)(x22/a2) − (x12/a1)(x12/a2): bounded terms, exactly 0 at coincident points
    (x11 = x12 = x22), differentiable (no clamp or square root of it), and divisions rather
    than products with 1/a so that the backward never forms x·x.  A guard keeps q ≥ ½ of its
    PSD lower bound (1 + x11 + x22)/S: inactive unless the input leaves the PSD cone by more
    than that (rounding does so only for variances of very different size whose correlation
    is ±1), and q ≥ ``floor``/S where that bound is not positive (x < 0, invalid input; the
    a_i are floored at ``floor`` too).
    """
    a1 = torch.clamp_min(1.0 + x11, floor)
    a2 = torch.clamp_min(1.0 + x22, floor)
    ia1, ia2 = 1.0 / a1, 1.0 / a2
    det = (x11 / a1) * (x22 / a2) - (x12 / a1) * (x12 / a2)
    q0 = ia1 + ia2 - ia1 * ia2
    q = torch.maximum(q0 + det, 0.5 * torch.maximum(q0, (2.0 * floor) * ia1 * ia2))
    return torch.sqrt(a1) * torch.sqrt(a2), q


def snap_correlation(c: Tensor) -> Tensor:
    """Round correlations within a few ulps of ±1 to exactly ±1.

    Coincident inputs reach the duals as c = 1 − δ with δ a rounding residue of a few ulps, and
    arccos(1 − δ) ≈ √(2δ) turns that residue into an angle of ~1e-8 (float64) that fluctuates
    with every perturbation of the inputs or hyperparameters.  Snapping makes coincident points
    exactly coincident; the change is below the rounding error already present.
    """
    tol = 8 * torch.finfo(c.dtype).eps
    one = torch.ones_like(c)
    return torch.where(c >= 1 - tol, one, torch.where(c <= -1 + tol, -one, c))


# ----------------------------------------------------------------------------- quadrature
#: the rule integrates over |z| ≤ L: the neglected Gaussian tail e^{−L²/2}·L² is < 1e-15
HALF_WIDTH = 9.0
#: node counts grow with √(variance) up to this multiple of ``quadrature_degree``
MAX_NODE_FACTOR = 8


@functools.lru_cache(maxsize=64)  # a handful of (nodes, dtype, device) per process; callers never mutate
def normal_rule(nodes: int, dtype: torch.dtype, device: torch.device,
                half_width: float = HALF_WIDTH) -> tuple[Tensor, Tensor]:
    """Nodes z and weights w with Σ w f(z) ≈ E[f(Z)], Z ~ N(0, 1).

    The trapezoid rule on [−L, L] with ``nodes`` equispaced points (z = 0 among them), weights
    h·pdf(z) normalized to sum to 1.  For f analytic in the strip |Im z| < d the error decays
    like e^{−2πd/h} (Trefethen & Weideman, SIAM Review 2014); Gauss–Hermite spends most of its
    nodes far in the tails, so at equal size this rule is more accurate for the saturating
    activations whose singularities sit close to the real axis (tanh(√k z): d = π/(2√k)).
    """
    z = np.linspace(-half_width, half_width, nodes)
    w = np.exp(-0.5 * z * z)
    w /= w.sum()
    return torch.as_tensor(z, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)
