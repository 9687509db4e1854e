"""``AvgPool`` and ``GlobalAvgPool``: averages over spatial windows.

Pooling mixes positions, so its kernel needs the full position×position covariance
(Novak et al. 2019, §3.2; Arora et al. 2019 for the CNTK with global average pooling):

    AvgPool:        K'[p, p'] = (1/k²) Σ_{i, j} K[s·p + i, s·p' + j]       (Θ alike)
    GlobalAvgPool:  K' = (1/P²) Σ_{p, p'} K[p, p']                          (Θ alike)

The window sum is separable: per spatial dim, a window average along S and then along S'
(``wideNN.layers._windows.pool_full``).  Padded positions count in the average (``count_include_pad``, as
torch's and stax's defaults).
"""
from __future__ import annotations

import dataclasses

from torch import nn

from ._state import KernelState
from ._windows import Window, check_padding, check_window_arg, pool_full, resolve_window
from .base import Env, Layer, LayerError, Step, shape_str


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class AvgPool(Layer):
    """Average pooling over windows of ``kernel_size`` (stride defaults to the window)."""

    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: str = "valid"
    kind = "AvgPool"

    def __post_init__(self) -> None:
        check_window_arg("AvgPool kernel_size", self.kernel_size)
        if self.stride is not None:
            check_window_arg("AvgPool stride", self.stride)
        object.__setattr__(self, "padding", check_padding("AvgPool", self.padding))

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        if len(in_shape) not in (2, 3):
            raise LayerError(f"{env.label}: AvgPool needs inputs (C, L) or (C, H, W) per example, "
                             f"got shape {shape_str(in_shape)}")
        stride = self.kernel_size if self.stride is None else self.stride
        window, spatial = resolve_window("AvgPool", env.label, tuple(in_shape[1:]), self.kernel_size,
                                         stride, self.padding)
        return AvgPoolStep(env.label, in_shape, (in_shape[0], *spatial), window)


class AvgPoolStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape, window: Window):
        self.label, self.in_shape, self.out_shape, self.window = label, in_shape, out_shape, window

    def mark_modes(self, out_full: bool) -> bool:
        self.out_full, self.in_full = True, True
        return True

    def apply(self, state: KernelState, ev) -> KernelState:
        out = tuple(self.out_shape[1:])
        return state.map(lambda t: pool_full(self.window, t, out), out)

    def module(self, generator, dtype, device) -> nn.Module:
        from .modules import AvgPooling
        return AvgPooling(self.window)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GlobalAvgPool(Layer):
    """The mean over all spatial positions: (N, C, *S) → (N, C)."""

    kind = "GlobalAvgPool"

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        if len(in_shape) < 2:
            raise LayerError(f"{env.label}: GlobalAvgPool needs spatial inputs (C, L) or (C, H, W) "
                             f"per example, got shape {shape_str(in_shape)}")
        return GlobalAvgPoolStep(env.label, in_shape, (in_shape[0],))


class GlobalAvgPoolStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape):
        self.label, self.in_shape, self.out_shape = label, in_shape, out_shape

    def mark_modes(self, out_full: bool) -> bool:
        self.out_full, self.in_full = False, True
        return True

    def apply(self, state: KernelState, ev) -> KernelState:
        d = len(self.in_shape) - 1
        dims = tuple(range(-2 * d, 0))
        out = state.map(lambda t: t.mean(dim=dims), ())
        out.full = False
        return out

    def module(self, generator, dtype, device) -> nn.Module:
        from .modules import GlobalAvgPooling
        return GlobalAvgPooling(len(self.in_shape) - 1)
