"""Activations and their dual kernels.

Each activation is a parameter-free ``nn.Module`` (so it sits directly inside a finite
network) that also knows its *dual kernels*: for (u, v) ~ N(0, [[k11, k12], [k12, k22]]),

    T(k11, k12, k22)  = E[φ(u) φ(v)]        (drives the NNGP recursion)
    Ṫ(k11, k12, k22)  = E[φ'(u) φ'(v)]      (drives the NTK recursion)

and their diagonal versions (u = v ~ N(0, k)).  Closed forms are used where they exist;
everything else falls back to a quadrature of configurable degree (a trapezoid rule in
the standard-normal variable whose node count grows with √variance, ``wideNN._gaussian.normal_rule``).

Notation used in the closed forms: s = √(k11 k22), c = k12 / s (clamped to [-1, 1]),
θ = arccos c.

The base class, with the quadrature used when no closed form is known (and its measured
accuracy), is in ``wideNN._activation_base``; the bivariate-normal helpers in ``wideNN._gaussian``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ._activation_base import Activation
from ._elu import elu_dual, elu_dual_diag
from ._gelu import gelu_dual, gelu_dual_diag
from ._checks import check_positive, real_number
from ._gaussian import (HALF_WIDTH, INV_2PI, correlation, normal_rule, safe_arccos, safe_sqrt,
                        shifted_gram, snap_correlation)
from ._scaling import ldexp

__all__ = [
    "Activation", "ReLU", "LeakyReLU", "Abs", "Erf", "GELU", "Sin", "Cos", "Identity",
    "Step", "Tanh", "Sigmoid", "Softplus", "SiLU", "ELU", "Elementwise", "get",
    "safe_arccos", "snap_correlation",
]


# ----------------------------------------------------------------------------- closed forms
class ReLU(Activation):
    """φ(u) = max(u, 0).  Arc-cosine kernel of order 1 (Cho & Saul 2009), no factor 2:

        E[φφ]   = s/(2π) · (√(1−c²) + (π − θ) c)
        E[φ'φ'] = (π − θ)/(2π)
    """

    name = "relu"
    closed_form = True
    dual_degree = 1

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def dual(self, k11, k12, k22):
        s, c = correlation(k11, k12, k22)
        pi_minus_theta = math.pi - safe_arccos(c)
        t = s * INV_2PI * (safe_sqrt(1.0 - c * c) + pi_minus_theta * c)
        return t, pi_minus_theta * INV_2PI

    def dual_diag(self, k):
        return 0.5 * k, torch.full_like(k, 0.5)


class LeakyReLU(Activation):
    """φ(u) = max(u, 0) + α·min(u, 0) with α = ``negative_slope``.

        E[φφ]   = s/(2π) · ((1−α)² √(1−c²) + ((1+α²)(π−θ) + 2αθ) c)
        E[φ'φ'] = ((1+α²)(π−θ) + 2αθ)/(2π)
    """

    name = "leaky_relu"
    closed_form = True
    dual_degree = 1

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
        s, c = correlation(k11, k12, k22)
        theta = safe_arccos(c)
        mix = (1 + a * a) * (math.pi - theta) + 2 * a * theta
        t = s * INV_2PI * ((1 - a) ** 2 * safe_sqrt(1.0 - c * c) + mix * c)
        return t, mix * INV_2PI

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
    """φ(u) = erf(u) (Williams 1997), for inputs of any size (``dual_scaled``):

        E[φφ]   = (2/π) arcsin(2 k12 / √((1 + 2k11)(1 + 2k22))) = (2/π) atan2(2 k12, √D)
        E[φ'φ'] = (4/π) / √D,   D = (1 + 2k11)(1 + 2k22) − 4 k12²

    Evaluated through ``wideNN._gaussian.shifted_gram`` (D/((1+2k11)(1+2k22)) from bounded
    ratios: no overflow before the result, and no cancellation between (1+2k)² and 4k12², which
    left nothing of D ≈ 1 + 4k at coincident points once k ≳ 1/ε); the atan2 form keeps T
    accurate where the arcsin argument rounds to 1.
    """

    name = "erf"
    closed_form = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)

    #: up to this variance D is formed directly: its cancellation costs ≤ ε·k/4 relative
    direct_up_to: float = 256.0

    def dual(self, k11, k12, k22):
        top = float(torch.maximum(k11.detach().amax(), k22.detach().amax())) if k11.numel() else 0.0
        if top <= self.direct_up_to:  # (the common case: 2.4× faster under autograd)
            d = torch.clamp_min((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22) - 4.0 * k12 * k12, 0.5)
            root_d = torch.sqrt(d)  # D ≥ 1 + 2k11 + 2k22 on the PSD cone: the floor is a guard only
            return (2.0 / math.pi) * torch.atan2(2.0 * k12, root_d), (4.0 / math.pi) / root_d
        r, q = shifted_gram(2.0 * k11, 2.0 * k12, 2.0 * k22)  # √((1+2k11)(1+2k22)) and D/that²
        root_q = torch.sqrt(q)
        t = (2.0 / math.pi) * torch.atan2(2.0 * k12 / r, root_q)
        return t, (4.0 / math.pi) / (r * root_q)

    def dual_diag(self, k):
        root_d = torch.sqrt(1.0 + 4.0 * k)  # D = (1 + 2k)² − 4k²
        t = (2.0 / math.pi) * torch.atan2(2.0 * k, root_d)
        return t, (4.0 / math.pi) / root_d

    def dual_scaled(self, k11, k12, k22, e2: int):
        """(T, 2^E·Ṫ) of the variances 2^E·k (E = ``e2``, even; every variance ≥ 2^60:
        ``wideNN._large_inputs``).

        D = (1+2k11)(1+2k22) − 4k12² = 2^2E (4G̃ + 2^-E m + 2^-2E) with G̃ = k̃11k̃22 − k̃12² and
        m = 2(k̃11 + k̃22):
        where 4G̃ dominates 2^-E m by 2^60, √D = 2^E·2√G̃ (the 1's are below round-off);
        elsewhere (coincident points, G̃ = 0) √D = 2^(E/2)·√(2^E·4G̃ + m)."""
        _, c = correlation(k11, k12, k22)
        u = torch.where(c.abs() == 1.0, torch.zeros_like(k12), 4.0 * (k11 * k22 - k12 * k12))
        m = 2.0 * (k11 + k22)
        far = u > ldexp(m, 60 - e2)
        u_far = torch.where(far, u, torch.ones_like(u))
        near = torch.where(far, torch.ones_like(u), ldexp(torch.clamp_min(u, 0.0), e2) + m)
        root_far, root_near = torch.sqrt(u_far), torch.sqrt(near)
        t = (2.0 / math.pi) * torch.where(far, torch.atan2(2.0 * k12, root_far),
                                          torch.atan2(2.0 * k12, ldexp(root_near, -(e2 // 2))))
        td = (4.0 / math.pi) * torch.where(far, 1.0 / root_far, ldexp(1.0 / root_near, e2 // 2))
        return t, td

    def dual_diag_scaled(self, k, e2: int):
        return self.dual_scaled(k, k, k, e2)


class GELU(Activation):
    """φ(u) = u Φ(u) (exact GELU); closed-form duals in ``wideNN._gelu``."""

    name = "gelu"
    closed_form = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.gelu(x)

    def derivative(self, x: Tensor) -> Tensor:
        cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return cdf + x * pdf

    def dual(self, k11, k12, k22):
        return gelu_dual(k11, k12, k22)

    def dual_diag(self, k):
        return gelu_dual_diag(k)


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
        half = 0.5 * k11 + 0.5 * k22  # (k11 + k22) could overflow
        return 0.5 * torch.exp(k12 - half), 0.5 * torch.exp(-k12 - half)

    def dual(self, k11, k12, k22):
        a, b = self._pair(k11, k12, k22)
        odd, even = a - b, a + b  # e^{−half} sinh(k12), e^{−half} cosh(k12)
        # for |k12| < 1 the difference a − b cancels (to 0 for tiny variances): use sinh
        small = k12.abs() < 1
        half = 0.5 * k11 + 0.5 * k22
        safe = torch.where(small, k12, torch.zeros_like(k12))
        odd = torch.where(small, torch.exp(-half) * torch.sinh(safe), odd)
        return (odd, even) if self._sign < 0 else (even, odd)

    def dual_diag(self, k):
        return self.dual(k, k, k)

    def dual_scaled(self, k11, k12, k22, e2: int):
        """(T, 2^E·Ṫ) of the variances 2^E·k (``wideNN._large_inputs``: every variance ≥ 2^60):
        the exponents Var(u ∓ v)/2 = 2^(E−1)(k̃11 + k̃22 ∓ 2k̃12) are 0 at (anti-)coincident points;
        elsewhere they exceed 745 (e^{−Var/2} underflows) unless the inputs agree to ~2^-27
        relative, finer than x·x' resolves them.  So ½e^{−Var/2} is exactly ½ (correlation ±1
        and equal variances) or 0, with derivative 0 (Var(u − v) is quadratic in x − x')."""
        _, c = correlation(k11, k12, k22)
        same = (c == 1.0) & (k11 == k22)
        opposite = (c == -1.0) & (k11 == k22)
        a = 0.5 * same.to(k12.dtype)
        b = 0.5 * opposite.to(k12.dtype)
        odd, even = a - b, a + b
        t, td = (odd, even) if self._sign < 0 else (even, odd)
        return t, ldexp(td, e2)

    def dual_diag_scaled(self, k, e2: int):
        return self.dual_scaled(k, k, k, e2)


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
    dual_degree = 1

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
    dual_degree = 0

    def forward(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def dual(self, k11, k12, k22):
        _, c = correlation(k11, k12, k22)
        t = (math.pi - safe_arccos(c)) * INV_2PI
        return t, torch.zeros_like(t)

    def dual_diag(self, k):
        return torch.full_like(k, 0.5), torch.zeros_like(k)


class ELU(Activation):
    """φ(u) = u for u > 0, α(e^{u} − 1) otherwise; duals in closed form up to a 1-D rule
    (``wideNN._elu``: the four sign quadrants in polar coordinates, radial integrals in closed
    form), accurate to ~1e-13 relative for every α, correlation and variance, with an exact
    closed-form gradient in (k11, k12, k22).  Inputs of one common variance interpolate a table
    in the angle (``table_size`` = 4096, measured ≤ 1e-12 relative).  ``quadrature_degree`` is
    accepted for compatibility and used only by the generic ``_quadrature_dual``."""

    name = "elu"
    closed_form = True
    angle_table = True
    table_size = 4096
    even_in_angle = False  # φ' jumps at 0 when α ≠ 1

    def __init__(self, alpha: float = 1.0, quadrature_degree: int = 48) -> None:
        super().__init__(quadrature_degree)
        alpha = real_number("alpha", alpha)
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.elu(x, self.alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(x.clamp_max(0.0)))

    def second_derivative(self, x: Tensor) -> Tensor:
        # a jump at 0 (and a Dirac delta in φ'' when α ≠ 1): ``smooth`` stays False, so the
        # generic quadrature gradients integrate by parts instead of using the third derivative
        return torch.where(x > 0, torch.zeros_like(x), self.alpha * torch.exp(x.clamp_max(0.0)))

    def dual(self, k11, k12, k22):
        return elu_dual(k11, k12, k22, self.alpha)

    def dual_diag(self, k):
        return elu_dual_diag(k, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


# ----------------------------------------------------------------------------- quadrature only
# Large variances: the quadrature resolves φ(√k z) only up to variances of order 100 (tanh);
# beyond, the accuracy check raises ValueError with the estimated error (``Activation._rule``),
# and inputs whose first-layer kernel overflows get the first-layer error: no large-input limit
# is substituted (erf, sin and cos, with closed forms, accept any input size).
class Tanh(Activation):
    """φ(u) = tanh(u); duals by quadrature.  Pre-activation variances beyond what the rule
    resolves (~100) raise ValueError with the estimated relative error, as do inputs whose
    first-layer kernel overflows; use ``Erf`` (closed form, any size) for a saturating φ there."""

    name = "tanh"
    smooth = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 - torch.tanh(x) ** 2

    def second_derivative(self, x: Tensor) -> Tensor:
        t = torch.tanh(x)
        return -2.0 * t * (1.0 - t * t)

    def third_derivative(self, x: Tensor) -> Tensor:
        t = torch.tanh(x)
        d = 1.0 - t * t
        return d * (4.0 * t * t - 2.0 * d)


class Sigmoid(Activation):
    """φ(u) = 1/(1 + e^{−u}); duals by quadrature (large variances: as ``Tanh``)."""

    name = "sigmoid"
    smooth = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s)

    def second_derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s) * (1.0 - 2.0 * s)

    def third_derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        p = s * (1.0 - s)
        return p * ((1.0 - 2.0 * s) ** 2 - 2.0 * p)


class Softplus(Activation):
    """φ(u) = log(1 + e^{u}); duals by quadrature (large variances: as ``Tanh``)."""

    name = "softplus"
    smooth = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.softplus(x)

    def derivative(self, x: Tensor) -> Tensor:
        # torch's softplus is exactly linear above its threshold (20), so its derivative is 1 there
        return torch.where(x > 20.0, torch.ones_like(x), torch.sigmoid(x))

    def second_derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s)

    def third_derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s) * (1.0 - 2.0 * s)


