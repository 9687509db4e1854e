"""Adaptive integrators for autonomous ODEs ẏ = F(y) on tensors, landing exactly on requested times.

* ``dopri5``: the explicit Dormand–Prince 5(4) pair (Dormand & Prince 1980), with the stiffness
  test of Hairer & Wanner (*Solving ODEs I*, §IV.2 of vol. II): the step-size ratio
  h·‖k₇ − k₆‖/‖y₇ − y₆‖ estimates h·ρ(J) along the solution; once it exceeds 3.25 (the edge of
  the stability region) on 15 accepted steps without 6 non-stiff ones in between, the step is
  held back by stability, not accuracy, and the caller may switch to an implicit method.
* ``rodas4``: the L-stable, stiffly accurate Rosenbrock method of order 4(3) in 6 stages of
  Hairer & Wanner (*Solving ODEs II*, §IV.7, "RODAS"), which needs the exact Jacobian J only
  through solves with (I/γ − hJ); its steps grow with the time scale of the solution whatever
  the stiffness.

Both accept a step when the RMS of the error estimate scaled by ``atol + rtol·max(|y|, |y_new|)``
is ≤ 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["dopri5", "rodas4", "OdeRun"]

#: h·ρ(J) from which a step counts as held back by stability (with a known ρ)
STIFF_HRHO = 2.0

# Dormand–Prince 5(4) tableau (Dormand & Prince 1980)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)

# RODAS (Hairer & Wanner, vol. II §IV.7), autonomous form: stage i solves
# (I/γ − hJ) k_i = h F(y + Σ_j a_ij k_j) + Σ_j c_ij k_j; stage 6 starts at stage 5's point + k₅,
# y_new = that point + k₆ and k₆ is the embedded error estimate.
_GAMMA = 0.25
_RA = ((), (1.544,), (0.9466785280815826, 0.2557011698983284),
       (3.314825187068521, 2.896124015972201, 0.9986419139977817),
       (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950))
_RC = ((), (-5.6688,), (-2.430093356833875, -0.2063599157091915),
       (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
       (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
       (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
        -6.058818238834054))


@dataclass
class OdeRun:
    """Where an integration stopped: the states at the times reached, the time, state and next
    step size there, whether it stopped for stiffness, and the number of steps taken."""
    states: list[Tensor]
    t: float
    y: Tensor
    h: float
    stiff: bool
    steps: int


def _rms(x: Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def _error_norm(err: Tensor, y: Tensor, y_new: Tensor, rtol: float, atol: float,
                offset: Tensor | None = None) -> float:
    if offset is not None:                                     # tolerance relative to y + offset
        y, y_new = y + offset, y_new + offset
    e = _rms(err / (atol + rtol * torch.maximum(y.abs(), y_new.abs())))
    return e if e == e else float("inf")                       # NaN (overflow) rejects the step


def _first_step(y0: Tensor, k1: Tensor, rtol: float, atol: float) -> float:
    scale0 = atol + rtol * y0.abs()
    d0, d1 = _rms(y0 / scale0), _rms(k1 / scale0)
    return 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6   # Hairer's first-step heuristic


def dopri5_run(rhs: Callable[[Tensor], Tensor], y0: Tensor, times: list[float], *, rtol: float = 1e-9,
               atol: float = 1e-12, max_steps: int = 1_000_000, detect_stiffness: bool = False,
               spectral_radius: Callable[[Tensor], float] | None = None,
               offset: Tensor | None = None, stiff_rho_t: float = 0.0) -> OdeRun:
    """Dormand–Prince 5(4) from y(0) = y0 to the sorted ``times``; with ``detect_stiffness`` it
    stops (``stiff=True``) as soon as the stiffness test fires (module docstring).  The test
    uses h·``spectral_radius(y)`` (an estimate of ρ(J) at each accepted y) when given, else
    Hairer's quotient, which sees only the direction y₇ − y₆ and can fire late.  ``offset``:
    the tolerance is relative to |y + offset| (a state stored relative to a reference point).
    ``stiff_rho_t``: with ``spectral_radius``, a step counts as stiff only where also ρ·t ≥ this
    (a flow whose ρ decays like 1/t is stability-limited at a fixed number of steps per e-fold
    of t, ~ρt/3.3, which an implicit method beats only when that number is large)."""
    y, t, k1 = y0, 0.0, rhs(y0)
    h = _first_step(y0 if offset is None else y0 + offset, k1, rtol, atol)
    out, steps, n_stiff, n_calm = [], 0, 0, 0
    for target in times:
        while t < target:
            if steps >= max_steps:
                raise RuntimeError(f"dopri5: more than {max_steps} steps before t = {target}")
            step = min(h, target - t)
            ks = [k1]
            for i in range(1, 7):
                yi = y + step * sum(a * k for a, k in zip(_A[i], ks) if a)
                if i == 5:
                    y6 = yi                                      # stage 6's point (stiffness test)
                ks.append(rhs(yi))
            y5 = yi                                              # stage 7 is at the 5th-order point
            err = step * sum((b5 - b4) * k for b5, b4, k in zip(_B5, _B4, ks) if b5 != b4)
            e = _error_norm(err, y, y5, rtol, atol, offset)
            steps += 1
            if e <= 1.0:
                t = target if step == target - t else t + step
                y, k1 = y5, ks[6]                                  # first-same-as-last
                if detect_stiffness:
                    if spectral_radius is not None:     # ρ itself: near the boundary (3.3)
                        rho = spectral_radius(y)
                        hrho = step * rho * 3.25 / STIFF_HRHO if rho * t >= stiff_rho_t else 0.0
                    else:
                        den = _rms(y5 - y6)
                        hrho = step * _rms(ks[6] - ks[5]) / den if den > 0 else 0.0
                    if hrho > 3.25:
                        n_stiff, n_calm = n_stiff + 1, 0
                        if n_stiff >= 15:
                            return OdeRun(out, t, y, h, True, steps)
                    else:
                        n_calm += 1
                        n_stiff = 0 if n_calm >= 6 else n_stiff
            factor = 5.0 if e == 0 else min(5.0, max(0.2, 0.9 * e ** -0.2))
            if e <= 1.0 and step < h:                              # clipped to land on target
                factor = max(factor, 1.0)
                h = max(h, step * factor)
            else:
                h = step * factor
        out.append(y)
    return OdeRun(out, t, y, h, False, steps)


def dopri5(rhs: Callable[[Tensor], Tensor], y0: Tensor, times: list[float], *, rtol: float = 1e-9,
           atol: float = 1e-12, max_steps: int = 1_000_000) -> list[Tensor]:
    """States of the autonomous ODE ẏ = rhs(y) at the sorted ``times`` (≥ 0) from y(0) = y0."""
    return dopri5_run(rhs, y0, times, rtol=rtol, atol=atol, max_steps=max_steps).states


def rodas4(rhs: Callable[[Tensor], Tensor], factor: Callable[[Tensor, float], Callable[[Tensor], Tensor]],
           y0: Tensor, t0: float, times: list[float], h0: float, *, rtol: float = 1e-9, atol: float = 1e-12,
           max_steps: int = 1_000_000, offset: Tensor | None = None) -> OdeRun:
    """RODAS from y(t0) = y0 to the sorted ``times`` (each ≥ t0) with first trial step ``h0``.

    ``factor(y, h)`` returns a function b ↦ (I/γ − h J(y))⁻¹ b, J = ∂rhs/∂y, γ = 1/4; it is
    called once per step (one factorization serves the six stages)."""
    y, t, h = y0, t0, h0
    out, steps, rejected = [], 0, False
    for target in times:
        while t < target:
            if steps >= max_steps:
                raise RuntimeError(f"rodas4: more than {max_steps} steps before t = {target}")
            step = min(h, target - t)
            solve = factor(y, step)
            ks: list[Tensor] = []
            for i in range(6):
                if i == 5:
                    yi = yi + ks[4]
                elif i > 0:
                    yi = y + sum(a * k for a, k in zip(_RA[i], ks))
                else:
                    yi = y
                b = step * rhs(yi)
                if i > 0:
                    b = b + sum(c * k for c, k in zip(_RC[i], ks))
                ks.append(solve(b))
            y_new = yi + ks[5]
            e = _error_norm(ks[5], y, y_new, rtol, atol, offset)
            steps += 1
            # h_new = h · 0.9 e^{-1/4}, between h/6 and 6h (no growth right after a rejection)
            grow = 6.0 if e == 0 else min(6.0, max(1 / 6, 0.9 * e ** -0.25))
            if e <= 1.0:
                clipped = step < h                                 # shortened to land on target
                t = target if step == target - t else t + step
                y = y_new
                g = min(grow, 1.0) if rejected else grow
                h = max(h, step * g) if clipped else step * g
                rejected = False
            else:
                h, rejected = step * min(grow, 0.9), True
        out.append(y)
    return OdeRun(out, t, y, h, False, steps)
