r"""Closed-form dual kernels of the (exact, erf-based) GELU activation.

GELU is :math:`\phi(u) = u\,\Phi(u)` with :math:`\Phi` the standard normal CDF
(``torch.nn.functional.gelu(x, approximate="none")``); its derivative is
:math:`\phi'(u) = \Phi(u) + u\,\varphi(u)` with :math:`\varphi` the standard
normal pdf.  For :math:`(u, v) \sim N(0, [[k_{11}, k_{12}], [k_{12}, k_{22}]])`
this module computes

.. math::

    T   = E[\phi(u)\phi(v)],\qquad  \dot T = E[\phi'(u)\phi'(v)].

Closed forms
------------
Write :math:`S = (1+k_{11})(1+k_{22})`, :math:`D = S - k_{12}^2
= 1 + k_{11} + k_{22} + (k_{11}k_{22} - k_{12}^2)` and
:math:`A = \arcsin(k_{12}/\sqrt S) = \operatorname{atan2}(k_{12}, \sqrt D)`.
Then

.. math::

    T &= \frac{k_{12}}{4} + \frac{k_{12} A}{2\pi}
         + \frac{k_{11}k_{22} D + k_{12}^2}{2\pi\, S \sqrt D}, \\
    \dot T &= \frac14 + \frac{A}{2\pi}
         + \frac{k_{12}\,[(3 + k_{11} + k_{22}) D + k_{12}^2]}{2\pi\, S\, D^{3/2}}.

On the diagonal (:math:`k_{11}=k_{12}=k_{22}=k`, so :math:`D = 1+2k`,
:math:`A = \arcsin(k/(1+k))`):

.. math::

    E[\phi(u)^2]  &= \frac k4 + \frac{kA}{2\pi} + \frac{k^2}{\pi(1+k)\sqrt{1+2k}},\\
    E[\phi'(u)^2] &= \frac14 + \frac{A}{2\pi} + \frac{k(3+5k)}{2\pi(1+k)(1+2k)^{3/2}}.

Derivation (own; the result agrees with the GELU kernel of Tsuchida, Pearce,
van der Heide, Roosta & Gallagher, "Avoiding kernel fixed points: computing
with ELU and GELU infinite networks", AAAI 2021):

* :math:`\Phi(u)\Phi(v) = P(a \le u, b \le v \mid u, v)` with
  :math:`a, b \sim N(0,1)` independent of :math:`(u, v)`, so
  :math:`T = E[u v\, 1\{p>0, q>0\}]` with :math:`p = u-a`, :math:`q = v-b`,
  :math:`\operatorname{Var} p = 1+k_{11}`, :math:`\operatorname{Var} q = 1+k_{22}`,
  :math:`\operatorname{Cov}(p,q) = k_{12}`, correlation :math:`\rho = k_{12}/\sqrt S`.
* Regress :math:`u, v` on the standardized :math:`X = (p/s_1, q/s_2)` (correlation
  matrix :math:`R`): :math:`u = c^\top X + e_1`, :math:`v = d^\top X + e_2` with
  residuals independent of :math:`X`.  With the orthant moments
  :math:`P = 1/4 + \arcsin\rho/(2\pi)` and
  :math:`E[XX^\top 1\{X>0\}] = P R + \frac{\sqrt{1-\rho^2}}{2\pi}[[\rho,1],[1,\rho]]`,
  :math:`T = k_{12} P + \frac{\sqrt{1-\rho^2}}{2\pi} c^\top [[\rho,1],[1,\rho]] d`,
  which simplifies (using :math:`R^{-1}[[\rho,1],[1,\rho]] = [[0,1],[1,0]]`) to the
  expression above.
* :math:`\dot T = \partial T / \partial k_{12}` by Price's theorem
  (R. Price, IRE Trans. Inf. Theory 1958: :math:`\partial_{k_{12}} E[f(u)g(v)]
  = E[f'(u)g'(v)]` at fixed variances), using :math:`\partial_{k_{12}} A = D^{-1/2}`.

Numerics
--------
For any positive semi-definite input :math:`D \ge 1 + k_{11} + k_{22} \ge 1`, so
the formulas have no singularity at coincident points (:math:`k_{12}^2 =
k_{11}k_{22}`, :math:`|\rho_{uv}| = 1`): the GELU kernels are real-analytic in
:math:`(k_{11}, k_{12}, k_{22})` on a neighbourhood of the PSD cone, including at
:math:`k \to 0` (no :math:`\sqrt{k}` appears).  Inputs slightly outside the
cone because of rounding are therefore handled by the smooth analytic
continuation (a hard clamp of :math:`k_{12}` would put a kink into the
gradient exactly at coincident points).

:math:`S` and :math:`D` themselves overflow for variances ~1e154 (float64; ~1e19
in float32), and :math:`D = S - k_{12}^2` loses everything to cancellation at
coincident points once :math:`k \gtrsim 1/\varepsilon`.  So where products of
four variances could overflow (:math:`k > 2^{255} \approx 6\cdot 10^{76}` in float64,
:math:`2^{31}` in float32; below that the direct form above is used, faster under
autograd and equal to round-off) the formulas are evaluated in bounded, scale-free
quantities: with :math:`a_i = 1 + k_{ii}`,
:math:`r = \sqrt{a_1}\sqrt{a_2} = \sqrt S`, :math:`\rho = k_{12}/r`,
:math:`\beta = (k_{11}/a_1)(k_{22}/a_2)` and :math:`q = D/S = 1 - \rho^2` formed as
:math:`1/a_1 + 1/a_2 - 1/(a_1a_2) + [(k_{11}/a_1)(k_{22}/a_2) - (k_{12}/a_1)(k_{12}/a_2)]`
(``wideNN._gaussian.shifted_gram``; exactly :math:`1/a_1 + 1/a_2 - 1/(a_1 a_2)`
at coincident points),

.. math::

    P = \tfrac14 + \tfrac{1}{2\pi}\operatorname{atan2}(\rho, \sqrt q),\quad
    T = k_{12} P + \tfrac{1}{2\pi}\Big(\beta\, r \sqrt q + \frac{\rho^2}{r\sqrt q}\Big),\quad
    \dot T = P + \tfrac{1}{2\pi}\Big(\frac{\rho\,\gamma}{\sqrt q}
              + \frac{\rho^3}{r^2 q^{3/2}}\Big),

:math:`\gamma = (3 + k_{11} + k_{22})/S = 1/a_1 + 1/a_2 + 1/(a_1a_2)`.  No
intermediate overflows before the result does (T ≈ k/2 up to the float range: the
ReLU limit, GELU − ReLU being bounded), and divisions instead of products with :math:`1/a`
keep the forward free of :math:`k \cdot k`.
Gradients do not go through these expressions: at coincident points the partial derivatives
(true size :math:`O(1/\sqrt k)`) would come from cancelling :math:`O(\sqrt k)` terms, and
the graph overflows near the top of the float range.  Above variance 1024 (and inside torch.func
transforms) ``gelu_dual`` is an ``autograd.Function`` whose backward and forward-mode derivative
are the exact partials of ``wideNN._gelu_grad`` (Price's theorem, in bounded ratios):
accurate to round-off relative to themselves and finite wherever the kernel is; up to
variance 1024 autograd differentiates the direct form (faster; cancellation ≤ 1024·ε).
As a guard against invalid input only, :math:`1+k_{ii}` is floored at 1/2 and
:math:`q` at half its PSD lower bound — inactive on the valid domain up to
rounding, so autograd gradients there are the exact analytic ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._gaussian import correlation, shifted_gram
from ._gelu_grad import gelu_partials

__all__ = ["gelu_dual", "gelu_dual_diag"]

_INV_2PI = 1.0 / (2.0 * math.pi)
_INV_PI = 1.0 / math.pi
# Floor for D and 1 + k (see module docstring): never active for valid kernels.
_FLOOR = 0.5


def _as_float_tensors(*xs):
    ts = [torch.as_tensor(x) for x in xs]
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return [t.to(dtype) for t in ts]


def gelu_dual(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    r"""Dual kernels of GELU for a bivariate centred Gaussian.

    Args:
        k11, k22: variances of ``u`` and ``v``; k12: their covariance.  Any
            broadcastable shapes (typically ``(N, 1)``, ``(N, M)``, ``(1, M)``).

    Returns:
        ``(T, Td)`` with ``T = E[gelu(u) gelu(v)]`` and
        ``Td = E[gelu'(u) gelu'(v)]``, both of the broadcast shape.  See the
        module docstring for the formulas, their derivation and the scaled
        form used for large variances (finite for every representable kernel).
    """
    k11, k12, k22 = _as_float_tensors(k11, k12, k22)
    grad = torch.is_grad_enabled() and any(k.requires_grad for k in (k11, k12, k22))
    if not grad and not any(torch._C._functorch.is_functorch_wrapped_tensor(k) for k in (k11, k12, k22)):
        return _gelu_values(k11, k12, k22)  # (values only: no derivative to take)
    if grad and _top(k11, k22) <= _AUTOGRAD_UP_TO:
        # autograd through the direct form: 3× faster than the explicit backward, and its
        # cancellation at coincident points costs ≤ k·ε ≈ 2e-13 relative up to here
        return _gelu_dual_direct(k11, k12, k22)
    return _GeluDual.apply(k11, k12, k22)


#: largest variance whose gradient autograd takes through the direct closed form
_AUTOGRAD_UP_TO = 1024.0


def _top(k11: Tensor, k22: Tensor) -> float:
    return float(torch.maximum(k11.detach().amax(), k22.detach().amax())) if k11.numel() else 0.0


def _gelu_values(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    # the direct form where products of four variances cannot overflow (faster, same numbers)
    if _top(k11, k22) <= 2.0 ** int(0.25 * math.log2(torch.finfo(k11.dtype).max)):
        return _gelu_dual_direct(k11, k12, k22)
    return _gelu_dual_scaled(k11, k12, k22)


def _reduce(g: Tensor, like: Tensor) -> Tensor:
    """A gradient of the broadcast shape summed back to an input's shape."""
    return g if g.shape == like.shape else g.sum_to_size(like.shape)


