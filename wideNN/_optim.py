"""Optimizers and losses shared by ``wideNN.train`` and ``wideNN.Ensemble.train``.

The update rules are the textbook ones (written out here so that the time convention is
explicit and identical for a single network and a vmapped ensemble):

- ``"gd"`` / ``"sgd"``: θ ← θ − η g
- ``"momentum"`` (heavy ball, PyTorch convention): v ← μ v + g, θ ← θ − η v
- ``"adam"``: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − η m̂ / (√v̂ + ε)

Every rule is elementwise, so stacking the parameters of many independent networks into one
tensor (``Ensemble``) updates each member exactly as if it were trained alone.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ._checks import check_pair, check_positive, real_number

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
LOSSES = ("mse", "xent")


class Optimizer:
    """In-place update of a list of tensors from their gradients (no autograd graph)."""

    def __init__(self, name: str, learning_rate: float, *, momentum: float = 0.9,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
        self.name, self.lr = name, check_positive("learning_rate", learning_rate)
        self.momentum = real_number("momentum", momentum)
        self.betas = check_pair("betas", betas, 0.0, 1.0)
        self.eps = check_positive("eps", eps)
        if name == "momentum" and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self._state: list[list[Tensor]] | None = None
        self._t = 0

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        params, grads = list(params), list(grads)
        if self.name in ("gd", "sgd"):
            torch._foreach_add_(params, grads, alpha=-self.lr)
            return
        if self.name == "momentum":
            if self._state is None:
                # PyTorch convention: the first velocity is the gradient itself
                self._state = [[g.clone() for g in grads]]
            else:
                torch._foreach_mul_(self._state[0], self.momentum)
                torch._foreach_add_(self._state[0], grads)
            torch._foreach_add_(params, self._state[0], alpha=-self.lr)
            return
        b1, b2 = self.betas
        if self._state is None:
            self._state = [[torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]]
        m, v = self._state
        self._t += 1
        torch._foreach_lerp_(m, grads, 1.0 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - b2)
        c1, c2 = 1.0 - b1 ** self._t, 1.0 - b2 ** self._t
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(c2))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-self.lr / c1)


def loss_values(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """Per-model loss, reducing the last two dims (N, O) of ``out`` and keeping any leading
    (ensemble) dims.

    ``"mse"``:  L = (1/2N) Σ_i ‖f(x_i) − y_i‖²   (the DESIGN.md convention)
    ``"xent"``: L = (1/N) Σ_i −Σ_c p_ic log softmax(f(x_i))_c, with p the one-hot of integer
    labels y (N,) or the given probabilities y (N, O).
    """
    n = out.shape[-2]
    if loss == "mse":
        return 0.5 * (out - y).square().sum(dim=(-2, -1)) / n
    logp = torch.log_softmax(out, dim=-1)
    if not torch.is_floating_point(y):
        return -logp.gather(-1, y.unsqueeze(-1).expand(*logp.shape[:-1], 1)).sum(dim=(-2, -1)) / n
    return -(y * logp).sum(dim=(-2, -1)) / n
