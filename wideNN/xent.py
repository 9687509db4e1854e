"""Function-space training under the softmax cross-entropy loss, for a fixed (empirical or
analytic) NTK.

Loss L = (1/N) Σ_i −Σ_c p_ic log softmax(f(x_i))_c (integer labels are one-hot p), whose
gradient in the outputs is (σ(f_i) − p_i)/N, σ = softmax.  A model that is linear in its
parameters with NTK Θ (an N×N matrix shared by the outputs, or the full (N, N, O, O) one) moves as

    ḟ_X = −(η/N) Θ (σ(f_X) − P),        f_x(t) = f_0(x) − (η/N) Θ(x, X) G(t),
    G(t) = ∫₀ᵗ (σ(f_X(s)) − P) ds,

a non-linear ODE with no closed form.  ``GradientFlow(η)`` integrates (δ, G), δ = f_X − f_ref
about a reference point f_ref = log P + c of the targets (``wideNN._xent_residual``: the residual
is then exact to rounding relative to its own size, so G = ∫ r does not integrate rounding noise),
with adaptive steps accepted when the RMS of the error estimate scaled by
``atol + rtol·|(f_X, G)|`` is ≤ 1 (defaults rtol = 1e-9, atol = 1e-12, float64), landing exactly
on every requested time:

* the explicit Dormand–Prince 5(4) pair while the flow is not stiff;
* from the time the explicit step reaches 2/ρ(J), ~60 % of its stability limit 3.3/ρ (ρ by
  power iteration, on 15 steps; ``stiff_from`` records it), the L-stable Rosenbrock method RODAS of
  order 4(3) (Hairer & Wanner), whose steps follow the solution's own time scale however stiff
  J = −(η/N) Θ D, D = blockdiag(diag(σ_i) − σ_i σ_iᵀ), becomes.  Soft targets settle at a finite
  fixed point (σ(f*) = P for a positive-definite shared Θ), where the explicit step stays near
  3.3/ρ (t = 1e6 on 10 points: ~6·10⁴ steps); RODAS reaches t = 1e12 in a few hundred.  Each step
  solves with I + cΘD exactly: an (N·O)² LU for a full Θ, O N×N factorizations for a shared
  one (N ≲ 1600 at O = 10), else conjugate gradients preconditioned in Θ's eigenbasis
  (``wideNN._xent_jacobian``; no (N·O)² matrix).
  One-hot targets have no finite fixed point on a positive-definite kernel: J decays like 1/t, so
  the explicit method, even when held at its stability limit, needs only ~ρt/3.3 steps per
  e-fold of t, a constant (ρt levels off near 10–200 on separable problems, whatever η·‖Θ‖).
  They switch only once also ρ·t ≥ ``ONE_HOT_STIFF_RHO_T`` (≥ ~300 explicit steps per e-fold,
  against RODAS's ~60 at rtol 1e-9, each costing ~10 explicit ones at N ≲ 100), which a stiff
  direction that does not decay reaches: a training input repeated with
  two labels has a finite fixed point in the difference of its outputs (rate ∝ η·Θ_ii/N) while
  the rest drifts like log t — explicitly ~t/10 steps (t = 1e6 on 10 points: 9·10⁴ steps, 76 s),
  with RODAS a few hundred to t = 1e8.  The state and residual are the same (exact for one-hot
  rows: ``wideNN._xent_residual``).

The discrete optimizers are exact
recurrences: ``GradientDescent(η)``, f ← f − (η/N) Θ (σ(f) − P), and ``Momentum(η, μ)``,
c ← μc + (σ(f) − P), f ← f − (η/N) Θ c (PyTorch's heavy ball), with G summing the steps.
One integration answers every test set (G is kept at the requested times).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .linalg import eigh_psd
from ._predict_checks import check_number, check_tensor
from ._odes import dopri5, dopri5_run, rodas4
from ._xent_jacobian import jacobian_solver
from ._xent_residual import ReferenceResidual
from .dynamics import Dynamics, GradientDescent, GradientFlow, Momentum

__all__ = ["CrossEntropyTrajectory", "dopri5"]

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
#: one-hot targets switch to the implicit method only where also ρ(J)·t ≥ this (module docstring)
ONE_HOT_STIFF_RHO_T = 1000.0


class CrossEntropyTrajectory:
    """Outputs of a linear(ized) model trained with the softmax cross-entropy.

    With σ = softmax, P the one-hot labels (or given probabilities) and Θ the NTK:
    ḟ_X = −(η/N) Θ (σ(f_X) − P) on the training set and f_x(t) = f_0(x) − (η/N) Θ(x, X) G(t),
    G(t) = ∫₀ᵗ (σ(f_X(s)) − P) ds, integrated by Dormand–Prince 5(4) while not stiff and by the
    L-stable Rosenbrock method RODAS after (module docstring); gradient descent and
    momentum are the exact recurrences f ← f − (η/N) Θ (σ(f) − P) and c ← μc + (σ(f) − P),
    f ← f − (η/N) Θ c (module docstring).

    Args:
        ntk_train: Θ(X, X), (N, N) or full (N, N, O, O) (empirical, or an analytic NTK).
        f0_train: initial outputs (N, O) (zeros for the infinite-width mean prediction).
        y_train: integer labels (N,) or class probabilities (N, O).
        dynamics: ``GradientFlow(η)`` (default η = 1), ``GradientDescent(η)`` or ``Momentum(η, μ)``.
        rtol: relative tolerance of the adaptive solvers (gradient flow only), per step, on the
            RMS of the error estimate relative to atol + rtol·|(f_X, G)|.
        atol: absolute tolerance of the adaptive solvers (gradient flow only).
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
        self._flow_residual = ReferenceResidual(self.p, self.f0)
        self._cache: dict[tuple[float, ...], tuple[Tensor, Tensor]] = {}
        self._eigh: tuple[Tensor, Tensor] | None = None
        self._power: Tensor | None = None
        #: the time from which the flow was integrated implicitly (None: explicit throughout)
        self.stiff_from: float | None = None
        #: steps (accepted and rejected) of the last gradient-flow integration, per method
        self.solver_steps: dict[str, int] = {"explicit": 0, "implicit": 0}

    def _eig(self) -> tuple[Tensor, Tensor]:
        """Θ = V diag(λ) Vᵀ (shared NTK), computed once, for the matrix-free implicit solves."""
        if self._eigh is None:
            self._eigh = eigh_psd(self.theta, name="ntk_train")
        return self._eigh

    def _residual(self, f: Tensor) -> Tensor:
        """σ(f) − P, exact to rounding relative to its size for one-hot P (discrete optimizers)."""
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
                def rhs(state: Tensor) -> Tensor:                 # state (δ, G), f = f_ref + δ
                    g = self._flow_residual(state[0])
                    return torch.stack([-(eta / n) * self._apply(self.theta, g), g])
                f_ref = self._flow_residual.f_ref
                states = [torch.stack([f_ref + s[0], s[1]]) for s in self._flow(rhs, times)]
            else:
                states = self._steps(times)
            self._cache = {key: (torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states]))}
        return self._cache[key]

    def _flow(self, rhs: Any, times: list[float]) -> list[Tensor]:
        """Dormand–Prince while the flow is not stiff, RODAS from where the stiffness test fires."""
        y0 = torch.stack([self.f0 - self._flow_residual.f_ref, torch.zeros_like(self.f0)])
        # one-hot targets: J usually decays like 1/t (no finite fixed point), so the switch also
        # asks for ρ·t large, i.e. a stiff direction that does not decay (module docstring)
        offset = torch.stack([self._flow_residual.f_ref, torch.zeros_like(self.f0)])
        run = dopri5_run(rhs, y0, times, rtol=self.rtol, atol=self.atol, detect_stiffness=True,
                         spectral_radius=self._spectral_radius, offset=offset,
                         stiff_rho_t=0.0 if self._true is None else ONE_HOT_STIFF_RHO_T)
        self.stiff_from = run.t if run.stiff else None
        self.solver_steps = {"explicit": run.steps, "implicit": 0}
        if not run.stiff:
            return run.states
        rest = rodas4(rhs, self._factor, run.y, run.t, times[len(run.states):], run.h, rtol=self.rtol,
                      atol=self.atol, offset=offset)
        self.solver_steps["implicit"] = rest.steps
        return run.states + rest.states

    def _spectral_radius(self, state: Tensor) -> float:
        """ρ((η/N) Θ D) by one power-iteration step per call, its vector kept between calls (D
        changes slowly along the solution; J is similar to a PSD matrix, so ρ is its top
        eigenvalue)."""
        if self._power is None:
            k = torch.arange(self.n * self.o, dtype=self.dtype, device=self.theta.device)
            self._power = torch.sin(1.3 * k + 0.7).reshape(self.n, self.o)   # not row-constant
        s = self._flow_residual.probabilities(state[0])
        jv = self._apply(self.theta, s * self._power - s * (s * self._power).sum(-1, keepdim=True))
        norm, prev = float(jv.norm()), float(self._power.norm())
        if norm == 0.0 or prev == 0.0:
            return 0.0
        self._power = jv / norm
        return self.dynamics.learning_rate / self.n * norm / prev

    def _factor(self, state: Tensor, h: float) -> Any:
        """b ↦ (I/γ − hJ)⁻¹ b for the (δ, G) system at ``state``, J = [[−(η/N)ΘD, 0], [D, 0]]."""
        return jacobian_solver(self.theta, self._flow_residual.probabilities(state[0]), h, self.dynamics.learning_rate / self.n, self._eig)

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
