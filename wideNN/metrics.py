"""Losses and scores of predictions, shared by the library and the experiments.

* ``mse_loss(f, y)`` = (1/2N) Σ_i ‖f(x_i) − y_i‖², the training objective of ``wn.train`` (the
  time convention of every prediction), over the last two dims (N, O) of ``f``.
* ``gaussian_log_likelihood(y, mean, variance)`` = log N(y | μ, v) = −½ (log 2πv + (y − μ)²/v)
  per entry, averaged (``reduction="mean"``), summed, or kept (``"none"``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import _all_finite, check_float_tensor, check_positive

__all__ = ["mse_loss", "gaussian_log_likelihood"]

_LOG_2PI = math.log(2 * math.pi)


def _tensor(name: str, v, allow_inf: bool = False) -> Tensor:
    """A real floating tensor with values: NaN entries raise (they would make the metric NaN
    silently, hiding which argument was bad), and inf unless ``allow_inf`` (predictions of a
    diverged run are inf, and an infinite loss is then the right answer)."""
    check_float_tensor(name, v)
    if not _all_finite(v):
        if bool(torch.isnan(v).any()):
            raise ValueError(f"{name} contains NaN entries")
        if not allow_inf:
            raise ValueError(f"{name} contains inf entries")
    return v


def mse_loss(f: Tensor, y: Tensor) -> Tensor:
    """(1/2N) Σ_i ‖f_i − y_i‖² over the last two dims (N, O) (a 1-D pair is N outputs of one
    dimension); leading dims (times, ensemble members) are kept."""
    f, y = _tensor("f", f, allow_inf=True), _tensor("y", y).to(f)
    if f.dim() == 1:
        f = f.unsqueeze(-1)
    if y.dim() == 1:
        y = y.unsqueeze(-1)
    if f.shape[-2:] != y.shape[-2:]:
        raise ValueError(f"f and y have different (N, O) shapes: {tuple(f.shape)} vs {tuple(y.shape)}")
    return 0.5 * (f - y).square().sum(dim=(-2, -1)) / f.shape[-2]


def gaussian_log_likelihood(y: Tensor, mean: Tensor, variance: Tensor, reduction: str = "mean",
                            min_variance: float = 1e-12) -> Tensor:
    """Elementwise log N(y | mean, variance) in nats, variance clamped below at ``min_variance``
    (a zero predictive variance would give −∞ for any miss).  ``variance`` broadcasts against
    ``mean`` (e.g. (N, 1) against (N, O))."""
    y, mean, variance = _tensor("y", y), _tensor("mean", mean, True), _tensor("variance", variance, True)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if bool((variance < 0).any()):
        raise ValueError("variance has negative entries")
    min_variance = check_positive("min_variance", min_variance)
    v = variance.to(mean).clamp_min(min_variance)
    try:
        ll = -0.5 * (_LOG_2PI + v.log() + (y.to(mean) - mean) ** 2 / v)
    except RuntimeError as e:
        raise ValueError(f"y {tuple(y.shape)}, mean {tuple(mean.shape)} and variance "
                         f"{tuple(variance.shape)} do not broadcast: {e}") from None
    return ll.mean() if reduction == "mean" else ll.sum() if reduction == "sum" else ll
