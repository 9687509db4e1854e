"""Function-space training under the softmax cross-entropy loss, for a fixed (empirical or
analytic) NTK.

Loss L = (1/N) Σ_i −Σ_c p_ic log softmax(f(x_i))_c (integer labels are one-hot p), whose
gradient in the outputs is (σ(f_i) − p_i)/N, σ = softmax.  A model that is linear in its
parameters with NTK Θ (an N×N matrix shared by the outputs, or the full (N, N, O, O) one) moves as

    ḟ_X = −(η/N) Θ (σ(f_X) − P),        f_x(t) = f_0(x) − (η/N) Θ(x, X) G(t),
    G(t) = ∫₀ᵗ (σ(f_X(s)) − P) ds,

a non-linear ODE with no closed form.  ``GradientFlow(η)`` integrates (f_X, G) with the
Dormand–Prince 5(4) embedded Runge–Kutta pair, adaptive steps accepted when the RMS of the
error estimate scaled by ``atol + rtol·|state|`` is ≤ 1 (defaults rtol = 1e-9, atol = 1e-12,
float64), landing exactly on every requested time.  The discrete optimizers are exact
recurrences: ``GradientDescent(η)``, f ← f − (η/N) Θ (σ(f) − P), and ``Momentum(η, μ)``,
c ← μc + (σ(f) − P), f ← f − (η/N) Θ c (PyTorch's heavy ball), with G summing the steps.
One integration answers every test set (G is kept at the requested times).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ._predict_checks import check_number, check_tensor
from .dynamics import Dynamics, GradientDescent, GradientFlow, Momentum

__all__ = ["CrossEntropyTrajectory", "dopri5"]

# Dormand–Prince 5(4) tableau (Dormand & Prince 1980)
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def dopri5(rhs: Callable[[Tensor], Tensor], y0: Tensor, times: list[float], *, rtol: float = 1e-9,
           atol: float = 1e-12, max_steps: int = 1_000_000) -> list[Tensor]:
    """States of the autonomous ODE ẏ = rhs(y) at the sorted ``times`` (≥ 0) from y(0) = y0."""
    y, t, k1 = y0, 0.0, rhs(y0)
    scale0 = atol + rtol * y0.abs()
    d0, d1 = float((y0 / scale0).pow(2).mean().sqrt()), float((k1 / scale0).pow(2).mean().sqrt())
    h = 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6   # Hairer's first-step heuristic
    out, steps = [], 0
    for target in times:
        while t < target:
            if steps >= max_steps:
                raise RuntimeError(f"dopri5: more than {max_steps} steps before t = {target}")
            step = min(h, target - t)
            ks = [k1]
            for i in range(1, 7):
                yi = y + step * sum(a * k for a, k in zip(_A[i], ks) if a)
                ks.append(rhs(yi))
            y5 = yi                                              # stage 7 is at the 5th-order point
            err = step * sum((b5 - b4) * k for b5, b4, k in zip(_B5, _B4, ks) if b5 != b4)
            tol = atol + rtol * torch.maximum(y.abs(), y5.abs())
            e = float((err / tol).pow(2).mean().sqrt())
            steps += 1
            if e <= 1.0:
                t = target if step == target - t else t + step
                y, k1 = y5, ks[6]                                  # first-same-as-last
            factor = 5.0 if e == 0 else min(5.0, max(0.2, 0.9 * e ** -0.2))
            if e <= 1.0 and step < h:                              # clipped to land on target
                factor = max(factor, 1.0)
                h = max(h, step * factor)
            else:
                h = step * factor
        out.append(y)
    return out


def _check_classes(y: Any, n: int, o: int) -> Tensor:
    """Targets as probabilities (N, O): integer labels in [0, O) or rows ≥ 0 summing to 1."""
    if not isinstance(y, Tensor):
        raise TypeError(f"y_train must be a torch.Tensor, got {type(y).__name__}")
    if not torch.is_floating_point(y):
        if y.dtype == torch.bool or y.dim() != 1 or y.shape[0] != n:
            raise ValueError(f"integer labels y_train must have shape ({n},), got {tuple(y.shape)} {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= o:
            raise ValueError(f"labels y_train must lie in [0, {o}), got [{int(y.min())}, {int(y.max())}]")
        return torch.nn.functional.one_hot(y.long(), o)
    check_tensor("y_train", y, min_dim=2)
    if y.shape != (n, o):
        raise ValueError(f"y_train must be labels ({n},) or probabilities ({n}, {o}), got {tuple(y.shape)}")
    if bool((y < 0).any()) or not torch.allclose(y.sum(-1), torch.ones_like(y[:, 0]), atol=1e-6):
        raise ValueError("y_train looks like regression targets: the cross-entropy needs class labels "
                         "or probabilities (rows ≥ 0 summing to 1); use NetworkTrajectory for the "
                         "squared loss")
    return y


#: the most discrete optimizer steps (GradientDescent / Momentum) ``CrossEntropyTrajectory`` runs
MAX_STEPS = 10 ** 7


class CrossEntropyTrajectory:
    """Outputs of a linear(ized) model trained with the softmax cross-entropy.

    With σ = softmax, P the one-hot labels (or given probabilities) and Θ the NTK:
    ḟ_X = −(η/N) Θ (σ(f_X) − P) on the training set and f_x(t) = f_0(x) − (η/N) Θ(x, X) G(t),
    G(t) = ∫₀ᵗ (σ(f_X(s)) − P) ds, integrated by Dormand–Prince 5(4); gradient descent and
    momentum are the exact recurrences f ← f − (η/N) Θ (σ(f) − P) and c ← μc + (σ(f) − P),
    f ← f − (η/N) Θ c (module docstring).

    Args:
        ntk_train: Θ(X, X), (N, N) or full (N, N, O, O) (empirical, or an analytic NTK).
        f0_train: initial outputs (N, O) (zeros for the infinite-width mean prediction).
        y_train: integer labels (N,) or class probabilities (N, O).
        dynamics: ``GradientFlow(η)`` (default η = 1), ``GradientDescent(η)`` or ``Momentum(η, μ)``.
        rtol: relative tolerance of the adaptive solver (gradient flow only).
        atol: absolute tolerance of the adaptive solver (gradient flow only).
    """

    def __init__(self, ntk_train: Tensor, f0_train: Tensor, y_train: Tensor,
                 dynamics: Dynamics | None = None, *, rtol: float = 1e-9, atol: float = 1e-12,
                 dtype: torch.dtype = torch.float64) -> None:
        f0 = check_tensor("f0_train", f0_train, min_dim=2)
        check_tensor("ntk_train", ntk_train, min_dim=2)
        if f0.dim() != 2 or f0.shape[1] < 2:
            raise ValueError(f"f0_train must be (N, O) with O ≥ 2 classes, got {tuple(f0.shape)}")
        n, o = f0.shape
        self.full = ntk_train.dim() == 4
        want = (n, n, o, o) if self.full else (n, n)
        if tuple(ntk_train.shape) != want:
            raise ValueError(f"ntk_train must have shape (N, N) or (N, N, O, O) = {want}, got "
                             f"{tuple(ntk_train.shape)}")
        self.dynamics = GradientFlow(1.0) if dynamics is None else dynamics
        if not isinstance(self.dynamics, (GradientFlow, GradientDescent, Momentum)):
            raise TypeError(f"dynamics must be GradientFlow, GradientDescent or Momentum, got "
                            f"{type(self.dynamics).__name__}")
        self.rtol = check_number("rtol", rtol, positive=True)
        self.atol = check_number("atol", atol, positive=True)
        self.n, self.o, self.dtype = n, o, dtype
        self.theta = ntk_train.to(dtype)
        self.f0 = f0.to(dtype=dtype, device=self.theta.device)
        self.p = _check_classes(y_train, n, o).to(self.f0)
        # one-hot rows: the true class's residual σ_c − 1 = −Σ_{j≠c} σ_j, summed from the small
        # probabilities (σ_c − 1 itself cancels to rounding noise once σ_c ≈ 1; that noise
        # capped the adaptive step near 1e8, so t = 1e20 never finished, while the exact
        # residual, decaying like 1/t, lets the step grow with t: t = 1e300 in a few seconds)
        self._true = (self.p == 1) if bool(((self.p == 0) | (self.p == 1)).all()) else None
        self._cache: dict[tuple[float, ...], tuple[Tensor, Tensor]] = {}

    def _residual(self, f: Tensor) -> Tensor:
        """σ(f) − P, exact to rounding relative to its size for one-hot P."""
        s = torch.softmax(f, -1)
        if self._true is None:
            return s - self.p
        others = s.masked_fill(self._true, 0.0).sum(-1, keepdim=True)
        return torch.where(self._true, -others, s)

    def _apply(self, theta: Tensor, r: Tensor) -> Tensor:
        """Θ r for residuals r (N, O): shared Θ (M, N) or full Θ (M, N, O, O)."""
        if theta.dim() == 2:
            return theta @ r
        return torch.einsum("mnab,nb->ma", theta, r)

    def _solve(self, times: list[float]) -> tuple[Tensor, Tensor]:
        """(f_X, G) at the sorted times, each (T, N, O)."""
        key = tuple(times)
        if key not in self._cache:
            eta, n = self.dynamics.learning_rate, self.n
            if isinstance(self.dynamics, GradientFlow):
                def rhs(state: Tensor) -> Tensor:
                    g = self._residual(state[0])
                    return torch.stack([-(eta / n) * self._apply(self.theta, g), g])
                states = dopri5(rhs, torch.stack([self.f0, torch.zeros_like(self.f0)]), times,
                                rtol=self.rtol, atol=self.atol)
            else:
                states = self._steps(times)
            self._cache = {key: (torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states]))}
        return self._cache[key]

    def _steps(self, times: list[float]) -> list[Tensor]:
        eta, n = self.dynamics.learning_rate, self.n
        mu = getattr(self.dynamics, "momentum", 0.0)
        f, g_sum, c = self.f0.clone(), torch.zeros_like(self.f0), torch.zeros_like(self.f0)
        out, s = [], 0
        for target in times:
            while s < int(target):
                c = mu * c + self._residual(f)
                f = f - (eta / n) * self._apply(self.theta, c)
                g_sum = g_sum + c
                s += 1
            out.append(torch.stack([f, g_sum]))
        return out

    def _times(self, t: Any) -> tuple[Tensor, list[float], Tensor]:
        if t is None:
            raise ValueError("t = None (∞) has no limit under the cross-entropy (the logits grow "
                             "without bound on separable data); give finite times")
        times = self.dynamics.times(t)
        if bool(torch.isinf(times).any()):
            raise ValueError("t must be finite for the cross-entropy")
        if not isinstance(self.dynamics, GradientFlow) and float(times.max()) > MAX_STEPS:
            raise ValueError(f"t = {float(times.max()):g} optimizer steps, each one a pass over the "
                             f"training kernel, exceeds the limit of {MAX_STEPS:.0e} steps; use "
                             f"GradientFlow (its adaptive steps grow with t) for longer times")
        flat = times.reshape(-1)
        uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        return times, uniq.tolist(), inverse

    def train_outputs(self, t: Any) -> Tensor:
        """f_t(X): (N, O), or (T, N, O) for a 1-D tensor of times."""
        times, uniq, inverse = self._times(t)
        f, _ = self._solve(uniq)
        f = f[inverse]
        return f if times.dim() == 1 else f[0]

    def outputs(self, ntk_test_train: Tensor, f0_test: Tensor, t: Any) -> Tensor:
        """f_t(x) = f_0(x) − (η/N) Θ(x, X) G(t) for Θ(x, X) (M, N) or (M, N, O, O), f_0(x) (M, O)."""
        f0 = check_tensor("f0_test", f0_test, min_dim=2)
        cross = check_tensor("ntk_test_train", ntk_test_train, min_dim=2)
        m = f0.shape[0]
        want = (m, self.n, self.o, self.o) if self.full else (m, self.n)
        if f0.dim() != 2 or f0.shape[1] != self.o or tuple(cross.shape) != want:
            raise ValueError(f"expected f0_test (M, {self.o}) and ntk_test_train {want}, got "
                             f"{tuple(f0.shape)} and {tuple(cross.shape)}")
        times, uniq, inverse = self._times(t)
        _, g = self._solve(uniq)
        cross = cross.to(self.theta)
        eta = self.dynamics.learning_rate
        out = torch.stack([f0.to(self.theta) - (eta / self.n) * self._apply(cross, gi) for gi in g])[inverse]
        return out if times.dim() == 1 else out[0]
