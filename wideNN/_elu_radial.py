r"""Radial integrals of ELU's dual kernels in polar coordinates (see ``wideNN._elu``).

For m ≤ 0, with M_k = ∫₀^∞ R^k e^{−R²/2} dR:

    G(m)  = ∫₀^∞ e^{mR − R²/2} dR   = √(π/2) erfcx(−m/√2)        (a Mills ratio)
    J0(m) = ∫₀^∞ R e^{mR − R²/2} dR  = 1 + m G(m) = G'(m)
    J1(m) = ∫₀^∞ R² e^{mR − R²/2} dR = m + (1 + m²) G(m) = J0'(m)

and the combinations the duals need, each written as a sum of positive terms (n(x) = 1 − eˣ):

    N1(b)   = ∫₀^∞ R² n(bR) e^{−R²/2} dR          = −b (G[0, b] + J0(b))
    K(a, b) = ∫₀^∞ R n(aR) n(bR) e^{−R²/2} dR     = ab (G[a, a+b] + G[b, a+b])
    D(a, b) = ∫₀^∞ R e^{aR} n(bR) e^{−R²/2} dR    = J0(a) − J0(a + b) = −b ∫₀¹ J1(a + sb) ds

(G[x, y] the divided difference).  Where a closed form cancels (1 + mG for large |m|, divided
differences of nearby points, tiny arguments) a series or a short Gauss–Legendre rule of a
smooth positive integrand replaces it; J0 and G are accurate to a few ulps relative, J1 to a
few ulps of J1(0) (it is only ever subtracted from O(1) terms).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["MOMENTS", "erfcx_minus_one", "gauss_legendre", "radial_d", "radial_g", "radial_j0",
           "radial_j1", "radial_k", "radial_n1"]

_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)

#: above this |m| the radial moments use their asymptotic series (the closed forms cancel)
_ASYMPTOTIC = 12.0
#: below this |m| the divided differences of G use their Taylor series at 0
SMALL = 0.5
#: below this |a| (or |b|) K uses a series in the small factor
_TINY = 1e-3


def _moments(count: int) -> list[float]:
    """M_k = ∫₀^∞ R^k e^{−R²/2} dR for k = 0 … count − 1 (M_k = (k − 1) M_{k−2})."""
    m = [_SQRT_HALF_PI, 1.0]
    while len(m) < count:
        m.append((len(m) - 1) * m[-2])
    return m[:count]


MOMENTS = _moments(48)


def radial_g(m: Tensor) -> Tensor:
    """G(m) = ∫₀^∞ e^{mR − R²/2} dR for m ≤ 0 (relative accuracy of erfcx)."""
    return _SQRT_HALF_PI * torch.special.erfcx(-m * math.sqrt(0.5))


def _asymptotic(x: Tensor, n: int, terms: int = 16) -> Tensor:
    """J_n(−x) = Σ_k (−1)^k (n + 1 + 2k)! / (2^k k! x^{n+2+2k}) for large x (Horner in 1/x²)."""
    y = 1.0 / (x * x)
    acc = torch.zeros_like(x)
    for k in range(terms - 1, -1, -1):
        coef = math.factorial(n + 1 + 2 * k) / (2.0 ** k * math.factorial(k))
        acc = coef * (-1) ** k + acc * y
    return acc * x.pow(-(n + 2))


def radial_j0(m: Tensor, g: Tensor | None = None) -> Tensor:
    """J0(m) = ∫₀^∞ R e^{mR − R²/2} dR = 1 + m G(m) for m ≤ 0; the asymptotic series beyond
    |m| = 12, where 1 + mG loses |m|² ulps."""
    g = radial_g(m) if g is None else g
    x = -m
    far = x > _ASYMPTOTIC
    direct = 1.0 + m * g
    if not bool(far.any()):
        return direct
    return torch.where(far, _asymptotic(torch.where(far, x, torch.full_like(x, 2 * _ASYMPTOTIC)), 0), direct)


def radial_j1(m: Tensor, g: Tensor | None = None) -> Tensor:
    """J1(m) = ∫₀^∞ R² e^{mR − R²/2} dR = m + (1 + m²) G(m) for m ≤ 0 (asymptotic series
    beyond |m| = 12)."""
    g = radial_g(m) if g is None else g
    x = -m
    far = x > _ASYMPTOTIC
    direct = m + (1.0 + m * m) * g
    if not bool(far.any()):
        return direct
    return torch.where(far, _asymptotic(torch.where(far, x, torch.full_like(x, 2 * _ASYMPTOTIC)), 1), direct)


def _g_div0(b: Tensor, g: Tensor) -> Tensor:
    """G[0, b] = (G(b) − G(0))/b: the Taylor series Σ M_k b^{k−1}/k! for |b| < ½ (the
    difference cancels there), the difference otherwise."""
    small = b.abs() < SMALL
    bs = torch.where(small, b, torch.zeros_like(b))
    acc = torch.zeros_like(b)
    for k in range(26, 0, -1):
        acc = MOMENTS[k] / math.factorial(k) + acc * bs
    safe = torch.where(small, -torch.ones_like(b), b)
    return torch.where(small, acc, (g - _SQRT_HALF_PI) / safe)


def radial_n1(b: Tensor, g: Tensor, j0: Tensor) -> Tensor:
    """N1(b) = ∫₀^∞ R² (1 − e^{bR}) e^{−R²/2} dR = −b (G[0, b] + J0(b)), b ≤ 0."""
    return -b * (_g_div0(b, g) + j0)


def radial_k(a: Tensor, b: Tensor, ga: Tensor, gb: Tensor, gab: Tensor) -> Tensor:
    """K(a, b) = ∫₀^∞ R (1 − e^{aR})(1 − e^{bR}) e^{−R²/2} dR for a, b ≤ 0 (G values given).

    ``1 − J0(a) − J0(b) + J0(a+b) = −aG(a) − bG(b) + (a+b)G(a+b)`` loses ~ε/min(|a|, |b|)
    relative; below ``_TINY`` the small factor is expanded instead: both small, the double
    series ab Σ M_{i+j+3} aⁱbʲ/((i+1)!(j+1)!); one small, K = −a ∫₀¹ (J1(sa) − J1(sa + b)) ds
    (three-point Gauss–Legendre: J1 hardly varies over [a, 0])."""
    direct = -a * ga - b * gb + (a + b) * gab
    lo = torch.minimum(a.abs(), b.abs())
    if not bool((lo < _TINY).any()):
        return direct
    hi_small = torch.maximum(a.abs(), b.abs()) < _TINY
    zero = torch.zeros_like(a)
    # both tiny: the double series to total order 5 (next term ~ (2e-3)⁶ relative)
    sa, sb = torch.where(hi_small, a, zero), torch.where(hi_small, b, zero)
    series = zero
    for i in range(6):
        for j in range(6 - i):
            series = series + MOMENTS[i + j + 3] / (math.factorial(i + 1) * math.factorial(j + 1)) * sa ** i * sb ** j
    series = sa * sb * series
    # one tiny: integrate over the small factor
    a_small = a.abs() <= b.abs()
    small = torch.where(a_small, a, b)
    large = torch.where(a_small, b, a)
    one = torch.where(lo < _TINY, small, zero)
    x, w = gauss_legendre(3, a.dtype, a.device)
    acc = zero
    for xi, wi in zip(x.tolist(), w.tolist()):
        acc = acc + wi * (radial_j1(xi * one) - radial_j1(xi * one + large))
    single = -one * acc
    return torch.where(lo < _TINY, torch.where(hi_small, series, single), direct)


@functools.lru_cache(maxsize=16)
def gauss_legendre(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss–Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (torch.as_tensor(0.5 * (x + 1.0), dtype=dtype, device=device),
            torch.as_tensor(0.5 * w, dtype=dtype, device=device))


def radial_d(a: Tensor, b: Tensor, ga: Tensor, j0ab: Tensor) -> Tensor:
    """D(a, b) = J0(a) − J0(a + b) ≥ 0; where |b| is small against max(1, |a|) the difference
    cancels, and D = −b ∫₀¹ J1(a + sb) ds (J0' = J1) by four-point Gauss–Legendre instead."""
    direct = radial_j0(a, ga) - j0ab
    near = b.abs() < 0.25 * torch.clamp_min(a.abs(), 1.0)
    if not bool(near.any()):
        return direct
    bb = torch.where(near, b, torch.zeros_like(b))
    x, w = gauss_legendre(4, a.dtype, a.device)
    acc = torch.zeros_like(a)
    for xi, wi in zip(x.tolist(), w.tolist()):
        acc = acc + wi * radial_j1(a + xi * bb)
    return torch.where(near, -bb * acc, direct)


def erfcx_minus_one(y: Tensor) -> Tensor:
    """erfcx(y) − 1 for y ≥ 0 without cancellation: expm1(y²) erfc(y) − erf(y) below 1."""
    small = y < 1.0
    ys = torch.where(small, y, torch.zeros_like(y))
    return torch.where(small, torch.expm1(ys * ys) * torch.erfc(ys) - torch.erf(ys),
                       torch.special.erfcx(y) - 1.0)