class SiLU(Activation):
    """φ(u) = u·σ(u) (swish); duals by quadrature (large variances: as ``Tanh``)."""

    name = "silu"
    smooth = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 + x * (1.0 - s))

    def second_derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))

    def third_derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        p = s * (1.0 - s)
        q = 1.0 - 2.0 * s
        return p * (q * (2.0 + x * q) + q - 2.0 * x * p)


class Elementwise(Activation):
    """Any elementwise torch function ``fn``; φ' by autograd, duals by quadrature.

    The quadrature is accurate for smooth φ of moderate growth; a kink or a jump (relu, abs,
    hardtanh, sign, …) converges only algebraically, and fast growth (exp at large variance)
    leaves mass outside the rule's range.  So every accepted function is checked: the duals
    at probe variances (1/4 up to the largest seen, in factors of 4; correlations 1, ±½, and
    unequal variances) are compared with a rule of 4× the nodes on a wider range, and a
    relative difference above ``tolerance`` (default 1e-6, the accuracy documented for the
    built-in quadrature activations at degree 48) raises ``ValueError`` naming the estimate —
    at construction for variances up to 4, and at first use of any larger variance.  Use the
    closed-form activations (``ReLU``, ``LeakyReLU``, ``Abs``, ``Step``, …) for piecewise-linear
    functions, or raise ``quadrature_degree`` / ``tolerance`` deliberately.
    """

    name = "elementwise"
    #: variances up to this are checked at construction
    checked_variance: float = 4.0

    def __init__(self, fn: Callable[[Tensor], Tensor], quadrature_degree: int = 48,
                 name: str | None = None, tolerance: float = 1e-6) -> None:
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
        self.tolerance = check_positive("tolerance", tolerance)
        self._checked_up_to = 0.0
        self._check_accuracy(self.checked_variance)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    #: every variance is checked, on the grid 1/4, 1, 4, … (see ``Activation._rule``)
    probe_start: float = 0.25
    probe_factor: float = 4.0

    def _probe_error(self, v: float) -> float:
        """As ``Activation._probe_error``, on the bivariate rule at correlations 1 and ½ (a jump
        of φ shows off the diagonal too)."""
        f64 = torch.float64
        k11 = torch.tensor([v, v], dtype=f64)
        k12 = torch.tensor([v, v / 2], dtype=f64)
        z, _ = self._plain_rule(k11, f64, k11.device)  # the rule a kernel call uses
        n = z.numel()
        wide = HALF_WIDTH + 4.0
        rules = [(n, HALF_WIDTH), (2 * n - 1, HALF_WIDTH), (int(n * wide / HALF_WIDTH) | 1, wide)]
        with torch.no_grad():
            got, *refs = [self._quadrature_dual(k11, k12, k11, rule=normal_rule(m, f64, k11.device, h))
                          for m, h in rules]
        err = 0.0
        for ref in refs:
            for g, r in zip(got, ref):
                scale = r[0].abs().clamp_min(1e-300)  # the diagonal bounds every entry (Cauchy–Schwarz)
                e = float(((g - r).abs() / scale).max())
                err = max(err, e if math.isfinite(e) else math.inf)
        return err

    def _accuracy_message(self, err: float, v: float) -> str:
        return (f"Elementwise({_fn_name(self.fn)}): the degree-{self.quadrature_degree} "
                f"quadrature of its dual kernels has an estimated relative error of "
                f"{err:.2g} at variance {v:g} (tolerance {self.tolerance:g}); the function "
                f"likely has a kink or a jump (use a closed form: wn.activations.ReLU, "
                f"LeakyReLU, Abs, Step, …) or grows too fast for Gaussian quadrature at "
                f"this variance.  Raise quadrature_degree, or tolerance= to accept it")

    def extra_repr(self) -> str:
        return f"fn={_fn_name(self.fn)}, {super().extra_repr()}"


def _fn_name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


_REGISTRY: dict[str, type[Activation]] = {
    cls.name: cls for cls in
    (ReLU, LeakyReLU, Abs, Erf, GELU, Sin, Cos, Identity, Step, Tanh, Sigmoid, Softplus, SiLU, ELU)
}
#: the activation names ``get`` accepts (case-insensitive)
NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))


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
