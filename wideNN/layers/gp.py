"""Evaluation of a ``Serial`` description inside ``wideNN.NNGPKernel`` / ``NTKKernel``.

GPyTorch hands kernels 2-D inputs (…, N, D); a layered description needs (N, *in_shape), so the
kernel is declared with ``in_shape`` and each example's D = ∏ in_shape features are reshaped.
The learnable σ_w², σ_b² replace the description's top-level defaults (layers that set their
own variances keep them).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .serial import Serial, _check_in_shape


def check_in_shape(architecture, in_shape) -> tuple[int, ...] | None:
    """The declared per-example shape (required for a ``Serial``, ignored by the MLP shorthand)."""
    if not isinstance(architecture, Serial):
        if in_shape is not None and len(_check_in_shape(in_shape)) != 1:
            raise ValueError(f"in_shape {tuple(in_shape)} needs a Serial description; the MLP "
                             f"shorthand takes flat inputs")
        return None
    if in_shape is None:
        raise ValueError("a Serial description needs in_shape=(C,), (C, L) or (C, H, W): GPyTorch "
                         "passes flattened inputs (N, C·H·W)")
    shape = _check_in_shape(in_shape)
    architecture.plan(shape)  # errors about the description surface at construction
    return shape


def serial_forward(template: Serial, in_shape: Sequence[int], x1: Tensor, x2: Tensor, w, b, *,
                   diag: bool, which: str, width: int | None, block_size: int | None) -> Tensor:
    """The kernel of ``template`` with top-level variances (w, b) on flattened inputs."""
    size = math.prod(in_shape)
    for name, x in (("x1", x1), ("x2", x2)):
        if x.shape[-1] != size:
            raise ValueError(f"{name} has {x.shape[-1]} features per example but the kernel was "
                             f"declared with in_shape={tuple(in_shape)} ({size} features)")
    if isinstance(w, Tensor) and w.numel() != 1:
        raise ValueError("a Serial description supports batch_shape=() kernels only")
    arch = template.replace(weight_variance=w.reshape(()) if isinstance(w, Tensor) else w,
                            bias_variance=b.reshape(()) if isinstance(b, Tensor) else b)
    same = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
    batch = x1.shape[:-2]
    a = x1.reshape(-1, *x1.shape[-2:])
    c = x2.reshape(-1, *x2.shape[-2:]).expand(a.shape[0], -1, -1) if x2.dim() > 2 or batch else x2[None]
    outs = []
    for i in range(a.shape[0]):
        xa = a[i].reshape(a.shape[1], *in_shape)
        xb = None if same else c[i].reshape(c.shape[1], *in_shape)
        nngp, ntk = arch._kernels(xa, xb, diag, block_size, width, which == "nngp", which == "ntk")
        outs.append(ntk if which == "ntk" else nngp)
    out = torch.stack(outs)
    return out.reshape(*batch, *out.shape[1:])


def serial_defaults(architecture: Serial) -> dict:
    """The top-level variances and parameterization a ``Serial`` uses (its own or the defaults)."""
    from .base import Defaults
    d = Defaults().override(architecture.weight_variance, architecture.bias_variance,
                            architecture.parameterization)
    return dict(weight_variance=d.weight_variance, bias_variance=d.bias_variance,
                parameterization=d.parameterization)
