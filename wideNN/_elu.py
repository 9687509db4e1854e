r"""Dual kernels of ELU to rounding error: polar coordinates, closed-form radial integrals.

ELU is φ(x) = x for x > 0 and α(eˣ − 1) for x ≤ 0, so φ' = 1 on x > 0 and αeˣ on x < 0
(a kink in φ, and a jump in φ' when α ≠ 1).  A quadrature over the plane converges only
algebraically across the kink; here every expectation is split into the four sign quadrants
of (u, v) ~ N(0, [[k11, k12], [k12, k22]]), inside each of which the integrand is smooth, and
integrated in polar coordinates of the whitened variables, where the radial integral is a
closed form.

Geometry.  With σ_i = √k_ii, c = k12/(σ1σ2) = cos θ and z = R(cos ψ, sin ψ) standard normal,
u = R·σ1 cos ψ and v = R·σ2 cos(ψ − θ): along a ray both are R times a direction factor
(a, b).  The quadrant (+,+) is an angular wedge of width π − θ, (−,−) one of width π − θ, and
(+,−), (−,+) two of width θ.  Measured by δ from one edge of a wedge of width W, the factors
are ±σ sin δ and ±σ' sin(W − δ), which keeps them accurate near the edges.

Radial closed forms (m ≤ 0; G is a Mills ratio, J_n the radial moments of e^{mR}):

    G(m)  = ∫₀^∞ e^{mR − R²/2} dR = √(π/2) erfcx(−m/√2)
    J0(m) = ∫₀^∞ R e^{mR − R²/2} dR = 1 + m G(m),       J1(m) = ∫₀^∞ R² e^{mR−R²/2} dR = m + (1 + m²) G(m)

and with n(x) = 1 − eˣ (so φ = −α n on x < 0):

    N1(b)   = ∫₀^∞ R² n(bR) e^{−R²/2} dR       = −b (G[0, b] + J0(b))
    K(a, b) = ∫₀^∞ R n(aR) n(bR) e^{−R²/2} dR  = ab (G[a, a+b] + G[b, a+b])

(G[x, y] the divided difference; both forms are sums of positive terms, so no cancellation).
For u, v on a ray with factors (a, b), E[·] = (1/2π) ∫ dψ ∫ R dR e^{−R²/2} (·), hence

    Ṫ = (π − θ)/(2π) + α ⟨J0(b)⟩₊₋ + α ⟨J0(a)⟩₋₊ + α² ⟨J0(a + b)⟩₋₋
    T = s (sin θ + (π − θ) c)/(2π) − α ⟨a N1(b)⟩₊₋ − α ⟨b N1(a)⟩₋₊ + α² ⟨K(a, b)⟩₋₋

with s = σ1σ2 and ⟨·⟩ = (1/2π) ∫ over the wedge.  The (+,+) terms are the arc-cosine kernel
(Cho & Saul 2009).  Each wedge integral is smooth in δ; for large variances the factor e^{bR}
has a boundary layer of width ~1/σ at an edge, so each half-wedge is mapped by δ = ε sinh t
(ε = min(W/2, 1/σ) at that edge) and integrated by Gauss–Legendre in t.  Equivalently, the
wedge integrals are tilted bivariate normal orthant probabilities e^{q/2} Φ₂(h, k; c) (the form
of Tsuchida et al., "Avoiding kernel fixed points: computing with ELU and GELU infinite
networks", AAAI 2021), evaluated without the e^{q/2} overflow and the cancellation a
generic Φ₂ has in the far tail.

Accuracy (float64, against 50-digit mpmath integration; ``tests/test_elu_dual.py``): relative
≲ 1e-13 for variances from 0 to 1e6 and every correlation, including c = ±1.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["elu_dual", "elu_dual_diag", "radial_g", "radial_j0", "radial_j1"]

_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_2PI = 0.5 / math.pi
#: Gauss–Legendre nodes per half-wedge
NODES = 24
#: above this |m| the radial moments use their asymptotic series (the closed forms cancel)
_ASYMPTOTIC = 12.0
#: below this |m| the divided differences of G use their Taylor series at 0
_SMALL = 0.5
#: below this |a| (or |b|) K uses a series in the small factor
_TINY = 1e-3


def _moments(count: int) -> list[float]:
    """M_k = ∫₀^∞ R^k e^{−R²/2} dR for k = 0 … count − 1 (M_k = (k − 1) M_{k−2})."""
    m = [_SQRT_HALF_PI, 1.0]
    while len(m) < count:
        m.append((len(m) - 1) * m[-2])
    return m[:count]


_M = _moments(48)


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
    small = b.abs() < _SMALL
    bs = torch.where(small, b, torch.zeros_like(b))
    acc = torch.zeros_like(b)
    for k in range(26, 0, -1):
        acc = _M[k] / math.factorial(k) + acc * bs
    safe = torch.where(small, -torch.ones_like(b), b)
    return torch.where(small, acc, (g - _SQRT_HALF_PI) / safe)


def _n1(b: Tensor, g: Tensor, j0: Tensor) -> Tensor:
    """N1(b) = ∫₀^∞ R² (1 − e^{bR}) e^{−R²/2} dR = −b (G[0, b] + J0(b)), b ≤ 0."""
    return -b * (_g_div0(b, g) + j0)


def _k(a: Tensor, b: Tensor, ga: Tensor, gb: Tensor, gab: Tensor) -> Tensor:
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
            series = series + _M[i + j + 3] / (math.factorial(i + 1) * math.factorial(j + 1)) * sa ** i * sb ** j
    series = sa * sb * series
    # one tiny: integrate over the small factor
    a_small = a.abs() <= b.abs()
    small = torch.where(a_small, a, b)
    large = torch.where(a_small, b, a)
    one = torch.where(lo < _TINY, small, zero)
    x, w = _gauss_legendre(3, a.dtype, a.device)
    acc = zero
    for xi, wi in zip(x.tolist(), w.tolist()):
        acc = acc + wi * (radial_j1(xi * one) - radial_j1(xi * one + large))
    single = -one * acc
    return torch.where(lo < _TINY, torch.where(hi_small, series, single), direct)


@functools.lru_cache(maxsize=16)
def _gauss_legendre(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss–Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (torch.as_tensor(0.5 * (x + 1.0), dtype=dtype, device=device),
            torch.as_tensor(0.5 * w, dtype=dtype, device=device))


def _half_wedge(width: Tensor, scale: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Nodes δ ∈ [0, width/2] (trailing axis) and weights for ∫ dδ, by δ = ε sinh t with
    ε = min(width/2, 1/scale): uniform in δ for small ``scale``, logarithmic beyond 1/scale, so
    that a boundary layer of width ~1/scale at δ = 0 is resolved at any scale."""
    half = 0.5 * width
    eps = torch.where(scale * half > 1.0, 1.0 / torch.where(scale > 0, scale, torch.ones_like(scale)), half)
    top = torch.asinh(torch.where(eps > 0, half / torch.where(eps > 0, eps, torch.ones_like(eps)),
                                  torch.ones_like(eps)))
    x, w = _gauss_legendre(n, width.dtype, width.device)
    t = top.unsqueeze(-1) * x
    delta = eps.unsqueeze(-1) * torch.sinh(t)
    weight = (eps * top).unsqueeze(-1) * torch.cosh(t) * w
    return delta, weight


