"""``Activation``: an elementwise φ that knows its dual kernels, by quadrature unless overridden.

Accuracy of the quadrature fallback: relative error of (E[φφ], E[φ'φ']) in float64 against
nested adaptive quadrature (scipy.integrate.quad), measured 2026-11-22; ``tests/test_activations.py``
checks the tanh rows at variances 1, 4 and 16:

    (k11, k12, k22)     degree   erf             tanh            sigmoid/softplus/silu
    (1, 0.6, 1.4)       16       2e-3 / 6e-3     2e-3 / 1e-2     ≤ 1e-5 / 5e-5
                        32       5e-13 / 3e-12   5e-8 / 4e-7     ≤ 1e-14 / 5e-14
                        48       2e-16 / 1e-15   2e-12 / 3e-11   ≤ 5e-16
                        64       —               1e-16 / 1e-15   —
    (4, 2.4, 5.6)       32       1e-16 / 1e-15   4e-9 / 1e-7     2e-16 / 1e-15
    (16, 9.6, 22.4)     32       3e-16 / 1e-15   7e-10 / 8e-8    3e-16 / 7e-16

A kink defeats the quadrature: for ELU (φ' jumps at 0) it was 2e-5 / 5e-3 at degree 48 and
7e-6 / 2e-3 at 64, and ∂Ṫ/∂k12 (a Dirac delta in φ'') ~30 % off.  ELU therefore has its own
dual (``wideNN._elu``: the sign quadrants in polar coordinates with closed-form radial
integrals), ≲ 1e-13 relative for every α, correlation and variance, with exact gradients.

The node count is degree·max(1, √k_max) (k_max the largest variance in the call, capped at 8×
degree), so the accuracy holds as the variances grow: a fixed Gauss–Hermite rule of degree 32
had 1e-2 (variance 4) and 0.4 (variance 16) relative error in E[φ'φ'] for tanh.  Coincident
points (c = 1, the diagonal) are the hardest case: for tanh at k = 1 the error of E[φ'²] is
1e-4 at degree 32, 8e-8 at 48 and 3e-11 at 64.  The default degree 48 is accurate to ~1e-7
everywhere for smooth activations; pass 64 for round-off level (cost
grows as nodes² per kernel entry of inputs with unequal norms; equal-norm inputs use a 1-D
table whose cost does not depend on N, see ``dual_equal_variance``).  Kinks converge only
algebraically, which is why every piecewise-linear activation in ``wideNN.activations`` (and
ELU) has a closed form, and why ``Elementwise`` checks its accuracy and refuses functions with
kinks or jumps.

Gradients with respect to (k11, k12, k22) — how GPyTorch fits the variances — come from an
explicit backward computed by the same quadrature (Price's theorem, ``wideNN._quadrature``):
memory a few arrays per kernel entry and layer instead of every node's graph (measured 313 KB
→ < 1 KB saved per entry for a depth-3 tanh NNGPKernel), accuracy that of the forward
quadrature for smooth φ.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_int
from . import _angle_table, _mehler
from ._gaussian import HALF_WIDTH, MAX_NODE_FACTOR, normal_rule, safe_sqrt
from ._quadrature import QuadratureDual, gaussian_sums

__all__ = ["Activation"]


def _derivative_of(fn, x: Tensor) -> Tensor:
    """d fn / dx elementwise by autograd (the graph is kept only when x requires grad)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True) if not x.requires_grad else x
        y = fn(xg)
        if not y.requires_grad:  # fn does not depend on x (e.g. a step's derivative)
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(y.sum(), xg, create_graph=x.requires_grad, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


class Activation(nn.Module):
    """An elementwise activation φ with its dual kernels.

    Subclasses override ``forward`` (the torch function), and optionally ``dual`` /
    ``dual_diag`` with closed forms.  The defaults sum Mehler's series (``wideNN._mehler``:
    T = Σ ρ^m a_m(k11) a_m(k22) with φ's Hermite coefficients a_m, to ~1e-15 relative) where it
    converges within its term limit, and otherwise integrate numerically, with
    ``quadrature_degree`` nodes per axis per unit standard deviation, using ``derivative``
    for φ'.
    """

    name: str = "activation"
    #: whether ``dual`` is a closed form (False: quadrature)
    closed_form: bool = False
    #: p with T(λk) = λ^p T(k) and Ṫ(λk) = Ṫ(k) for every λ > 0 (k = (k11, k12, k22)), when the
    #: duals are positively homogeneous (ReLU family and identity: 1, step: 0), else None.  The
    #: kernel recursion then carries a power-of-two scale, so that inputs and layers of any
    #: magnitude give the exact kernel wherever it is representable (``wideNN.analytic``)
    dual_degree: int | None = None

    #: whether analytic kernels of inputs with one common variance interpolate a table of the
    #: duals in the angle (``dual_equal_variance``) instead of evaluating ``dual`` per entry;
    #: None: for the quadrature activations only (the cheap closed forms evaluate directly)
    angle_table: bool | None = None

    def uses_angle_table(self) -> bool:
        """Whether ``dual_equal_variance`` interpolates a table (see ``angle_table``)."""
        return (not self.closed_form) if self.angle_table is None else bool(self.angle_table)
    #: whether ``dual`` may sum Mehler's series (``wideNN._mehler``) for unequal variances
    mehler: bool = True
    #: φ is infinitely differentiable, so the quadrature gradients may use φ'' and φ'''
    #: directly (False: they are taken one derivative lower by Gaussian integration by parts)
    smooth: bool = False

    def __init__(self, quadrature_degree: int = 48) -> None:
        super().__init__()
        self.quadrature_degree = check_int("quadrature_degree", quadrature_degree, minimum=2)

    def _plain_rule(self, k: Tensor, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """The quadrature rule for variances up to max(k): ``quadrature_degree`` nodes per
        unit standard deviation of the pre-activation, i.e. degree·max(1, √k) nodes (odd, so
        z = 0 is a node), at most ``MAX_NODE_FACTOR``·degree.  Scaling with √k keeps the
        node spacing in u = √k·z fixed, where φ's features (tanh's transition) live.  k_max is
        taken over the call, so a tiled kernel may use different rules for different tiles:
        entries then differ by the quadrature error (measured ≤ 2e-8 relative at degree 48
        between tilings of a depth-3 tanh NTK), never by more."""
        kmax = float(k.detach().amax()) if k.numel() else 1.0
        scale = math.sqrt(kmax) if math.isfinite(kmax) and kmax > 1.0 else 1.0
        nodes = min(math.ceil(self.quadrature_degree * scale), MAX_NODE_FACTOR * self.quadrature_degree)
        return normal_rule(nodes | 1, dtype, device)

    #: largest relative error of the duals accepted beyond the node cap (estimated, see below)
    tolerance: float = 1e-6
    #: variances up to this are accurate by construction (the node count is not capped there)
    _checked_up_to: float = float(MAX_NODE_FACTOR ** 2)
    #: the estimate is made on the grid probe_start·probe_factor^j (the first point ≥ the variance)
    probe_start: float = float(MAX_NODE_FACTOR ** 2)
    probe_factor: float = 2.0 ** 0.25

    def _rule(self, k: Tensor, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """``_plain_rule``, after checking its accuracy at the largest variance in ``k``.

        Beyond MAX_NODE_FACTOR² the node count stops growing with √k, and a function that
        changes on the scale of u ~ 1 (tanh's transition) is no longer resolved: tanh's
        E[φ'²] was 0.2 % off at variance 256, 19 % at 1000 and 3500× at 1e10, silently.  So the
        error there is estimated once per grid point (``_check_accuracy``), and a variance whose
        estimate exceeds ``tolerance`` raises ValueError instead.
        """
        kmax = float(k.detach().amax()) if k.numel() else 0.0
        if math.isfinite(kmax) and kmax > self._checked_up_to:
            self._check_accuracy(kmax)
        return self._plain_rule(k, dtype, device)

    def _check_accuracy(self, kmax: float) -> None:
        """Raise ValueError if the estimated quadrature error at variances up to ``kmax``
        (probed on the grid ``probe_start``·``probe_factor``^j up to the first point ≥ kmax)
        exceeds ``tolerance``; remembers the range that passed."""
        v = self.probe_start
        while True:
            if v > self._checked_up_to:
                err = self._probe_error(v)
                if not err <= self.tolerance:
                    raise ValueError(self._accuracy_message(err, v))
                self._checked_up_to = v
            if v >= kmax:
                return
            v *= self.probe_factor

    def _accuracy_message(self, err: float, v: float) -> str:
        return (f"{self.name}: the degree-{self.quadrature_degree} quadrature of its dual kernels has an "
                f"estimated relative error of {err:.2g} at variance {v:g} (tolerance {self.tolerance:g}): "
                f"at pre-activation variances this large φ changes on a scale the rule does not resolve. "
                f"Rescale the inputs (or lower weight_variance), raise quadrature_degree (the accurate "
                f"range grows with its square), or use a closed-form activation (erf, gelu, relu, …)")

    def _probe_error(self, v: float) -> float:
        """max relative difference of (E[φ(u)²], E[φ'(u)²]) at variance v (coincident points:
        the hardest case for the rule, see the table above; 1-D, so a probe costs milliseconds)
        between the rule a kernel call uses and (a) twice the nodes on the same range (a
        transition the rule does not resolve), (b) the same spacing on a range 4 wider (mass
        beyond the range)."""
        f64 = torch.float64
        k = torch.tensor([v], dtype=f64)
        z, _ = self._plain_rule(k, f64, k.device)
        n = z.numel()
        wide = HALF_WIDTH + 4.0
        rules = [(n, HALF_WIDTH), (2 * n - 1, HALF_WIDTH), (int(n * wide / HALF_WIDTH) | 1, wide)]
        sums = []
        with torch.no_grad():
            for m, h in rules:
                zz, ww = normal_rule(m, f64, k.device, h)
                u = math.sqrt(v) * zz
                sums.append([float((self.forward(u) ** 2 * ww).sum()), float((self.derivative(u) ** 2 * ww).sum())])
        got, *refs = sums
        err = 0.0
        for ref in refs:
            for g, r in zip(got, ref):
                e = abs(g - r) / max(abs(r), 1e-300)
                err = max(err, e if math.isfinite(e) else math.inf)
        return err

    def derivative(self, x: Tensor) -> Tensor:
        """φ'(x), by autograd unless a subclass knows it."""
        return _derivative_of(self.forward, x)

    def second_derivative(self, x: Tensor) -> Tensor:
        """φ''(x), used by the backward of the quadrature duals; by autograd of
        ``derivative`` unless a subclass knows it."""
        return _derivative_of(self.derivative, x)

    def third_derivative(self, x: Tensor) -> Tensor:
        """φ'''(x), used by the backward of the quadrature duals when ``smooth`` is True."""
        return _derivative_of(self.second_derivative, x)

    # -- dual kernels --------------------------------------------------------------
    def dual(self, k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
        """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for (u, v) ~ N(0, [[k11, k12], [k12, k22]]).

        Shapes broadcast (typically k11 (N, 1), k12 (N, M), k22 (1, M)).  For that typical
        shape the series of Mehler's formula is summed (``wideNN._mehler``: to ~1e-15 relative,
        where the series is short enough), else the 2-D quadrature of ``quadrature_degree``.
        """
        out = _mehler.dual(self, k11, k12, k22) if self.mehler else None
        return out if out is not None else self._quadrature_dual(k11, k12, k22)

    def dual_diag(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """(E[φ(u)²], E[φ'(u)²]) for u ~ N(0, k) (Mehler's series where ``dual`` uses it, so
        that both agree at coincident points; else the 1-D quadrature)."""
        out = _mehler.dual_diag(self, k) if self.mehler else None
        if out is not None:
            return out
        z, w = self._rule(k, k.dtype, k.device)
        u = safe_sqrt(k).unsqueeze(-1) * z
        t = (self.forward(u) ** 2 * w).sum(-1)
        td = (self.derivative(u) ** 2 * w).sum(-1)
        return t, td

    #: angles in the table of ``dual_equal_variance`` (cubic interpolation error ~ (π/size)⁴)
    table_size: int = 1024

    def dual_equal_variance(self, k: float | Tensor, k12: Tensor) -> tuple[Tensor, Tensor]:
        """``dual(k, k12, k)`` when both variances equal ``k`` (e.g. inputs of equal norm).

        Closed forms are evaluated directly (unless ``angle_table``).  Quadrature activations
        (and closed forms with ``angle_table``, whose ``dual`` is expensive) tabulate T and Ṫ on a
        uniform grid of ``table_size + 1`` angles θ ∈ [0, π] (c = cos θ; both are smooth
        functions of θ, even at 0 and π unless ``even_in_angle`` is False) and interpolate with
        4-point cubic Lagrange polynomials: one arccos and a dozen products per entry instead of
        degree² evaluations of φ and φ'.  Interpolation error ≲ 1e-10 relative at the default
        size (far below the quadrature's own error at degree 48; ELU's 4096 angles: ≤ 4e-13).
        ``k`` may be a 0-d tensor carrying a gradient (fitted variances): a quadrature
        activation's derivatives in k and k12 are then tabulated too (``wideNN._angle_table``);
        a closed form evaluates ``dual`` with its own exact backward.
        """
        grad = isinstance(k, Tensor) and torch.is_grad_enabled() and (k.requires_grad or k12.requires_grad)
        if not self.uses_angle_table() or (grad and self.closed_form):
            kk = k.reshape(()).expand_as(k12) if isinstance(k, Tensor) else torch.full_like(k12, float(k))
            return self.dual(kk, k12, kk)
        if grad:
            return _angle_table.EqualVarianceDual.apply(self, k.reshape(()), k12)
        kappa = float(k)
        tables = self._angle_table(kappa, k12.dtype, k12.device)
        t, td = _angle_table.interpolate(tables, kappa, k12, self.table_size)
        return t, td

    def _angle_table(self, k: float, dtype: torch.dtype, device: torch.device,
                     derivatives: bool = False) -> tuple[Tensor, ...]:
        """T and Ṫ (or with ``derivatives`` their four derivatives, ``wideNN._angle_table``) on
        the angle grid of ``dual_equal_variance``, padded by one node at each end; cached per
        (k, degree, size, dtype, device), because tiled kernels ask for the same layer's table
        once per row block (it costs (size + 1)·nodes² evaluations)."""
        key = (k, self.quadrature_degree, self.table_size, dtype, device, derivatives)
        cache = self.__dict__.setdefault("_tables", {})
        if key not in cache:
            make = _angle_table.derivative_tables if derivatives else _angle_table.value_tables
            if len(cache) >= 64:  # a deep network has one table per layer; keep the memory bounded
                cache.pop(next(iter(cache)))
            cache[key] = make(self, k, dtype, device)
        return cache[key]

    #: T and Ṫ are even functions of θ at 0 and π (φ' continuous); False when φ' jumps (Ṫ then
    #: has a term linear in θ, as ReLU's (π − θ)/2π)
    even_in_angle: bool = True

    def _pad_table(self, tab: Tensor) -> Tensor:
        """One node beyond each end of an angle table: by evenness in θ (and in 2π − θ at
        θ = π), or by cubic extrapolation when ``even_in_angle`` is False."""
        if self.even_in_angle:
            return torch.cat([tab[1:2], tab, tab[-2:-1]])
        first = 4 * tab[0:1] - 6 * tab[1:2] + 4 * tab[2:3] - tab[3:4]
        last = 4 * tab[-1:] - 6 * tab[-2:-1] + 4 * tab[-3:-2] - tab[-4:-3]
        return torch.cat([first, tab, last])

    def _quadrature_dual(self, k11: Tensor, k12: Tensor, k22: Tensor,
                         rule: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        # (u, v) = (√k11 z1, √k22 (c z1 + √(1-c²) z2)) on the product rule; under autograd the
        # gradient comes from Price's theorem by the same quadrature (``wideNN._quadrature``),
        # so no node's intermediate values are stored.
        if rule is None:
            rule = self._rule(torch.maximum(k11.detach().amax(), k22.detach().amax()),
                              k12.dtype, k12.device)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (k11, k12, k22)):
            return QuadratureDual.apply(self, rule, k11, k12, k22)
        t, td = gaussian_sums(self, k11, k12, k22, [("f", "f"), ("d1", "d1")], rule)
        return t, td

    def extra_repr(self) -> str:
        return "" if self.closed_form else f"quadrature_degree={self.quadrature_degree}"
