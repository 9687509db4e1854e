"""Activations and their dual kernels.

Each activation is a parameter-free ``nn.Module`` (so it sits directly inside a finite
network) that also knows its *dual kernels*: for (u, v) ~ N(0, [[k11, k12], [k12, k22]]),

    T(k11, k12, k22)  = E[φ(u) φ(v)]        (drives the NNGP recursion)
    Ṫ(k11, k12, k22)  = E[φ'(u) φ'(v)]      (drives the NTK recursion)

and their diagonal versions (u = v ~ N(0, k)).  Closed forms are used where they exist;
everything else falls back to a quadrature of configurable degree (a trapezoid rule in
the standard-normal variable whose node count grows with √variance, ``_normal_rule``).

Notation used in the closed forms: s = √(k11 k22), c = k12 / s (clamped to [-1, 1]),
θ = arccos c.

Accuracy of the quadrature fallback: relative error of (E[φφ], E[φ'φ']) in float64 against
nested adaptive quadrature (scipy.integrate.quad), measured 2026-11-22; ``tests/test_activations.py``
checks the tanh rows at variances 1, 4 and 16:

    (k11, k12, k22)     degree   erf             tanh            sigmoid/softplus/silu   elu (kink in φ')
    (1, 0.6, 1.4)       16       2e-3 / 6e-3     2e-3 / 1e-2     ≤ 1e-5 / 5e-5            3e-3 / 6e-2
                        32       5e-13 / 3e-12   5e-8 / 4e-7     ≤ 1e-14 / 5e-14          1e-4 / 1e-2
                        48       2e-16 / 1e-15   2e-12 / 3e-11   ≤ 5e-16                  2e-5 / 5e-3
                        64       —               1e-16 / 1e-15   —                        7e-6 / 2e-3
    (4, 2.4, 5.6)       32       1e-16 / 1e-15   4e-9 / 1e-7     2e-16 / 1e-15            —
    (16, 9.6, 22.4)     32       3e-16 / 1e-15   7e-10 / 8e-8    3e-16 / 7e-16            —

The node count is degree·max(1, √k_max) (k_max the largest variance in the call, capped at 8×
degree), so the accuracy holds as the variances grow: a fixed Gauss–Hermite rule of degree 32
had 1e-2 (variance 4) and 0.4 (variance 16) relative error in E[φ'φ'] for tanh.  Coincident
points (c = 1, the diagonal) are the hardest case: for tanh at k = 1 the error of E[φ'²] is
1e-4 at degree 32, 8e-8 at 48 and 3e-11 at 64.  The default degree 48 is accurate to ~1e-7
everywhere for smooth activations; pass 64 for round-off level (cost
grows as nodes² per kernel entry of inputs with unequal norms; equal-norm inputs use a 1-D
table whose cost does not depend on N, see ``dual_equal_variance``).  Kinks converge only
algebraically, which is why every piecewise-linear activation has a closed form here.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import check_int

__all__ = [
    "Activation", "ReLU", "LeakyReLU", "Abs", "Erf", "GELU", "Sin", "Cos", "Identity",
    "Step", "Tanh", "Sigmoid", "Softplus", "SiLU", "ELU", "Elementwise", "get",
]

_INV_2PI = 1.0 / (2.0 * math.pi)


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


def _safe_sqrt(x: Tensor) -> Tensor:
    """√max(x, 0) with a zero (not infinite) gradient at 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _correlation(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    """(s, c) with s = √(k11 k22) and c = k12 / s clamped to [-1, 1] (c = 0 when s = 0)."""
    prod = k11 * k22
    s = _safe_sqrt(prod)
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    c = torch.where(s > 0, k12 / safe_s, torch.zeros_like(k12 * s))
    return s, snap_correlation(c.clamp(-1.0, 1.0))


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
_RULE_CACHE: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

#: the rule integrates over |z| ≤ L: the neglected Gaussian tail e^{−L²/2}·L² is < 1e-15
_HALF_WIDTH = 9.0
#: node counts grow with √(variance) up to this multiple of ``quadrature_degree``
_MAX_NODE_FACTOR = 8


def _normal_rule(nodes: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes z and weights w with Σ w f(z) ≈ E[f(Z)], Z ~ N(0, 1).

    The trapezoid rule on [−L, L] with ``nodes`` equispaced points (z = 0 among them), weights
    h·pdf(z) normalized to sum to 1.  For f analytic in the strip |Im z| < d the error decays
    like e^{−2πd/h} (Trefethen & Weideman, SIAM Review 2014); Gauss–Hermite spends most of its
    nodes far in the tails, so at equal size this rule is more accurate for the saturating
    activations whose singularities sit close to the real axis (tanh(√k z): d = π/(2√k)).
    """
    key = (nodes, dtype, device)
    if key not in _RULE_CACHE:
        z = np.linspace(-_HALF_WIDTH, _HALF_WIDTH, nodes)
        w = np.exp(-0.5 * z * z)
        w /= w.sum()
        _RULE_CACHE[key] = (torch.as_tensor(z, dtype=dtype, device=device),
                            torch.as_tensor(w, dtype=dtype, device=device))
    return _RULE_CACHE[key]


class Activation(nn.Module):
    """An elementwise activation φ with its dual kernels.

    Subclasses override ``forward`` (the torch function), and optionally ``dual`` /
    ``dual_diag`` with closed forms.  The defaults integrate numerically,
    with ``quadrature_degree`` nodes per axis per unit standard deviation, using
    ``derivative`` for φ'.
    """

    name: str = "activation"
    #: whether ``dual`` is a closed form (False: quadrature)
    closed_form: bool = False

    def __init__(self, quadrature_degree: int = 48) -> None:
        super().__init__()
        self.quadrature_degree = check_int("quadrature_degree", quadrature_degree, minimum=2)

    def _rule(self, k: Tensor, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """The quadrature rule for variances up to max(k): ``quadrature_degree`` nodes per
        unit standard deviation of the pre-activation, i.e. degree·max(1, √k) nodes (odd, so
        z = 0 is a node), at most ``_MAX_NODE_FACTOR``·degree.  Scaling with √k keeps the
        node spacing in u = √k·z fixed, where φ's features (tanh's transition) live.  k_max is
        taken over the call, so a tiled kernel may use different rules for different tiles:
        entries then differ by the quadrature error (measured ≤ 2e-8 relative at degree 48
        between tilings of a depth-3 tanh NTK), never by more."""
        kmax = float(k.detach().amax()) if k.numel() else 1.0
        scale = math.sqrt(kmax) if math.isfinite(kmax) and kmax > 1.0 else 1.0
        nodes = min(math.ceil(self.quadrature_degree * scale), _MAX_NODE_FACTOR * self.quadrature_degree)
        return _normal_rule(nodes | 1, dtype, device)

    def derivative(self, x: Tensor) -> Tensor:
        """φ'(x), by autograd unless a subclass knows it."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True) if not x.requires_grad else x
            y = self.forward(xg)
            (g,) = torch.autograd.grad(y.sum(), xg, create_graph=x.requires_grad)
        return g

    # -- dual kernels --------------------------------------------------------------
    def dual(self, k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
        """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for (u, v) ~ N(0, [[k11, k12], [k12, k22]]).

        Shapes broadcast (typically k11 (N, 1), k12 (N, M), k22 (1, M)).
        """
        return self._quadrature_dual(k11, k12, k22)

    def dual_diag(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """(E[φ(u)²], E[φ'(u)²]) for u ~ N(0, k)."""
        z, w = self._rule(k, k.dtype, k.device)
        u = _safe_sqrt(k).unsqueeze(-1) * z
        t = (self.forward(u) ** 2 * w).sum(-1)
        td = (self.derivative(u) ** 2 * w).sum(-1)
        return t, td

    #: angles in the table of ``dual_equal_variance`` (cubic interpolation error ~ (π/size)⁴)
    table_size: int = 1024

    def dual_equal_variance(self, k: float, k12: Tensor) -> tuple[Tensor, Tensor]:
        """``dual(k, k12, k)`` when both variances equal ``k`` (e.g. inputs of equal norm).

        Closed forms are evaluated directly.  Quadrature activations tabulate T and Ṫ on a
        uniform grid of ``table_size + 1`` angles θ ∈ [0, π] (c = cos θ; both are smooth even
        functions of θ) and interpolate with 4-point cubic Lagrange polynomials: one arccos and
        a dozen products per entry instead of degree² evaluations of φ and φ'.  Interpolation
        error ≲ 1e-10 relative at the default size (far below the quadrature's own error at
        degree 48); not differentiable in k (callers use it only without autograd).
        """
        if self.closed_form:
            kk = torch.full_like(k12, k)
            return self.dual(kk, k12, kk)
        n = self.table_size
        tab_t, tab_td = self._angle_table(float(k), k12.dtype, k12.device)
        u = safe_arccos(k12 / k) * (n / math.pi)
        i = u.floor().clamp_(0, n - 1)
        f = u - i
        idx = i.long() + 1  # position of node i in the padded tables
        # Lagrange weights of nodes i−1, i, i+1, i+2 at offset f ∈ [0, 1]
        wm = -f * (f - 1) * (f - 2) / 6
        w0 = (f + 1) * (f - 1) * (f - 2) / 2
        w1 = -(f + 1) * f * (f - 2) / 2
        w2 = (f + 1) * f * (f - 1) / 6
        out = []
        for tab in (tab_t, tab_td):
            out.append(wm * tab[idx - 1] + w0 * tab[idx] + w1 * tab[idx + 1] + w2 * tab[idx + 2])
        return out[0], out[1]

    def _angle_table(self, k: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """T and Ṫ on the angle grid of ``dual_equal_variance``, padded by one node at each
        end; cached per (k, degree, size, dtype, device), because tiled kernels ask for the
        same layer's table once per row block (it costs (size + 1)·nodes² evaluations)."""
        key = (k, self.quadrature_degree, self.table_size, dtype, device)
        cache = self.__dict__.setdefault("_tables", {})
        if key not in cache:
            n = self.table_size
            theta = torch.linspace(0.0, math.pi, n + 1, dtype=dtype, device=device)
            kk = torch.full_like(theta, k)
            tab_t, tab_td = self._quadrature_dual(kk, k * torch.cos(theta), kk)
            # pad one node beyond each end using evenness in θ (and in 2π − θ at θ = π)
            tab_t = torch.cat([tab_t[1:2], tab_t, tab_t[-2:-1]])
            tab_td = torch.cat([tab_td[1:2], tab_td, tab_td[-2:-1]])
            if len(cache) >= 64:  # a deep network has one table per layer; keep the memory bounded
                cache.pop(next(iter(cache)))
            cache[key] = (tab_t, tab_td)
        return cache[key]

    def _quadrature_dual(self, k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
        # (u, v) = (√k11 z1, √k22 (c z1 + √(1-c²) z2)); loop over z1 nodes to keep the
        # temporaries at (..., degree) instead of (..., degree²).
        z, w = self._rule(torch.maximum(k11.detach().amax(), k22.detach().amax()), k12.dtype, k12.device)
        shape = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
        _, c = _correlation(k11, k12, k22)
        c = c.expand(shape)
        a1 = _safe_sqrt(k11).expand(shape)
        a2 = _safe_sqrt(k22).expand(shape)
        sc = _safe_sqrt(1.0 - c * c)
        n = z.numel()
        if c.numel() * n * n <= 1 << 21:
            # small kernels: all n² nodes at once (the Python loop would dominate)
            u = (a1.unsqueeze(-1) * z).unsqueeze(-1)                                   # (..., n, 1)
            v = a2[..., None, None] * (c[..., None, None] * z[:, None] + sc[..., None, None] * z)
            ww = w[:, None] * w
            t = (self.forward(u) * self.forward(v) * ww).sum((-1, -2))
            td = (self.derivative(u) * self.derivative(v) * ww).sum((-1, -2))
            return t, td
        t = torch.zeros(shape, dtype=k12.dtype, device=k12.device)
        td = torch.zeros_like(t)
        for i in range(n):
            u = a1 * z[i]
            v = a2.unsqueeze(-1) * (c.unsqueeze(-1) * z[i] + sc.unsqueeze(-1) * z)
            pu, dpu = self.forward(u), self.derivative(u)
            pv, dpv = self.forward(v), self.derivative(v)
            t = t + w[i] * pu * (pv * w).sum(-1)
            td = td + w[i] * dpu * (dpv * w).sum(-1)
        return t, td

    def extra_repr(self) -> str:
        return "" if self.closed_form else f"quadrature_degree={self.quadrature_degree}"


# ----------------------------------------------------------------------------- closed forms
class ReLU(Activation):
    """φ(u) = max(u, 0).  Arc-cosine kernel of order 1 (Cho & Saul 2009), no factor 2:

        E[φφ]   = s/(2π) · (√(1−c²) + (π − θ) c)
        E[φ'φ'] = (π − θ)/(2π)
    """

    name = "relu"
    closed_form = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def dual(self, k11, k12, k22):
        s, c = _correlation(k11, k12, k22)
        pi_minus_theta = math.pi - safe_arccos(c)
        t = s * _INV_2PI * (_safe_sqrt(1.0 - c * c) + pi_minus_theta * c)
        return t, pi_minus_theta * _INV_2PI

    def dual_diag(self, k):
        return 0.5 * k, torch.full_like(k, 0.5)


class LeakyReLU(Activation):
    """φ(u) = max(u, 0) + α·min(u, 0) with α = ``negative_slope``.

        E[φφ]   = s/(2π) · ((1−α)² √(1−c²) + ((1+α²)(π−θ) + 2αθ) c)
        E[φ'φ'] = ((1+α²)(π−θ) + 2αθ)/(2π)
    """

    name = "leaky_relu"
    closed_form = True

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if not math.isfinite(float(negative_slope)):
            raise ValueError(f"negative_slope must be finite, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.leaky_relu(x, self.negative_slope)

    def derivative(self, x: Tensor) -> Tensor:
        one = torch.ones_like(x)
        return torch.where(x > 0, one, one * self.negative_slope)

    def dual(self, k11, k12, k22):
        a = self.negative_slope
        s, c = _correlation(k11, k12, k22)
        theta = safe_arccos(c)
        mix = (1 + a * a) * (math.pi - theta) + 2 * a * theta
        t = s * _INV_2PI * ((1 - a) ** 2 * _safe_sqrt(1.0 - c * c) + mix * c)
        return t, mix * _INV_2PI

    def dual_diag(self, k):
        a = self.negative_slope
        return 0.5 * (1 + a * a) * k, torch.full_like(k, 0.5 * (1 + a * a))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Abs(LeakyReLU):
    """φ(u) = |u| (leaky ReLU with slope −1): E[φφ] = s/π (2√(1−c²) + (π − 2θ) c), E[φ'φ'] = 1 − 2θ/π."""

    name = "abs"

    def __init__(self) -> None:
        super().__init__(negative_slope=-1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x.abs()

    def extra_repr(self) -> str:
        return ""


class Erf(Activation):
    """φ(u) = erf(u) (Williams 1997):

        E[φφ]   = (2/π) arcsin(2 k12 / √((1 + 2k11)(1 + 2k22)))
        E[φ'φ'] = (4/π) / √((1 + 2k11)(1 + 2k22) − 4 k12²)
    """

    name = "erf"
    closed_form = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)

    def dual(self, k11, k12, k22):
        a = 1.0 + 2.0 * k11
        b = 1.0 + 2.0 * k22
        t = (2.0 / math.pi) * torch.arcsin((2.0 * k12 / torch.sqrt(a * b)).clamp(-1.0, 1.0))
        # a·b − 4k12² ≥ 1 + 2(k11 + k22) > 0 by Cauchy–Schwarz, so no clamp is needed for PSD input
        td = (4.0 / math.pi) / torch.sqrt(a * b - 4.0 * k12 * k12)
        return t, td

    def dual_diag(self, k):
        a = 1.0 + 2.0 * k
        t = (2.0 / math.pi) * torch.arcsin(2.0 * k / a)
        td = (4.0 / math.pi) / torch.sqrt(1.0 + 4.0 * k)
        return t, td


class GELU(Activation):
    """φ(u) = u Φ(u) (exact GELU); closed-form duals in ``wideNN._gelu`` when available."""

    name = "gelu"

    def __init__(self, quadrature_degree: int = 48) -> None:
        super().__init__(quadrature_degree)
        try:
            from . import _gelu  # noqa: F401
            self.closed_form = True
        except ImportError:  # pragma: no cover - closed form is optional at import time
            self.closed_form = False

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.gelu(x)

    def derivative(self, x: Tensor) -> Tensor:
        cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return cdf + x * pdf

    def dual(self, k11, k12, k22):
        if self.closed_form:
            from ._gelu import gelu_dual
            return gelu_dual(k11, k12, k22)
        return super().dual(k11, k12, k22)

    def dual_diag(self, k):
        if self.closed_form:
            from ._gelu import gelu_dual_diag
            return gelu_dual_diag(k)
        return super().dual_diag(k)


class Sin(Activation):
    """φ(u) = sin(u):  E[φφ] = ½(e^{−(k11+k22−2k12)/2} − e^{−(k11+k22+2k12)/2}),
    E[φ'φ'] = E[cos u cos v] = ½(e^{−(k11+k22−2k12)/2} + e^{−(k11+k22+2k12)/2})."""

    name = "sin"
    closed_form = True
    _sign = -1.0

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.cos(x)

    @staticmethod
    def _pair(k11, k12, k22):
        # written as two decaying exponentials so nothing overflows for large variances
        half = 0.5 * (k11 + k22)
        return 0.5 * torch.exp(k12 - half), 0.5 * torch.exp(-k12 - half)

    def dual(self, k11, k12, k22):
        a, b = self._pair(k11, k12, k22)
        return a + self._sign * b, a - self._sign * b

    def dual_diag(self, k):
        return self.dual(k, k, k)


class Cos(Sin):
    """φ(u) = cos(u):  E[φφ] = ½(e^{−(k11+k22−2k12)/2} + e^{−(k11+k22+2k12)/2}),  E[φ'φ'] = E[sin u sin v]."""

    name = "cos"
    _sign = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return torch.cos(x)

    def derivative(self, x: Tensor) -> Tensor:
        return -torch.sin(x)


class Identity(Activation):
    """φ(u) = u:  E[φφ] = k12,  E[φ'φ'] = 1 (a deep linear network)."""

    name = "identity"
    closed_form = True

    def forward(self, x: Tensor) -> Tensor:
        return x

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def dual(self, k11, k12, k22):
        t = k12 + 0.0 * (k11 + k22)  # broadcast to the joint shape
        return t, torch.ones_like(t)

    def dual_diag(self, k):
        return k, torch.ones_like(k)


class Step(Activation):
    """φ(u) = 1[u > 0] (Heaviside):  E[φφ] = (π − θ)/(2π),  E[φ'φ'] = 0.

    φ' = 0 almost everywhere, so no gradient reaches the layers below a step: the NTK
    recursion keeps only its K term, Θ^{l+1} = K^{l+1}, and the output NTK equals the output
    NNGP (training such a network by gradient descent moves only its readout layer and
    biases of the last layer; the infinite-width dynamics are those of readout-only training).
    """

    name = "step"
    closed_form = True

    def forward(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def dual(self, k11, k12, k22):
        _, c = _correlation(k11, k12, k22)
        t = (math.pi - safe_arccos(c)) * _INV_2PI
        return t, torch.zeros_like(t)

    def dual_diag(self, k):
        return torch.full_like(k, 0.5), torch.zeros_like(k)


# ----------------------------------------------------------------------------- quadrature only
class Tanh(Activation):
    """φ(u) = tanh(u); duals by quadrature."""

    name = "tanh"

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 - torch.tanh(x) ** 2


class Sigmoid(Activation):
    """φ(u) = 1/(1 + e^{−u}); duals by quadrature."""

    name = "sigmoid"

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s)


class Softplus(Activation):
    """φ(u) = log(1 + e^{u}); duals by quadrature."""

    name = "softplus"

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.softplus(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)


class SiLU(Activation):
    """φ(u) = u·σ(u) (swish); duals by quadrature."""

    name = "silu"

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 + x * (1.0 - s))


class ELU(Activation):
    """φ(u) = u for u > 0, α(e^{u} − 1) otherwise; duals by quadrature."""

    name = "elu"

    def __init__(self, alpha: float = 1.0, quadrature_degree: int = 48) -> None:
        super().__init__(quadrature_degree)
        if not math.isfinite(float(alpha)):
            raise ValueError(f"alpha must be finite, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.elu(x, self.alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(x.clamp_max(0.0)))


class Elementwise(Activation):
    """Any elementwise torch function ``fn``; φ' by autograd, duals by quadrature."""

    name = "elementwise"

    def __init__(self, fn: Callable[[Tensor], Tensor], quadrature_degree: int = 48,
                 name: str | None = None) -> None:
        super().__init__(quadrature_degree)
        if not callable(fn):
            raise TypeError(f"Elementwise needs a callable, got {type(fn).__name__}")
        probe = torch.linspace(-2, 2, 5, dtype=torch.float64)
        out = fn(probe)
        if not isinstance(out, Tensor) or out.shape != probe.shape:
            raise ValueError("Elementwise fn must map a tensor to a tensor of the same shape")
        # elementwise: each output depends on its own input only (softmax, cumsum, flip fail)
        one_by_one = torch.cat([fn(probe[i:i + 1]) for i in range(probe.numel())])
        if not torch.allclose(out, one_by_one, rtol=1e-6, atol=1e-9, equal_nan=True):
            raise ValueError("Elementwise fn is not elementwise: fn(x)[i] must depend on x[i] alone")
        self.fn = fn
        if name is not None:
            self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__name__', repr(self.fn))}, {super().extra_repr()}"


_REGISTRY: dict[str, type[Activation]] = {
    cls.name: cls for cls in
    (ReLU, LeakyReLU, Abs, Erf, GELU, Sin, Cos, Identity, Step, Tanh, Sigmoid, Softplus, SiLU, ELU)
}


def get(activation: str | Activation) -> Activation:
    """An ``Activation`` from a name in ``wideNN.activations`` or an ``Activation`` itself."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key not in _REGISTRY:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(_REGISTRY)} or pass wn.activations.Elementwise(fn)")
        return _REGISTRY[key]()
    raise TypeError(f"activation must be a name or a wideNN.activations.Activation, "
                    f"got {type(activation).__name__}")
