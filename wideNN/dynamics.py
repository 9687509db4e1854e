"""Function-space dynamics of a linear(ized) model under the squared loss, as spectral weights.

Loss L = (1/2N) Σ_i ‖f(x_i) − y_i‖², training kernel M = V diag(λ) Vᵀ (the NTK Θ, or the NNGP
K when only the readout is trained).  Every optimizer below keeps the model linear in its
parameters, so at any time t the outputs are

    f_t(x) = f_0(x) + M(x, X) V diag(w_t(λ)) Vᵀ (Y − f_0(X)),

and an ensemble over f_0 ~ GP(0, K) has the covariance of ``wideNN.predictor``.  Each class
gives w_t(λ) for a tensor of times (shape (T, N)); t = ∞ is the pseudo-inverse 1/λ.

* ``GradientFlow(η)``: ḟ = −(η/N) M (f − y):  w = (1 − e^{−sλ})/λ,  s = ηt/N.
* ``GradientDescent(η)``: t whole steps of f ← f − (η/N) M (f − y):  w = (1 − (1 − ηλ/N)^t)/λ.
* ``Momentum(η, μ)``: heavy ball in the PyTorch convention (v ← μv + g, θ ← θ − ηv, v₀ = g₀).
  The velocity stays in the span of the gradients, v_s = Jᵀc_s, so c_s = μc_{s−1} + r_s/N with
  r = f(X) − Y, f moves by −ηΘc_s, and f_t(x) = f_0(x) − ηΘ(x, X) Σ_{s<t} c_s.  Per eigenvalue
  the state (r, c, C = Σc) obeys the exact linear recurrence c' = μc + r/N, r' = r − ηλc',
  C' = C + c' from (1, 0, 0), and w = ηC_t: a 3×3 matrix power per eigenvalue (exact for whole
  steps, no division by λ, stable at λ = 0).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ._predict_checks import check_number, check_times
from .linalg import flow_weights

__all__ = ["Dynamics", "GradientFlow", "GradientDescent", "Momentum"]


class Dynamics:
    """Base class: ``weights(lam, t, n)`` → w_t(λ) of shape (T, len(λ))."""

    discrete: bool = False  # whether t counts whole optimizer steps

    def weights(self, lam: Tensor, t: Tensor, n: int) -> Tensor:
        """w_t(λ) of shape (T, len(λ)) for eigenvalues ``lam`` of the training kernel, times ``t``
        (T,) and N = ``n`` training points, so that f_t = f_0 + M(x, X) V diag(w_t) Vᵀ (Y − f_0)."""
        raise NotImplementedError

    def variance_weights(self, lam: Tensor, t: Tensor, n: int) -> Tensor:
        """g = 2w − λw², the weight of M_xX V diag(g) Vᵀ M_Xx in the covariance when the prior
        covariance is the training kernel itself (readout training)."""
        w = self.weights(lam, t, n)
        return w * (2.0 - lam * w)

    def times(self, t) -> Tensor | None:
        """Validated times (float64), whole numbers for discrete dynamics."""
        return check_times(t, integer=self.discrete)

    @staticmethod
    def _infinite(lam: Tensor, t: Tensor, w: Tensor) -> Tensor:
        inf = flow_weights(lam, torch.full_like(t, float("inf")).reshape(-1, 1))
        return torch.where(torch.isinf(t).reshape(-1, 1), inf, w)


@dataclasses.dataclass(frozen=True)
class GradientFlow(Dynamics):
    """Continuous-time gradient flow at learning rate η (t = ηt/N in units of the kernel)."""

    learning_rate: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rate", check_number("learning_rate", self.learning_rate, positive=True))

    def weights(self, lam: Tensor, t: Tensor, n: int) -> Tensor:
        """w = (1 − e^{−sλ})/λ with s = ηt/N (w = s at λ = 0, 1/λ at t = ∞)."""
        s = (self.learning_rate * t.to(lam) / n).reshape(-1, 1)
        return flow_weights(lam, s)

    def variance_weights(self, lam: Tensor, t: Tensor, n: int) -> Tensor:
        # 2w − λw² = (1 − e^{−2sλ})/λ exactly, without the cancellation
        s = (self.learning_rate * t.to(lam) / n).reshape(-1, 1)
        return flow_weights(lam, 2 * s)


@dataclasses.dataclass(frozen=True)
class GradientDescent(Dynamics):
    """Full-batch gradient descent, t whole steps at learning rate η (exact for a linear model)."""

    learning_rate: float = 1.0
    discrete = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rate", check_number("learning_rate", self.learning_rate, positive=True))

    def weights(self, lam: Tensor, t: Tensor, n: int) -> Tensor:
        """w = (1 − (1 − ηλ/N)^t)/λ after t whole steps (w = ηt/N at λ = 0)."""
        h = self.learning_rate / n
        tt = t.to(lam).reshape(-1, 1)
        steps = torch.where(torch.isfinite(tt), tt, torch.zeros_like(tt))
        a = 1.0 - h * lam                                     # per-step residual factor
        # 1 − a^t = −expm1(t log1p(−hλ)) has no cancellation for small hλ (a in (0, 1])
        pos = a > 0
        log_a = torch.log1p(-h * torch.where(pos, lam, torch.zeros_like(lam)))
        one_minus = torch.where(pos, -torch.expm1(steps * log_a), 1.0 - a.pow(steps))
        safe = torch.where(lam > 0, lam, torch.ones_like(lam))
        w = torch.where(lam > 0, one_minus / safe, h * steps.expand(-1, lam.shape[-1]))
        return self._infinite(lam, t.to(lam), w)


@dataclasses.dataclass(frozen=True)
class Momentum(Dynamics):
    """Gradient descent with heavy-ball momentum μ (PyTorch convention), t whole steps."""

    learning_rate: float = 1.0
    momentum: float = 0.9
    discrete = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rate", check_number("learning_rate", self.learning_rate, positive=True))
        mu = check_number("momentum", self.momentum)
        if not mu < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        object.__setattr__(self, "momentum", mu)

    def step_matrix(self, lam: Tensor, n: int) -> Tensor:
        """(len(λ), 3, 3) map of the state (r, c, C) over one step."""
        eta, mu = self.learning_rate, self.momentum
        a = torch.zeros(*lam.shape, 3, 3, dtype=lam.dtype, device=lam.device)
        a[..., 0, 0] = 1.0 - eta * lam / n       # r' = r − ηλ(r/N + μc)
        a[..., 0, 1] = -eta * mu * lam
        a[..., 1, 0] = 1.0 / n                   # c' = r/N + μc
        a[..., 1, 1] = mu
        a[..., 2, 0] = 1.0 / n                   # C' = C + c'
        a[..., 2, 1] = mu
        a[..., 2, 2] = 1.0
        return a

    def weights(self, lam: Tensor, t: Tensor, n: int) -> Tensor:
        """w = η C_t from the per-eigenvalue recurrence of the module docstring (whole steps)."""
        step = self.step_matrix(lam, n)
        tt = t.to(lam)
        rows = []
        for ti in tt.reshape(-1).tolist():
            if ti == float("inf"):
                rows.append(torch.zeros_like(lam))   # replaced below by the pseudo-inverse
                continue
            power = torch.linalg.matrix_power(step, int(ti))
            rows.append(self.learning_rate * power[..., 2, 0])   # ηC_t from (1, 0, 0)
        w = torch.stack(rows) if rows else lam.new_zeros(0, lam.shape[-1])
        return self._infinite(lam, tt, w)
