"""The finite ``nn.Module``s that ``Serial.build`` assembles (NCHW / NCL layout).

``Convolution`` follows the parameterization conventions of ``wideNN.networks.Dense`` (and of
neural-tangents' stax): W ~ N(0, 1), b ~ N(0, 1), drawn in float64 on the CPU so one seed gives
the same network on every dtype and device;

- ``"ntk"``:      z = √(σ_w²/(k·C)) · (W ⋆ x) + σ_b · b
- ``"standard"``: W ~ N(0, σ_w²/(k·C)), b ~ N(0, σ_b²), z = W ⋆ x + b

with k the number of filter positions and C the input channels.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..networks import init_parameters
from ._windows import Window

__all__ = ["Convolution", "AvgPooling", "GlobalAvgPooling", "ResidualModule"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class Convolution(nn.Module):
    """A 1-D/2-D convolution with explicit parameterization and stax padding (see module doc)."""

    def __init__(self, in_channels: int, out_channels: int, window: Window, weight_variance: float,
                 bias_variance: float, parameterization: str = "ntk", *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device=None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.window = int(in_channels), int(out_channels), window
        self.weight_variance, self.bias_variance = float(weight_variance), float(bias_variance)
        self.parameterization = parameterization
        init_parameters(self, (self.out_channels, self.in_channels, *window.kernel),
                        self.in_channels * window.size, generator, dtype, device)

    def forward(self, x: Tensor) -> Tensor:
        conv = _CONV[len(self.window.kernel)]
        return conv(self.window.pad(x), self.weight * self.weight_scale, self.bias * self.bias_scale,
                    stride=self.window.stride)

    def extra_repr(self) -> str:
        w = self.window
        return (f"{self.in_channels} -> {self.out_channels}, kernel_size={w.kernel}, stride={w.stride}, "
                f"padding={w.padding!r}, weight_variance={self.weight_variance}, "
                f"bias_variance={self.bias_variance}, parameterization={self.parameterization!r}")


class AvgPooling(nn.Module):
    """Average pooling with stax padding (padded zeros count in the average)."""

    def __init__(self, window: Window) -> None:
        super().__init__()
        self.window = window

    def forward(self, x: Tensor) -> Tensor:
        w = self.window
        return _POOL[len(w.kernel)](w.pad(x), w.kernel, w.stride)

    def extra_repr(self) -> str:
        w = self.window
        return f"kernel_size={w.kernel}, stride={w.stride}, padding={w.padding!r}"


class GlobalAvgPooling(nn.Module):
    """The mean over the ``spatial_dims`` trailing dims: (N, C, *S) → (N, C)."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = int(spatial_dims)

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(-self.spatial_dims, 0)))


class ResidualModule(nn.Module):
    """x + block(x)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)
