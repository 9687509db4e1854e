"""``Conv``: a convolution over 1-D (N, C, L) or 2-D (N, C, H, W) inputs.

Finite layer (NTK parameterization, W, b ~ N(0, 1)): z_p = √(σ_w²/(k·C)) Σ_{i, c} W_{c i} x_{c, s·p+i}
+ σ_b b with k the number of filter positions, as in neural-tangents' stax.

Kernel (Novak et al. 2019, "Bayesian deep convolutional networks with many channels are
Gaussian processes", eq. (7); Garriga-Alonso et al. 2019; Arora et al. 2019 "On exact
computation with an infinitely wide neural net" for the NTK):

    op(K)[p, p'] = (1/k) Σ_i K[s·p + i, s·p' + i],    K' = σ_b² + σ_w² op(K),   Θ' = K' + σ_w² op(Θ)

over the padded covariance (zeros / wrapped for "same" / "circular").  op is separable over the
spatial dims: in the full layout, per dim a convolution of the (S, S') plane with the diagonal
filter I/k_d and stride (s, s); in the diagonal layout (only p = p' kept) a box filter of the
window's size and stride (``wideNN.layers._windows``).
"""
from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from .._checks import check_int
from ._affine import affine
from ._windows import Window, check_padding, check_window_arg, conv_diagonal, conv_full, resolve_window
from .base import Env, Layer, LayerError, Step, check_layer_variances, shape_str


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Conv(Layer):
    """A convolution layer description.

    Args:
        kernel_size: int or tuple (one per spatial dim).
        stride: int or tuple.
        padding: ``"same"``, ``"valid"`` or ``"circular"``.
        channels: output channels (None: ``width``, or ``out_features`` for the final layer).
        weight_variance: σ_w² ≥ 0; None inherits the enclosing ``Serial``'s.
        bias_variance: σ_b² ≥ 0; None inherits the enclosing ``Serial``'s.
        parameterization: ``"ntk"`` or ``"standard"``; None inherits the enclosing ``Serial``'s.
    """

    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: str = "same"
    channels: int | None = None
    weight_variance: float | Tensor | None = None
    bias_variance: float | Tensor | None = None
    parameterization: str | None = None
    kind = "Conv"

    def __post_init__(self) -> None:
        check_window_arg("Conv kernel_size", self.kernel_size)
        check_window_arg("Conv stride", self.stride)
        object.__setattr__(self, "padding", check_padding("Conv", self.padding))
        if self.channels is not None:
            object.__setattr__(self, "channels", check_int("Conv channels", self.channels))
        check_layer_variances("Conv", self.weight_variance, self.bias_variance, self.parameterization)

    def _has_linear(self) -> bool:
        return True

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        if len(in_shape) not in (2, 3):
            raise LayerError(f"{env.label}: Conv needs inputs (C, L) or (C, H, W) per example, got "
                             f"shape {shape_str(in_shape)}")
        window, spatial = resolve_window("Conv", env.label, tuple(in_shape[1:]), self.kernel_size,
                                         self.stride, self.padding)
        d = env.defaults.override(self.weight_variance, self.bias_variance, self.parameterization)
        out = self.channels or (env.out_features if env.final else env.width)
        env.gaussian = True
        return ConvStep(env.label, in_shape, (out, *spatial), window, d)


class ConvStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape, window: Window, defaults):
        self.label, self.in_shape, self.out_shape, self.window = label, in_shape, out_shape, window
        self.weight_variance, self.bias_variance = defaults.weight_variance, defaults.bias_variance
        self.parameterization = defaults.parameterization

    def op(self, t: Tensor, full: bool) -> Tensor:
        """Σ_i K[s·p + i, s·p' + i] on a full- or diagonal-layout covariance (times 1/k: ``apply``)."""
        out = tuple(self.out_shape[1:])
        return conv_full(self.window, t, out) if full else conv_diagonal(self.window, t, out)

    def apply(self, state, ev):
        fan_in = None if self.in_shape[0] is None else self.in_shape[0] * self.window.size
        return affine(state, lambda t: self.op(t, state.full), tuple(self.out_shape[1:]),
                      self.weight_variance, self.bias_variance, self.parameterization, fan_in,
                      self.label, ev.compute_ntk, scale=1.0 / self.window.size)

    def module(self, generator, dtype, device) -> nn.Module:
        from .modules import Convolution
        return Convolution(self.in_shape[0], self.out_shape[0], self.window, float(self.weight_variance),
                           float(self.bias_variance), self.parameterization, generator=generator,
                           dtype=dtype, device=device)
