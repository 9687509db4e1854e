"""Finite fully-connected networks in the NTK or the standard parameterization.

Parameters are drawn W ~ N(0, 1), b ~ N(0, 1) and layer l maps width n to n':

- ``"ntk"``:      z = √(σ_w²/n) · W x + σ_b · b
- ``"standard"``: W ~ N(0, σ_w²/n), b ~ N(0, σ_b²), z = W x + b

Both give the same function distribution at initialization (hence the same NNGP); the NTK
and the gradient-descent dynamics differ.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ._checks import check_device, check_not_meta_for, check_seed, check_variance, fits_in_memory

__all__ = ["Dense", "Network"]


def init_parameters(module: nn.Module, weight_shape: tuple[int, ...], fan_in: int,
                    generator: torch.Generator | None, dtype: torch.dtype,
                    device: torch.device | str | None) -> None:
    """Give ``module`` (which holds ``weight_variance``, ``bias_variance``, ``parameterization``)
    its ``weight`` of ``weight_shape``, its ``bias`` (one per output) and the scales of its
    parameterization: W, b ~ N(0, 1) with (weight_scale, bias_scale) = (√(σ_w²/fan_in), σ_b) in the
    NTK parameterization, or W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²) and unit scales in the
    standard one.  Drawn in float64 on the CPU, so one seed gives the same network on every
    dtype and device."""
    with fits_in_memory(f"a weight of shape {tuple(weight_shape)} (from the widths / kernel sizes)"):
        w = torch.randn(*weight_shape, generator=generator, dtype=torch.float64)
    b = torch.randn(weight_shape[0], generator=generator, dtype=torch.float64)
    weight_scale = math.sqrt(module.weight_variance / fan_in)
    bias_scale = math.sqrt(module.bias_variance)
    if module.parameterization == "ntk":
        module.weight_scale, module.bias_scale = weight_scale, bias_scale
    else:
        w, b = w * weight_scale, b * bias_scale
        module.weight_scale, module.bias_scale = 1.0, 1.0
    module.weight = nn.Parameter(w.to(dtype=dtype, device=device))
    module.bias = nn.Parameter(b.to(dtype=dtype, device=device))


class Dense(nn.Module):
    """A fully-connected layer with explicit parameterization.

    ``weight`` (out, in) and ``bias`` (out,) are the trainable parameters; the layer computes
    z = weight_scale · x Wᵀ + bias_scale · b with (weight_scale, bias_scale) =
    (√(σ_w²/in), σ_b) in the NTK parameterization and (1, 1) in the standard one, where the
    variances are absorbed into the initial draw instead.
    """

    def __init__(self, in_features: int, out_features: int, weight_variance: float,
                 bias_variance: float, parameterization: str = "ntk", *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Dense needs positive sizes, got {in_features} -> {out_features}")
        check_variance("weight_variance", weight_variance)
        check_variance("bias_variance", bias_variance)
        if parameterization not in ("ntk", "standard"):
            raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight_variance, self.bias_variance = float(weight_variance), float(bias_variance)
        self.parameterization = parameterization
        init_parameters(self, (out_features, in_features), in_features, generator, dtype, device)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return torch.addmm(self.bias * self.bias_scale, x, self.weight.T, alpha=self.weight_scale)
        return torch.nn.functional.linear(x, self.weight * self.weight_scale, self.bias * self.bias_scale)

    def extra_repr(self) -> str:
        return (f"{self.in_features} -> {self.out_features}, weight_variance={self.weight_variance}, "
                f"bias_variance={self.bias_variance}, parameterization={self.parameterization!r}")


class Network(nn.Sequential):
    """Dense → φ → Dense → φ → … → Dense: ``depth`` hidden layers of the given widths.

    A plain ``nn.Sequential`` (so any tool that walks Sequential models works on it), with the
    architecture recorded in ``arch``, ``widths``, ``in_features`` and ``out_features``.
    """

    def __init__(self, arch, in_features: int, widths: Sequence[int], out_features: int, *,
                 seed: int | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        generator = None
        device = check_device("device", device)
        if seed is not None:
            generator = torch.Generator().manual_seed(check_seed("seed", seed))
        sizes = [int(in_features), *[int(w) for w in widths], int(out_features)]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                # a fresh activation per layer: a module shared by every layer of every network
                # built from one description would carry hooks or state set on one into all
                layers.append(copy.deepcopy(arch.phi))
            layers.append(Dense(n_in, n_out, arch.weight_variance, arch.bias_variance,
                                arch.parameterization, generator=generator, dtype=dtype, device=device))
        super().__init__(*layers)
        self.arch = arch
        self.widths = list(sizes[1:-1])
        self.in_features, self.out_features = sizes[0], sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        check_not_meta_for("x", x, self)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"inputs have {x.shape[-1]} features but the network expects "
                             f"in_features={self.in_features}")
        return super().forward(x)

    def __getitem__(self, idx):
        # a slice is no longer a whole Network (e.g. net[:-1] drops the readout): return the
        # layers as a plain nn.Sequential instead of re-running Network.__init__
        if isinstance(idx, slice):
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)

    def dense_layers(self) -> list[Dense]:
        """The Dense layers, input to output."""
        return [m for m in self if isinstance(m, Dense)]
