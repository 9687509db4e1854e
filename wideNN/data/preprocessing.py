"""Input preprocessing: per-example ``center_norm``, per-feature :class:`Standardization`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_float_tensor


@dataclass(frozen=True, eq=False)
class Standardization:
    """Per-feature affine statistics: ``apply(x) = (x - mean) / std``, ``invert(z) = z * std + mean``.

    ``std`` is the divisor actually used: features with zero spread carry ``std = 1`` so
    they are centred but left unscaled.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> "Standardization":
        """Statistics of the columns of a 2-D tensor (population std, ``ddof=0``)."""
        _check_matrix(x, "x")
        # Constant columns are detected exactly: their float mean can be off by an ulp,
        # which would leave tiny non-zero values instead of an exact zero column.
        constant = (x == x[:1]).all(dim=0)
        mean = torch.where(constant, x[0], x.mean(dim=0))
        std = torch.where(constant, torch.ones_like(mean), x.std(dim=0, correction=0))
        return cls(mean=mean, std=std)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z) + self.mean.to(z)


def preprocess(
    x: torch.Tensor,
    method: str,
    stats: Standardization | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Standardization | None]:
    """Preprocess a ``(N, d)`` floating tensor; returns a new tensor of the same dtype.

    Methods:

    * ``"none"``: ``x`` unchanged (a copy).
    * ``"center_norm"``: per example, ``x_i <- sqrt(d) * (x_i - mean(x_i)) / ||x_i - mean(x_i)||``,
      so every row has zero mean and norm ``sqrt(d)`` (``x_i . x_i / d = 1``, the scale at which
      the first-layer kernel ``sigma_b^2 + sigma_w^2 x.x'/d`` is order one). This is the
      preprocessing with which the Lee et al. (2018) MNIST accuracies are reproduced.
      Rows that are constant cannot be normalized and raise ``ValueError``.
    * ``"standardize"``: per feature, ``x[:, j] <- (x[:, j] - mean_j) / std_j`` with
      :class:`Standardization` statistics taken from ``stats`` if given (e.g. the training
      set's, to transform a test set) and otherwise fitted on ``x``; zero-std features are
      centred only.

    With ``return_stats=True`` returns ``(x_out, stats)`` where ``stats`` is the
    :class:`Standardization` used (``None`` for the other methods).
    Raises ``ValueError`` for an unknown method, a tensor that is not 2-D, NaN or infinite
    entries, or ``stats`` whose size does not match ``d``; ``TypeError`` for non-float input.
    """
    _check_matrix(x, "x")
    if method == "none":
        out, used = x.clone(), None
    elif method == "center_norm":
        centred = x - x.mean(dim=1, keepdim=True)
        norms = centred.norm(dim=1, keepdim=True)
        # A relative threshold: a row of float noise around a constant is still "constant".
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        bad = (norms <= 10 * torch.finfo(x.dtype).eps * scale * x.shape[1] ** 0.5).flatten()
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:10].tolist()
            raise ValueError(f"center_norm: rows {rows} are constant and cannot be normalized")
        out, used = centred * (x.shape[1] ** 0.5 / norms), None
    elif method == "standardize":
        if stats is not None and not isinstance(stats, Standardization):
            raise TypeError(f"stats must be a Standardization (from Standardization.fit), got "
                            f"{type(stats).__name__}")
        if stats is None:
            used = Standardization.fit(x)
        else:
            if stats.mean.shape != (x.shape[1],) or stats.std.shape != (x.shape[1],):
                raise ValueError(
                    f"stats are for {tuple(stats.mean.shape)} features, x has {x.shape[1]}"
                )
            if not (bool(torch.isfinite(stats.mean).all()) and bool(torch.isfinite(stats.std).all())):
                raise ValueError("stats.mean and stats.std must be finite")
            if bool((stats.std <= 0).any()):
                raise ValueError(f"stats.std must be positive (the divisor; constant features carry 1), "
                                 f"got minimum {float(stats.std.min()):.3g}")
            used = stats
        out = used.apply(x)
    else:
        raise ValueError(
            f"unknown preprocessing method {method!r}; expected 'none', 'center_norm' or 'standardize'"
        )
    return (out, used) if return_stats else out


def _check_matrix(x: Any, name: str) -> None:
    check_float_tensor(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite entries")
