"""Recognise the fully-connected pattern Dense, φ, Dense, …, φ, Dense in a resolved description.

When every Dense shares one (σ_w², σ_b², parameterization) and every φ is the same activation,
the description is ``wideNN.Architecture(depth, φ, σ_w², σ_b², parameterization)`` (Flatten
layers before the first Dense only reshape: K¹ = σ_b² + σ_w² x·x'/(C·P) either way), and its
kernels come from ``wideNN.analytic.kernels`` — the fused ReLU recursion, the angle tables of
quadrature activations — so they equal the shorthand's bit for bit at the same speed.
"""
from __future__ import annotations

from torch import Tensor

from .. import activations as _acts
from ..analytic import kernels as _analytic_kernels
from .activation import ActivationStep
from .dense import DenseStep
from .flatten import FlattenStep

__all__ = ["as_architecture", "mlp_kernels"]


def _leaves(step):
    steps = getattr(step, "steps", None)
    if steps is None:
        yield step
        return
    for child in steps:
        yield from _leaves(child)


def _same_value(a, b) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b
    return float(a) == float(b)


def _same_activation(a: _acts.Activation, b: _acts.Activation) -> bool:
    if a is b:
        return True
    # same class and same settings (repr shows negative_slope, alpha, quadrature_degree); an
    # Elementwise wraps an arbitrary function, so only the same object counts
    return type(a) is type(b) and not isinstance(a, _acts.Elementwise) and repr(a) == repr(b)


def as_architecture(description, root):
    """The equivalent ``Architecture``, or None when the description is not an MLP."""
    from ..architecture import Architecture
    dense, acts, seen_dense, expect_dense = [], [], False, True
    for step in _leaves(root):
        if isinstance(step, FlattenStep):
            if seen_dense and len(step.in_shape) != 1:
                return None
            continue
        if isinstance(step, DenseStep) and expect_dense:
            dense.append(step)
            seen_dense, expect_dense = True, False
        elif isinstance(step, ActivationStep) and not expect_dense:
            acts.append(step.activation)
            expect_dense = True
        else:
            return None
    if not dense or expect_dense:
        return None
    first = dense[0]
    for s in dense[1:]:
        if not (_same_value(s.weight_variance, first.weight_variance)
                and _same_value(s.bias_variance, first.bias_variance)
                and s.parameterization == first.parameterization):
            return None
    if any(not _same_activation(a, acts[0]) for a in acts[1:]):
        return None
    return Architecture(depth=len(acts), activation=acts[0] if acts else "relu",
                        weight_variance=first.weight_variance, bias_variance=first.bias_variance,
                        parameterization=first.parameterization)


def mlp_kernels(description, root, x1, x2, diag, block_size, compute_nngp, compute_ntk):
    """``(nngp, ntk)`` by ``wideNN.analytic.kernels`` if the description is an MLP, else None."""
    arch = as_architecture(description, root)
    if arch is None:
        return None
    hidden = [s.out_shape[0] for s in _leaves(root) if isinstance(s, DenseStep)][:-1]
    widths = None if any(w is None for w in hidden) else hidden
    f1 = x1.reshape(x1.shape[0], -1)
    f2 = None if x2 is None else x2.reshape(x2.shape[0], -1)
    return _analytic_kernels(f1, f2, depth=arch.depth, activation=arch.phi,
                             weight_variance=arch.weight_variance, bias_variance=arch.bias_variance,
                             parameterization=arch.parameterization, widths=widths, diag=diag,
                             compute_ntk=compute_ntk, block_size=block_size, compute_nngp=compute_nngp)
