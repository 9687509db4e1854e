r"""Partial derivatives of the GELU dual kernels, in bounded ratios (the backward of ``wideNN._gelu``).

For :math:`(u, v) \sim N(0, \Sigma)`, :math:`\Sigma = [[k_{11}, k_{12}], [k_{12}, k_{22}]]`, and
:math:`\phi(u) = u\Phi(u)`, Price's theorem (R. Price, IRE Trans. Inf. Theory 1958) gives every
first derivative of :math:`T = E[\phi(u)\phi(v)]` and :math:`\dot T = E[\phi'(u)\phi'(v)]` as
another Gaussian expectation:

.. math::

    \partial_{12} T = \dot T,\quad \partial_{11} T = \tfrac12 E[\phi''(u)\phi(v)],\quad
    \partial_{12} \dot T = E[\phi''(u)\phi''(v)],\quad \partial_{11}\dot T = \tfrac12 E[\phi'''(u)\phi'(v)],

with :math:`\phi'' = (2-u^2)\varphi(u)` and :math:`\phi''' = (u^3-4u)\varphi(u)`.  A factor
:math:`\varphi(u)` tilts the Gaussian: :math:`E[\varphi(u)F(u,v)] = E'[F]/\sqrt{2\pi a_1}` under
:math:`\Sigma' = \Sigma - \Sigma e_1 e_1^\top\Sigma / a_1`, i.e. :math:`s_{11} = k_{11}/a_1`,
:math:`s_{12} = k_{12}/a_1`, :math:`s_{22} = k_{22} - k_{12}^2/a_1` (:math:`a_i = 1 + k_{ii}`), and
:math:`E[\varphi(u)\varphi(v)F] = E''[F] / (2\pi\sqrt D)` under
:math:`\Sigma'' = \Sigma(I+\Sigma)^{-1}`: :math:`t_{11} = (k_{11} + G)/D`, :math:`t_{12} = k_{12}/D`,
with :math:`G = k_{11}k_{22}-k_{12}^2` and :math:`D = a_1a_2 - k_{12}^2 = a_1(1 + s_{22})`.  Gaussian
integration by parts (:math:`E[u^2 g(v)] = s_{11}E g + s_{12}^2 E g''`,
:math:`E[u^3 g(v)] = 3 s_{11}s_{12} E g' + s_{12}^3 E g'''`) then leaves, with
:math:`w = 1/(1+s_{22})` and :math:`\tau = s_{22} w`,

.. math::

    \partial_{11} T &= \frac{(2 - s_{11})s_{22} - s_{12}^2 (1 + w)}{4\pi\sqrt D},\qquad
    \partial_{12}\dot T = \frac{(2-t_{11})(2-t_{22}) + 2t_{12}^2}{2\pi\sqrt D},\\
    \partial_{11}\dot T &= \frac{s_{12}\,[(3 s_{11} - 4)(1 + w) - s_{12}^2 w\,(4 - 3\tau)]}{4\pi\sqrt D},

and :math:`\partial_{22}` by symmetry.  Every factor is bounded (:math:`s_{11}, t_{ij} \le 1`,
:math:`s_{12}^2 w = k_{12}^2/(a_1 D) \le 1`) or a single variance, :math:`\sqrt D = r\sqrt q` and
:math:`G/S` come from ``wideNN._gaussian.shifted_gram``, and :math:`s_{22} = k_{22}/a_1 +
(s_{11}k_{22} - s_{12}k_{12})` is exactly :math:`k_{22}/a_1` at coincident points.  So the partials
are accurate to round-off relative to themselves and finite wherever the kernel is, where the
autograd graph of the closed form cancels terms of size :math:`O(\sqrt k)` to a result of
size :math:`O(1/\sqrt k)` at coincident points (no digits left from :math:`k \sim 10^{16}` on)
and overflows near the top of the float range.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._gaussian import shifted_gram

__all__ = ["gelu_partials"]

_FLOOR = 0.5  # the guard of wideNN._gelu (inactive on valid input)


def _tilted(ka: Tensor, k12: Tensor, kb: Tensor, aa: Tensor, root_d: Tensor) -> tuple[Tensor, Tensor]:
    """(∂T/∂ka, ∂Ṫ/∂ka) for the variance ka of one side (kb the other, aa = 1 + ka)."""
    s11 = ka / aa
    s12 = k12 / aa
    s22 = torch.clamp_min(kb / aa + (s11 * kb - s12 * k12), 0.0)  # k_b − k12²/a_a ≥ 0 on the PSD cone
    w = 1.0 / (1.0 + s22)
    tau = s22 * w
    c = 1.0 / (4.0 * math.pi * root_d)
    s12c = s12 * c
    dt = (2.0 - s11) * (s22 * c) - s12c * s12 * (1.0 + w)
    dtd = s12c * ((3.0 * s11 - 4.0) * (1.0 + w) - (s12 * (s12 * w)) * (4.0 - 3.0 * tau))
    return dt, dtd


def gelu_partials(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, ...]:
    """(∂T/∂k11, ∂T/∂k22, ∂Ṫ/∂k11, ∂Ṫ/∂k12, ∂Ṫ/∂k22) of GELU's duals (module docstring);
    ∂T/∂k12 = Ṫ itself.  Broadcast shapes."""
    a1 = torch.clamp_min(1.0 + k11, _FLOOR)
    a2 = torch.clamp_min(1.0 + k22, _FLOOR)
    r, q = shifted_gram(k11, k12, k22, _FLOOR)
    root_d = r * torch.sqrt(q)  # √D, never D itself
    t1, td1 = _tilted(k11, k12, k22, a1, root_d)
    t2, td2 = _tilted(k22, k12, k11, a2, root_d)
    det = (k11 / a1) * (k22 / a2) - (k12 / a1) * (k12 / a2)  # G/S
    t11 = ((k11 / a1) / a2 + det) / q  # (k11 + G)/D
    t22 = ((k22 / a2) / a1 + det) / q
    t12 = ((k12 / a1) / a2) / q  # k12/D
    td12 = ((2.0 - t11) * (2.0 - t22) + 2.0 * t12 * t12) / (2.0 * math.pi * root_d)
    return t1, t2, td1, td12, td2
