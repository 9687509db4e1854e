"""``Serial``: a composition of layers — the one description that yields a finite network
(``build``), its analytic NNGP and NTK (``kernels``), and GPyTorch kernels.

Each layer transforms the kernel state in turn (neural-tangents' ``serial``).  Before the
kernels run, the whole description decides the position layout of every step, from the end
backwards: pooling needs the full position×position covariance of its input, a flatten readout
only the per-position variances, convolutions and activations need what follows them (see
``wideNN.layers._state``).  A fully-connected description Dense, φ, …, Dense on flat inputs is
recognised and computed by ``wideNN.analytic.kernels`` (``wideNN.layers._mlp``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .. import activations as _acts
from .._checks import check_float_dtype, check_int
from ._scale import unscaled
from .activation import ActivationLayer
from .base import Defaults, Env, Layer, LayerError, Step, check_layer_variances

__all__ = ["Serial", "as_layer"]


def as_layer(layer: Any, where: str) -> Layer:
    """A Layer from a layer, an ``Activation`` object or an activation name."""
    if isinstance(layer, Layer):
        return layer
    if isinstance(layer, (str, _acts.Activation)):
        try:
            return ActivationLayer(_acts.get(layer))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    raise TypeError(f"{where}: expected a wideNN layer (Dense, Conv, AvgPool, GlobalAvgPool, Flatten, "
                    f"Residual, Serial), an activation or an activation name, got {type(layer).__name__}")


class Serial(Layer):
    """Layers applied in order; the variances given here are the defaults of the layers inside.

    Args:
        *layers (Layer | Activation | str): ``Dense``, ``Conv``, ``AvgPool``, ``GlobalAvgPool``,
            ``Flatten``, ``Residual``, nested ``Serial``, activations (objects of
            ``wn.activations`` or names like ``"relu"``).
        weight_variance: σ_w² ≥ 0 of the layers that do not set their own (None: the enclosing
            description's; at the top 2.0).  A scalar tensor may require grad: the kernels are
            differentiable in it.
        bias_variance: σ_b² ≥ 0, likewise (at the top 0.0).
        parameterization: ``"ntk"`` (default at the top) or ``"standard"``.
    """

    kind = "Serial"

    def __init__(self, *layers, weight_variance: float | Tensor | None = None,
                 bias_variance: float | Tensor | None = None, parameterization: str | None = None) -> None:
        if not layers:
            raise ValueError("Serial needs at least one layer")
        self.layers = tuple(as_layer(l, f"layer {i}") for i, l in enumerate(layers))
        check_layer_variances("Serial", weight_variance, bias_variance, parameterization)
        self.weight_variance, self.bias_variance = weight_variance, bias_variance
        self.parameterization = parameterization

    def replace(self, **changes) -> "Serial":
        """A copy with some of ``weight_variance``, ``bias_variance``, ``parameterization`` changed."""
        unknown = set(changes) - {"weight_variance", "bias_variance", "parameterization"}
        if unknown:
            raise TypeError(f"Serial.replace got unknown fields {sorted(unknown)}")
        kw = dict(weight_variance=self.weight_variance, bias_variance=self.bias_variance,
                  parameterization=self.parameterization)
        kw.update(changes)
        return Serial(*self.layers, **kw)

    def __repr__(self) -> str:
        inner = ", ".join(_layer_repr(l) for l in self.layers)
        kw = [f"{k}={v!r}" for k, v in (("weight_variance", self.weight_variance),
                                         ("bias_variance", self.bias_variance),
                                         ("parameterization", self.parameterization)) if v is not None]
        return f"Serial({', '.join([inner, *kw]) if kw else inner})"

    def _has_linear(self) -> bool:
        return any(l._has_linear() for l in self.layers)

    # -- resolution ------------------------------------------------------------------------
    def resolve(self, in_shape: tuple, env: Env) -> "SerialStep":
        defaults = env.defaults.override(self.weight_variance, self.bias_variance, self.parameterization)
        linear = [i for i, l in enumerate(self.layers) if l._has_linear() and _outside_residual(l)]
        final = linear[-1] if (env.final and linear) else None
        steps, shape = [], tuple(in_shape)
        prefix = env.label + (" > " if env.label and not env.label.endswith(" > ") else "")
        for i, layer in enumerate(self.layers):
            kind = type(layer.activation).__name__ if isinstance(layer, ActivationLayer) else layer.kind
            child = env.child(f"{prefix}layer {i} ({kind})", final=(i == final), defaults=defaults)
            child.counter = env.counter
            step = layer.resolve(shape, child)
            env.gaussian = child.gaussian
            steps.append(step)
            shape = tuple(step.out_shape)
        return SerialStep(env.label or "Serial", tuple(in_shape), shape, steps)

    def plan(self, in_shape: Sequence[int] | int, width: int | None = None,
             out_features: int | None = None) -> "SerialStep":
        """The resolved steps for inputs of ``in_shape`` (C,) / (C, L) / (C, H, W), with the
        position layout of every step decided (``Step.in_full`` / ``out_full``)."""
        shape = _check_in_shape(in_shape)
        top = Defaults().override(self.weight_variance, self.bias_variance, self.parameterization)
        env = Env(top, width, out_features, final=True, gaussian=False, label="", counter=[0])
        root = self.resolve(shape, env)
        root.n_activations = env.counter[0]
        root.mark_modes(False)
        return root

    # -- finite network --------------------------------------------------------------------
    def build(self, in_shape: Sequence[int] | int, width: int, out_features: int, *,
              seed: int | None = None, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> nn.Module:
        """A finite network for inputs (N, *in_shape): an ``nn.Sequential`` of torch modules.

        Every Dense/Conv gets ``width`` output channels except the final one (``out_features``);
        a layer's own ``out_features``/``channels`` overrides.  Parameters are drawn W, b ~ N(0, 1)
        in float64 on the CPU in layer order, so one ``seed`` gives the same network on every
        dtype and device.  A fully-connected description gives a ``wideNN.networks.Network``.
        """
        from .build import build
        width = check_int("width", width)
        out_features = check_int("out_features", out_features)
        check_float_dtype(dtype)
        return build(self, self.plan(in_shape, width, out_features), seed, dtype, device)

    # -- analytic kernels ------------------------------------------------------------------
    def kernels(self, x1: Tensor, x2: Tensor | None = None, *, diag: bool = False,
                block_size: int | None = None, width: int | None = None,
                widths: int | Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """``(nngp, ntk)`` between x1 (N, *in_shape) and x2 (M, *in_shape) (x2=None: x1 itself).

        Returns (N, M) each, or (N,) with ``diag=True`` (K(x1_i, x2_i)).  A description whose
        output keeps spatial dims returns the per-position kernels (N, M, *S).  ``block_size``
        caps the examples per tile (default: automatic from a memory budget).  ``width`` (hidden
        channels) is needed only for the standard-parameterization NTK; ``widths`` (the MLP
        shorthand's keyword: an int, or a list of equal ints) is accepted for it.
        """
        return self._kernels(x1, x2, diag, block_size, _width(width, widths), True, True)

    def nngp(self, x1: Tensor, x2: Tensor | None = None, *, diag: bool = False,
             block_size: int | None = None, width: int | None = None,
             widths: int | Sequence[int] | None = None) -> Tensor:
        """The NNGP kernel (see ``kernels``; it does not depend on the widths, which are
        accepted for symmetry with ``ntk``)."""
        _width(width, widths)
        return self._kernels(x1, x2, diag, block_size, None, True, False)[0]

    def ntk(self, x1: Tensor, x2: Tensor | None = None, *, diag: bool = False,
            block_size: int | None = None, width: int | None = None,
            widths: int | Sequence[int] | None = None) -> Tensor:
        """The NTK (see ``kernels``)."""
        return self._kernels(x1, x2, diag, block_size, _width(width, widths), False, True)[1]

    def _kernels(self, x1, x2, diag, block_size, width, compute_nngp, compute_ntk):
        from ._evaluate import check_kernel_inputs, evaluate
        from ._mlp import mlp_kernels
        from ._scale import scaled_layer_inputs
        check_kernel_inputs(x1, x2, diag)
        if block_size is not None:
            block_size = check_int("block_size", block_size)
        if width is not None:
            width = check_int("width", width)
        root = self.plan(tuple(x1.shape[1:]), width, None)
        out = mlp_kernels(self, root, x1, x2, diag, block_size, compute_nngp, compute_ntk)
        if out is None:
            # inputs whose squares leave the dtype's range run scaled by a power of two
            x1, x2, scale = scaled_layer_inputs(self, root, x1, x2, compute_ntk)
            out = evaluate(root, x1, x2, diag, block_size, compute_ntk, scale)
            _check_layer_output(out)
        nngp, ntk = out
        return (nngp if compute_nngp else None), (ntk if compute_ntk else None)


def _check_layer_output(out) -> None:
    for k in out:
        if k is not None and k.numel() and not bool(torch.isfinite(k.detach()).all()):
            raise ValueError(f"the kernel overflowed {k.dtype} in the layers of this description (its "
                             f"values exceed {torch.finfo(k.dtype).max:.3g}): reduce the weight "
                             f"variances or rescale the inputs")


class SerialStep(Step):
    """Resolved children, run in order, converting full → diagonal layout where the next
    step needs less."""

    n_activations: int = 0
    carries_scale = True

    def __init__(self, label, in_shape, out_shape, steps: list[Step]):
        self.label, self.in_shape, self.out_shape, self.steps = label, in_shape, out_shape, steps

    def mark_modes(self, out_full: bool) -> bool:
        self.out_full = need = out_full
        for step in reversed(self.steps):
            need = step.mark_modes(need)
        self.in_full = need
        return need

    def max_entries(self) -> int:
        return max(s.max_entries() for s in self.steps)

    def apply(self, state, ev):
        for step in self.steps:
            if state.full and not step.in_full:
                state = state.diagonalized()
            if state.log2_scale and not step.carries_scale:
                state = unscaled(state, step.label)
            state = step.apply(state, ev)
        if state.full and not self.out_full:
            state = state.diagonalized()
        return state

    def module(self, generator, dtype, device) -> nn.Module:
        return nn.Sequential(*[s.module(generator, dtype, device) for s in self.steps])


def _width(width, widths) -> int | None:
    """One hidden width from ``width`` or the shorthand's ``widths`` (int or equal ints)."""
    if widths is None:
        return width
    if width is not None:
        raise ValueError("pass width or widths, not both")
    if isinstance(widths, (list, tuple)):
        if not widths or len(set(widths)) != 1:
            raise ValueError(f"a Serial description builds one hidden width for every layer; got widths={widths}")
        widths = widths[0]
    return widths


def _outside_residual(layer: Layer) -> bool:
    from .residual import Residual
    return not isinstance(layer, Residual)


def _layer_repr(layer: Layer) -> str:
    if isinstance(layer, ActivationLayer):
        return repr(layer.activation)
    return repr(layer)


def _check_in_shape(in_shape) -> tuple[int, ...]:
    if isinstance(in_shape, (int,)) and not isinstance(in_shape, bool):
        in_shape = (in_shape,)
    if not isinstance(in_shape, (tuple, list, torch.Size)) or not 1 <= len(in_shape) <= 3:
        raise ValueError(f"in_shape must be (C,), (C, L) or (C, H, W), got {in_shape!r}")
    return tuple(check_int(f"in_shape[{i}]", s) for i, s in enumerate(in_shape))