def _wedge_rule(width: Tensor, scale0: Tensor, scale1: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Nodes δ ∈ [0, width] and weights (trailing axis of 2n): each half graded towards its
    own edge (layer scales ``scale0`` at δ = 0 and ``scale1`` at δ = width)."""
    d0, w0 = _half_wedge(width, scale0, n)
    d1, w1 = _half_wedge(width, scale1, n)
    return torch.cat([d0, width.unsqueeze(-1) - d1], -1), torch.cat([w0, w1], -1)


def _geometry(k11: Tensor, k12: Tensor, k22: Tensor):
    """σ1, σ2, c, θ and sin θ (from 1 − c² written as (1 − c)(1 + c))."""
    from ._gaussian import correlation, safe_arccos, safe_sqrt
    _, c = correlation(k11, k12, k22)
    s1, s2 = safe_sqrt(k11), safe_sqrt(k22)
    theta = safe_arccos(c)
    sin_theta = safe_sqrt((1.0 - c) * (1.0 + c))
    return s1, s2, c, theta, sin_theta


def elu_dual(k11: Tensor, k12: Tensor, k22: Tensor, alpha: float, n: int = NODES) -> tuple[Tensor, Tensor]:
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) of ELU with parameter ``alpha`` (module docstring)."""
    shape = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
    s1, s2, c, theta, sin_theta = (t.expand(shape) for t in _geometry(k11, k12, k22))
    s = s1 * s2
    t_pp = s * _INV_2PI * (sin_theta + (math.pi - theta) * c)
    td_pp = (math.pi - theta) * _INV_2PI
    t_x, td_x = _mixed_wedges(s1, s2, theta, n)
    t_mm, td_mm = _negative_wedge(s1, s2, theta, n)
    t = t_pp - alpha * t_x + alpha * alpha * t_mm
    td = td_pp + alpha * td_x + alpha * alpha * td_mm
    return t, td


def _mixed_wedges(s1: Tensor, s2: Tensor, theta: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """⟨a N1(b)⟩₊₋ + ⟨b N1(a)⟩₋₊ and ⟨J0(b)⟩₊₋ + ⟨J0(a)⟩₋₊ (the two wedges of width θ)."""
    t_sum = torch.zeros_like(theta)
    td_sum = torch.zeros_like(theta)
    for pos, neg in ((s1, s2), (s2, s1)):  # (+,−): u > 0 > v;  (−,+): the mirror image
        delta, w = _wedge_rule(theta, neg, neg, n)
        b = -neg.unsqueeze(-1) * torch.sin(delta)                       # the negative factor
        a = pos.unsqueeze(-1) * torch.sin(theta.unsqueeze(-1) - delta)  # the positive one
        g = radial_g(b)
        j0 = radial_j0(b, g)
        t_sum = t_sum + (w * a * _n1(b, g, j0)).sum(-1)
        td_sum = td_sum + (w * j0).sum(-1)
    return _INV_2PI * t_sum, _INV_2PI * td_sum


def _negative_wedge(s1: Tensor, s2: Tensor, theta: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """⟨K(a, b)⟩₋₋ and ⟨J0(a + b)⟩₋₋ over the wedge of width π − θ."""
    width = math.pi - theta
    top = torch.maximum(s1, s2)
    delta, w = _wedge_rule(width, top, top, n)
    b = -s2.unsqueeze(-1) * torch.sin(delta)
    a = -s1.unsqueeze(-1) * torch.sin(width.unsqueeze(-1) - delta)
    ga, gb, gab = radial_g(a), radial_g(b), radial_g(a + b)
    t = (w * _k(a, b, ga, gb, gab)).sum(-1)
    td = (w * radial_j0(a + b, gab)).sum(-1)
    return _INV_2PI * t, _INV_2PI * td


def elu_dual_diag(k: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """(E[φ(u)²], E[φ'(u)²]) for u ~ N(0, k):

        E[φ'²] = ½ + α² e^{2k} Φ(−2√k) = ½ + (α²/2) erfcx(√(2k))
        E[φ²]  = k/2 + α² E[(1 − eᵘ)² 1{u < 0}],  the latter ½ − erfcx(√(k/2)) + ½ erfcx(√(2k))
                 (its power series Σ_{n≥2} (2ⁿ − 2)(−σ)ⁿ M_n/(n! √(2π)) for σ = √k < ½)."""
    from ._gaussian import safe_sqrt
    sigma = safe_sqrt(k)
    td = 0.5 + 0.5 * alpha * alpha * torch.special.erfcx(math.sqrt(2.0) * sigma)
    direct = 0.5 - torch.special.erfcx(sigma * math.sqrt(0.5)) + 0.5 * torch.special.erfcx(math.sqrt(2.0) * sigma)
    small = sigma < _SMALL
    x = torch.where(small, sigma, torch.zeros_like(sigma))
    acc = torch.zeros_like(sigma)
    for order in range(30, 1, -1):
        acc = (2.0 ** order - 2.0) * (-1) ** order * _M[order] / math.factorial(order) + acc * x
    series = acc * x * x * _INV_SQRT_2PI
    neg = torch.where(small, series, direct)
    return 0.5 * k + alpha * alpha * neg, td
