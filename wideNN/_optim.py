"""Optimizers and losses shared by ``wideNN.train`` and ``wideNN.Ensemble.train``.

The optimizers are torch's own (``torch.optim``), configured so that the update rules are

- ``"gd"`` / ``"sgd"``: θ ← θ − η g                                    (``torch.optim.SGD``)
- ``"momentum"`` (heavy ball): v ← μ v + g (v₀ = g), θ ← θ − η v       (``SGD(momentum=μ)``)
- ``"adam"``: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − η m̂ / (√v̂ + ε)   (``torch.optim.Adam``)

Every rule is elementwise, so stacking the parameters of many independent networks into one
tensor (``Ensemble``) updates each member exactly as if it were trained alone.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor

from ._checks import check_pair, check_positive, real_number

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
LOSSES = ("mse", "xent")


@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
    """Which update rule and its constants; validated on construction (clear messages)."""

    name: str = "gd"
    learning_rate: float = 1.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        # bool / str / wrong-length values get a TypeError naming the argument (frozen: set via object)
        object.__setattr__(self, "learning_rate", check_positive("learning_rate", self.learning_rate))
        object.__setattr__(self, "momentum", real_number("momentum", self.momentum))
        object.__setattr__(self, "betas", check_pair("betas", self.betas, 0.0, 1.0))
        object.__setattr__(self, "eps", check_positive("eps", self.eps))
        if self.name == "momentum" and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def build(self, params: Sequence[Tensor]) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimizer over ``params`` (leaf tensors) for this rule."""
        lr = float(self.learning_rate)
        if self.name in ("gd", "sgd"):
            return torch.optim.SGD(params, lr=lr)
        if self.name == "momentum":
            return torch.optim.SGD(params, lr=lr, momentum=float(self.momentum))
        return torch.optim.Adam(params, lr=lr, betas=tuple(map(float, self.betas)), eps=float(self.eps))


def apply_step(opt: torch.optim.Optimizer, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
    """One update of ``opt`` from gradients computed elsewhere (``torch.autograd.grad``)."""
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    for p in params:
        p.grad = None


def loss_values(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """Per-model loss, reducing the last two dims (N, O) of ``out`` and keeping any leading
    (ensemble) dims.

    ``"mse"``:  L = (1/2N) Σ_i ‖f(x_i) − y_i‖²   (the convention of docs/design.md)
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
