"""The training trajectory of one finite network, predicted from its empirical NTK.

A network linearized at its initial parameters θ₀, f_lin(x; θ) = f_0(x) + J(x)(θ − θ₀), trained on
L = (1/2N) Σ_i ‖f(x_i) − y_i‖² moves in function space by the NTK Θ̂ = J Jᵀ frozen at θ₀:

    f_t(x) = f_0(x) + Θ̂(x, X) V diag(w_t(λ)) Vᵀ (Y − f_0(X)),      Θ̂(X, X) (+ σ²I) = V diag(λ) Vᵀ,

with the spectral weights w_t of ``wideNN.dynamics`` (gradient flow, gradient descent, heavy-ball
momentum).  This is exact for ``wn.linearize(net)`` trained by ``wn.train`` with the matching
optimizer (``GradientDescent`` / ``Momentum`` step for step; ``GradientFlow`` in the limit of small
steps) and close to the network itself when it is wide (Lee et al. 2019).

The kernel is an (N, N) matrix shared by every output (the ``mode="trace"`` NTK: exact when the
output blocks of the full NTK are the identity times it, e.g. for one output), or the full
(N, N, O, O) NTK (``mode="full"``), whose (example, output) pairs are flattened into one
N·O × N·O system (N in the loss stays the number of examples).  One eigendecomposition serves
every time and test set.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._predict_checks import check_examples, check_tensor
from .dynamics import Dynamics
from .predictor import Predictor, PredictorOptions, QueryKernels

__all__ = ["NetworkTrajectory", "network_kernels"]


def network_kernels(net: torch.nn.Module, x_train: Tensor, x_test: Tensor | None = None,
                    mode: str = "full") -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(Θ̂(X, X), f_0(X), Θ̂(x, X), f_0(x)) of a network at its current parameters (the last two
    None without ``x_test``), the inputs of the trajectory classes; ``mode`` as for
    ``wn.empirical_ntk`` ("full" is exact for any number of outputs)."""
    from .empirical import empirical_ntk

    check_examples(x_train, x_test)
    # the kernels first: empirical_ntk checks the model against the inputs (dtype, features)
    th = empirical_ntk(net, x_train, mode=mode).detach()
    tht = None if x_test is None else empirical_ntk(net, x_test, x_train, mode=mode).detach()
    with torch.no_grad():
        f0 = net(x_train)
        f0t = None if x_test is None else net(x_test)
    return th, f0, tht, f0t


def _flatten_full(theta: Tensor, name: str) -> Tensor:
    """(N, M, O, O) → (N·O, M·O), rows/columns ordered (example, output)."""
    n, m, o, o2 = theta.shape
    if o != o2:
        raise ValueError(f"{name} must have shape (N, M, O, O), got {tuple(theta.shape)}")
    return theta.permute(0, 2, 1, 3).reshape(n * o, m * o)


class NetworkTrajectory:
    """Outputs of a linearized finite network at any training time, from its empirical NTK.

    Args:
        ntk_train: Θ̂(X, X), (N, N) or full (N, N, O, O).
        f0_train: the network's outputs at initialization on X, (N, O).
        y_train: targets (N, O).
        dynamics: ``GradientFlow(η)`` (default η = 1), ``GradientDescent(η)`` or ``Momentum(η, μ)``.
        noise_variance: σ² ≥ 0 added to Θ̂'s diagonal (a ridge on the function-space flow).
        dtype: computation dtype (float64 by default).
    """

    def __init__(self, ntk_train: Tensor, f0_train: Tensor, y_train: Tensor,
                 dynamics: Dynamics | None = None, noise_variance: float = 0.0, *,
                 dtype: torch.dtype = torch.float64) -> None:
        check_tensor("ntk_train", ntk_train, min_dim=2)
        f0 = check_tensor("f0_train", f0_train, min_dim=2)
        y = check_tensor("y_train", y_train, min_dim=2)
        if f0.dim() != 2 or y.shape != f0.shape:
            raise ValueError(f"f0_train and y_train must both be (N, O), got {tuple(f0.shape)} and "
                             f"{tuple(y.shape)}")
        n, o = f0.shape
        self.full = ntk_train.dim() == 4
        if self.full:
            if ntk_train.shape != (n, n, o, o):
                raise ValueError(f"a full ntk_train must have shape ({n}, {n}, {o}, {o}) to match "
                                 f"f0_train, got {tuple(ntk_train.shape)}")
            mat = _flatten_full(ntk_train, "ntk_train")
        elif ntk_train.dim() == 2:
            mat = ntk_train
        else:
            raise ValueError(f"ntk_train must be (N, N) or (N, N, O, O), got {tuple(ntk_train.shape)}")
        self.n, self.o, self.dtype = n, o, dtype
        resid = (y.to(dtype) - f0.to(dtype)).to(mat.device)
        targets = resid.reshape(-1, 1) if self.full else resid
        self.f0_train = f0.to(dtype)
        self.predictor = Predictor.from_matrices(targets, ntk_train=mat, kernel="ntk", dynamics=dynamics,
                                                 noise_variance=noise_variance, num_examples=n,
                                                 compute_variance=False,
                                                 options=PredictorOptions(dtype=dtype))

    @property
    def dynamics(self) -> Dynamics:
        return self.predictor.dynamics

    def outputs(self, ntk_test_train: Tensor, f0_test: Tensor, t: Any = None) -> Tensor:
        """f_t(x) for test inputs x: Θ̂(x, X) (M, N) or (M, N, O, O), f_0(x) (M, O); t as for
        ``Predictor.predict`` (None = ∞).  Returns (M, O), or (T, M, O) for a 1-D tensor of T times."""
        f0 = check_tensor("f0_test", f0_test, min_dim=2)
        check_tensor("ntk_test_train", ntk_test_train, min_dim=2)
        if f0.dim() != 2 or f0.shape[1] != self.o:
            raise ValueError(f"f0_test must be (M, {self.o}), got {tuple(f0.shape)}")
        m = f0.shape[0]
        if self.full:
            if ntk_test_train.dim() != 4 or ntk_test_train.shape != (m, self.n, self.o, self.o):
                raise ValueError(f"ntk_test_train must have shape ({m}, {self.n}, {self.o}, {self.o}) "
                                 f"like the full ntk_train, got {tuple(ntk_test_train.shape)}")
            cross = _flatten_full(ntk_test_train, "ntk_test_train")
        else:
            if ntk_test_train.shape != (m, self.n):
                raise ValueError(f"ntk_test_train must have shape ({m}, {self.n}), got "
                                 f"{tuple(ntk_test_train.shape)}")
            cross = ntk_test_train
        mean = self.predictor.predict(QueryKernels(ntk_test_train=cross), t).mean
        if self.full:
            mean = mean.reshape(*mean.shape[:-2], m, self.o)
        return f0.to(mean) + mean

    def train_outputs(self, t: Any = None) -> Tensor:
        """f_t(X) on the training inputs (N, O) or (T, N, O), from the eigendecomposition alone
        (no N×N×N product with the kernel)."""
        mean = self.predictor.train_mean(t)
        if self.full:
            mean = mean.reshape(*mean.shape[:-2], self.n, self.o)
        return self.f0_train.to(mean) + mean
