"""Assemble the finite network of a resolved description.

Parameters are drawn in layer order from one ``torch.Generator`` seeded by ``seed``, in float64
on the CPU, then cast, so one seed gives the same network on every dtype and device.  The
result is a ``LayerNetwork`` (an ``nn.Sequential`` that checks its input shape); a fully-connected
description on flat inputs gives the ``wideNN.networks.Network`` of the equivalent
``Architecture`` (the same parameters, and the structured empirical-NTK path applies).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_not_meta_for, check_seed

__all__ = ["LayerNetwork", "build"]


class LayerNetwork(nn.Sequential):
    """The finite network of a ``Serial`` description; ``in_shape`` is the per-example shape."""

    def __init__(self, modules, in_shape: tuple[int, ...], out_shape: tuple, description) -> None:
        super().__init__(*modules)
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.description = description

    def forward(self, x: Tensor) -> Tensor:
        check_not_meta_for("x", x, self)
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"inputs have shape {tuple(x.shape)} but the network was built for "
                             f"in_shape={self.in_shape} (inputs (N, {', '.join(map(str, self.in_shape))}))")
        return super().forward(x)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)


def build(description, root, seed, dtype, device) -> nn.Module:
    from ._mlp import as_architecture
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(check_seed("seed", seed))
    arch = as_architecture(description, root)
    if arch is not None and len(root.in_shape) == 1:
        widths = [s.out_shape[0] for s in _dense_steps(root)]
        return arch.build(root.in_shape[0], widths[:-1], widths[-1], seed=seed, dtype=dtype, device=device)
    modules = [s.module(generator, dtype, device) for s in root.steps]
    return LayerNetwork(modules, root.in_shape, root.out_shape, description)


def _dense_steps(root):
    from .dense import DenseStep
    return [s for s in _walk(root) if isinstance(s, DenseStep)]


def _walk(step):
    yield step
    for child in getattr(step, "steps", ()):
        yield from _walk(child)
