"""What every layer description shares: resolution into a plan step, and the step interface.

A *layer* (``Dense``, ``Conv``, ``AvgPool``, …) is a frozen description.  Given an input shape
and the enclosing defaults, it *resolves* into a ``Step`` that knows its input/output shapes,
its finite ``nn.Module``, and how it transforms the kernel state (``wideNN.layers._state``) —
the three faces of one layer, as in neural-tangents' ``stax`` (init, apply, kernel).
Errors name the layer by its position in the description ("layer 3 (Conv)"; nested
descriptions as "layer 2 (Residual) > layer 0 (Conv)"; positions count from 0 like
``nn.Sequential`` indices).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_variance
from ._state import KernelState

__all__ = ["Layer", "Step", "Defaults", "Env", "Evaluation", "LayerError", "entries", "shape_str"]

PARAMETERIZATIONS = ("ntk", "standard")


class LayerError(ValueError):
    """A description that does not fit its input (shape, channels, windows)."""


def shape_str(shape) -> str:
    """A per-example shape for messages; an unknown channel count (kernels without a width) is '?'."""
    parts = ["?" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


@dataclasses.dataclass(frozen=True)
class Defaults:
    """The variances and parameterization a layer uses unless it sets its own."""

    weight_variance: float | Tensor = 2.0
    bias_variance: float | Tensor = 0.0
    parameterization: str = "ntk"

    def override(self, weight_variance=None, bias_variance=None, parameterization=None) -> "Defaults":
        return Defaults(self.weight_variance if weight_variance is None else weight_variance,
                        self.bias_variance if bias_variance is None else bias_variance,
                        self.parameterization if parameterization is None else parameterization)


def check_layer_variances(owner: str, weight_variance, bias_variance, parameterization) -> None:
    """Validate optional per-layer hyperparameters (None = inherit)."""
    for name, v in (("weight_variance", weight_variance), ("bias_variance", bias_variance)):
        if isinstance(v, (str, bool)):
            raise TypeError(f"{owner} {name} must be a number or a tensor, got {v!r}")
    if weight_variance is not None:
        check_variance(f"{owner} weight_variance", weight_variance)
        _scalar(f"{owner} weight_variance", weight_variance)
    if bias_variance is not None:
        check_variance(f"{owner} bias_variance", bias_variance)
        _scalar(f"{owner} bias_variance", bias_variance)
    if parameterization is not None and parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"{owner} parameterization must be 'ntk' or 'standard', got {parameterization!r}")


def _scalar(name: str, v) -> None:
    if isinstance(v, Tensor) and v.numel() != 1:
        raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(v.shape)}")


@dataclasses.dataclass
class Env:
    """Resolution context handed down the description.

    ``width``: channels of every hidden Dense/Conv (None: unknown, enough for NTK-parameterized
    kernels); ``out_features``: channels of the final linear layer; ``final``: whether this
    layer holds the final linear layer; ``gaussian``: whether a trainable linear layer came
    before (activations need Gaussian pre-activations); ``activations``: running count that
    numbers the activation steps (their self-variances are stored by this index).
    """

    defaults: Defaults
    width: int | None
    out_features: int | None
    final: bool
    gaussian: bool
    label: str
    counter: list[int]

    def child(self, label: str, *, final: bool | None = None, defaults: Defaults | None = None) -> "Env":
        return dataclasses.replace(self, label=label, final=self.final if final is None else final,
                                   defaults=self.defaults if defaults is None else defaults)


@dataclasses.dataclass
class Evaluation:
    """How a kernel pass pairs its examples, and the per-position variances of each activation.

    ``pairs``: ``"matrix"`` (batch (n, m)), ``"self"`` (each example with itself, batch (n,)),
    ``"zip"`` (x1_i with x2_i, batch (n,)).  In ``"self"`` passes each activation reads its
    variances off the state and stores them in ``record``; the other passes read ``vars1`` /
    ``vars2`` (one (b, *S) tensor per activation, recorded by self passes), and, where an
    activation has a fused dual, ``prepared1`` / ``prepared2``: its per-example factors computed
    once from those variances (``ActivationStep.prepare``; None entries for the others).
    ``coincident``: a diagonal tile of a symmetric kernel (see the field).
    """

    pairs: str
    compute_ntk: bool = True
    vars1: list[Tensor] | None = None
    vars2: list[Tensor] | None = None
    record: dict[int, Tensor] | None = None
    prepared1: list | None = None
    prepared2: list | None = None
    #: a ``"matrix"`` tile of x1 against itself with the same examples on both sides (a diagonal
    #: tile): its entries (a, a, p, p) are coincident pairs
    coincident: bool = False
    #: in a ``"matrix"`` tile of x1 against x2, the example pairs (a, b) whose inputs are
    #: identical (two index tensors, local to the tile): their entries (a, b, p, p) are coincident
    identical: tuple[Tensor, Tensor] | None = None


def entries(spatial: tuple[int, ...], full: bool) -> int:
    """Number of position entries per example pair in a layout."""
    n = 1
    for s in spatial:
        n *= s * s if full else s
    return n


class Step:
    """A resolved layer: shapes, modes, kernel transform and finite module.

    Shapes are (C, *S) with C None when the channel count is not known (kernels only).
    ``in_full`` / ``out_full``: whether the state entering / leaving is in the full position
    layout; set by ``mark_modes`` from the end of the description backwards.
    """

    label: str
    in_shape: tuple
    out_shape: tuple
    in_full: bool = False
    out_full: bool = False
    #: whether ``apply`` handles a state held at a power-of-two scale (``KernelState.log2_scale``,
    #: ``wideNN.layers._scale``); a step that does not gets the state in true units, checked
    #: for overflow (``SerialStep.apply``)
    carries_scale: bool = False

    def mark_modes(self, out_full: bool) -> bool:
        """Record the output layout the rest of the description needs; return the input's."""
        self.out_full = out_full
        self.in_full = out_full
        return self.in_full

    def max_entries(self) -> int:
        return max(entries(self.in_shape[1:], self.in_full), entries(self.out_shape[1:], self.out_full))

    def apply(self, state: KernelState, ev: Evaluation) -> KernelState:
        raise NotImplementedError

    def module(self, generator: torch.Generator | None, dtype: torch.dtype, device: Any) -> nn.Module:
        raise NotImplementedError


class Layer:
    """Base of the layer descriptions (frozen dataclasses)."""

    #: name used in error messages
    kind: str = "Layer"

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        """The executable step of this layer for inputs of per-example shape ``in_shape`` (its
        output shape, finite module and kernel transform), with the enclosing description's
        defaults in ``env``; a LayerError naming the layer when the shapes do not fit."""
        raise NotImplementedError

    def _has_linear(self) -> bool:
        """Whether this layer is (or contains, outside residual blocks) a trainable linear layer."""
        return False

    def __repr__(self) -> str:
        """Like a dataclass repr, with only the fields that differ from their defaults."""
        parts = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and not isinstance(v, Tensor) and v == f.default:
                continue
            parts.append(repr(v) if f.default is dataclasses.MISSING else f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
