"""``Dense``: a fully-connected layer on flat inputs (N, C).

Kernel (see ``wideNN.layers._affine``): K' = σ_b² + σ_w² K, Θ' = K' + σ_w² Θ in the NTK
parameterization — the MLP recursion of ``wideNN.analytic`` one layer at a time.  After
``Flatten`` the state K is already the mean over positions of the per-position covariance, so
this is stax's convention of dividing by the flattened fan-in C·P.
"""
from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from .._checks import check_int
from ..networks import Dense as _DenseModule
from ._affine import affine
from .base import Env, Layer, LayerError, Step, check_layer_variances, shape_str


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dense(Layer):
    """A fully-connected layer z = √(σ_w²/C) W x + σ_b b (NTK parameterization), W, b ~ N(0, 1).

    Args:
        out_features: output size (None: ``width``, or ``out_features`` for the final layer).
        weight_variance: σ_w² ≥ 0; None inherits the enclosing ``Serial``'s.
        bias_variance: σ_b² ≥ 0; None inherits the enclosing ``Serial``'s.
        parameterization: ``"ntk"`` or ``"standard"``; None inherits the enclosing ``Serial``'s.
    """

    out_features: int | None = None
    weight_variance: float | Tensor | None = None
    bias_variance: float | Tensor | None = None
    parameterization: str | None = None
    kind = "Dense"

    def __post_init__(self) -> None:
        if self.out_features is not None:
            object.__setattr__(self, "out_features", check_int("Dense out_features", self.out_features))
        check_layer_variances("Dense", self.weight_variance, self.bias_variance, self.parameterization)

    def _has_linear(self) -> bool:
        return True

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        if len(in_shape) != 1:
            raise LayerError(f"{env.label}: Dense needs flat inputs (C,) per example, got shape "
                             f"{shape_str(in_shape)}; put Flatten() or GlobalAvgPool() before it")
        d = env.defaults.override(self.weight_variance, self.bias_variance, self.parameterization)
        out = self.out_features or (env.out_features if env.final else env.width)
        env.gaussian = True
        return DenseStep(env.label, in_shape, (out,), d.weight_variance, d.bias_variance, d.parameterization)


class DenseStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape, weight_variance, bias_variance, parameterization):
        self.label, self.in_shape, self.out_shape = label, in_shape, out_shape
        self.weight_variance, self.bias_variance = weight_variance, bias_variance
        self.parameterization = parameterization

    def mark_modes(self, out_full: bool) -> bool:
        self.out_full = self.in_full = False
        return False

    def apply(self, state, ev):
        # a copy, because affine updates op's result in place when no gradient is needed
        return affine(state, lambda t: t.clone(), (), self.weight_variance, self.bias_variance,
                      self.parameterization, self.in_shape[0], self.label, ev.compute_ntk)

    def module(self, generator, dtype, device) -> nn.Module:
        return _DenseModule(self.in_shape[0], self.out_shape[0], float(self.weight_variance),
                            float(self.bias_variance), self.parameterization, generator=generator,
                            dtype=dtype, device=device)