def _coincident(k11: Tensor, k12: Tensor, k22: Tensor) -> Tensor:
    """k12, with pairs within a few ulps of correlation ±1 made exactly (anti-)coincident.

    The recursion computes a point's own variance (``gelu_dual_diag``) and its covariance with
    itself (``gelu_dual``) by different roundings: a few ulps apart, k11k22 − k12² is ~k²ε
    instead of 0 (even negative), which leaves the values at round-off but makes every partial
    derivative, which depends on D = 1 + k11 + k22 + k11k22 − k12² ~ k, meaningless (the
    gradient of a depth-2 kernel at inputs ~1e10 came out 1e18× too large).  Values and partials
    are taken at the coincident point; the change is below the rounding already present."""
    _, c = correlation(k11, k12, k22)  # snapped to ±1 within 8 ulps, and clamped
    edge = c.abs() == 1.0
    if not bool(edge.any()):
        return k12
    mean = torch.where(k11 == k22, k11, torch.sqrt(k11) * torch.sqrt(k22))
    return torch.where(edge, c * mean, k12)


class _GeluDual(torch.autograd.Function):
    """(T, Ṫ) with the exact partial derivatives of ``wideNN._gelu_grad`` as backward (and as
    forward-mode derivative): autograd through the closed form cancels O(√k) terms at coincident
    points (no digits left from variances ~1e16 on, NaN near the top of the float range), and
    stores every intermediate.  Composes with torch.func (vmap rule generated; jvp given)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(k11, k12, k22):  # type: ignore[override]
        return _gelu_values(k11, _coincident(k11, k12, k22), k22)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs, output[1])
        ctx.save_for_forward(*inputs, output[1])

    @staticmethod
    def backward(ctx, g_t, g_td):  # type: ignore[override]
        k11, k12, k22, td = ctx.saved_tensors
        t1, t2, td1, td12, td2 = gelu_partials(k11, _coincident(k11, k12, k22), k22)
        grads = (g_t * t1 + g_td * td1, g_t * td + g_td * td12, g_t * t2 + g_td * td2)
        return tuple(_reduce(g, k) if need else None
                     for g, k, need in zip(grads, (k11, k12, k22), ctx.needs_input_grad))

    @staticmethod
    def jvp(ctx, d11, d12, d22):  # type: ignore[override]
        k11, k12, k22, td = ctx.saved_tensors
        t1, t2, td1, td12, td2 = gelu_partials(k11, _coincident(k11, k12, k22), k22)
        d11, d12, d22 = (torch.zeros_like(k) if d is None else d for d, k in zip((d11, d12, d22), (k11, k12, k22)))
        return t1 * d11 + td * d12 + t2 * d22, td1 * d11 + td12 * d12 + td2 * d22


def _gelu_dual_direct(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    """The closed form as written in the module docstring (S, D formed directly)."""
    a1 = torch.clamp_min(1.0 + k11, _FLOOR)
    a2 = torch.clamp_min(1.0 + k22, _FLOOR)
    s = a1 * a2
    k12sq = k12 * k12
    prod = k11 * k22
    # D = S - k12^2, written to reduce cancellation near coincident points.
    d = torch.clamp_min((1.0 + k11 + k22) + (prod - k12sq), _FLOOR)
    sqrt_d = torch.sqrt(d)
    # ¼ + arcsin(k12/√S)/2π as one angle: no cancellation of ¼ for anti-correlated pairs
    p = _INV_2PI * torch.atan2(sqrt_d, -k12)
    t = k12 * p + _INV_2PI * (prod * d + k12sq) / (s * sqrt_d)
    td = p + _INV_2PI * k12 * ((3.0 + k11 + k22) * d + k12sq) / (s * d * sqrt_d)
    return t, td


def _gelu_dual_scaled(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    """The closed form in bounded, scale-free quantities (module docstring, Numerics)."""
    a1 = torch.clamp_min(1.0 + k11, _FLOOR)  # Var(u - a)
    a2 = torch.clamp_min(1.0 + k22, _FLOOR)  # Var(v - b)
    ia1, ia2 = 1.0 / a1, 1.0 / a2
    r, q = shifted_gram(k11, k12, k22, _FLOOR)  # √S and D/S = 1 − ρ² (never S or D themselves)
    beta = (k11 / a1) * (k22 / a2)  # k11 k22 / S
    sq = torch.sqrt(q)
    rho = k12 / r  # k12/√S
    p = _INV_2PI * torch.atan2(sq, -rho)  # ¼ + arcsin(ρ)/2π, accurate for ρ → −1 too
    t = k12 * p + _INV_2PI * (beta * r * sq + rho * (rho / (r * sq)))
    gamma = ia1 + ia2 + ia1 * ia2  # (3 + k11 + k22)/S
    u = (rho / r) / sq  # k12/(S √q)
    td = p + _INV_2PI * (rho * gamma / sq + u * u * (rho / sq))
    return t, td


def gelu_dual_diag(k: Tensor) -> tuple[Tensor, Tensor]:
    r"""Diagonal dual kernels ``(E[gelu(u)^2], E[gelu'(u)^2])`` for ``u ~ N(0, k)``.

    Equal to ``gelu_dual(k, k, k)`` (``D = 1 + 2k``, ``S = (1+k)^2``), written in
    simplified form: ``k²/((1+k)√(1+2k)) = k·β/√D`` and
    ``k(3+5k)/((1+k)D^{3/2}) = β (5/2 + 1/(2D))/√D`` with ``β = k/(1+k)``, so that no
    intermediate overflows before the result does.
    """
    (k,) = _as_float_tensors(k)
    a = torch.clamp_min(1.0 + k, _FLOOR)
    sqrt_d = math.sqrt(2.0) * torch.sqrt(torch.clamp_min(0.5 + k, 0.5 * _FLOOR))  # √(1 + 2k)
    beta = k / a
    ang = torch.atan2(beta, sqrt_d / a)  # = arcsin(k / (1 + k)); O(1) arguments (no overflow in backward)
    t = k * (0.25 + _INV_2PI * ang) + _INV_PI * k * (beta / sqrt_d)
    td = (0.25 + _INV_2PI * ang) + _INV_2PI * beta * (2.5 + 0.5 / (sqrt_d * sqrt_d)) / sqrt_d
    return t, td
