"""An elementwise activation φ as a layer (every ``wn.activations`` object or name).

With per-position variances k11 = K(x, x)[p, p], k22 = K(x', x')[p', p'] and the activation's
dual kernels (``Activation.dual``):

    K'[p, p'] = E[φ(u) φ(v)],   Θ'[p, p'] = E[φ'(u) φ'(v)] · Θ[p, p'],
    (u, v) ~ N(0, [[k11, K[p, p']], [K[p, p'], k22]]).

The variances come from a pass of each example with itself (``Evaluation.pairs == "self"``),
recorded per activation and reused by every tile of example pairs.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.nn.functional import threshold_

from .. import activations as _acts
from .._numpy_math import arccos, sqrt_
from .._large_inputs import _all_large
from ._scale import unscaled
from ._state import KernelState, positions_diagonal
from .base import Env, Evaluation, Layer, LayerError, Step, shape_str


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ActivationLayer(Layer):
    """Wraps an ``Activation`` so it composes with the other layers (``Serial`` does this for you)."""

    activation: _acts.Activation
    kind = "Activation"

    def __repr__(self) -> str:
        return repr(self.activation)

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        name = type(self.activation).__name__
        if not env.gaussian:
            raise LayerError(f"{env.label}: the dual kernel of an activation is exact for Gaussian "
                             f"pre-activations only: its input must come from a Dense or Conv (possibly "
                             f"pooled, flattened or summed in a Residual with a Gaussian input), not from "
                             f"the raw inputs or another activation ({name} on input shape {shape_str(in_shape)})")
        env.gaussian = False
        index = env.counter[0]
        env.counter[0] += 1
        return ActivationStep(env.label, in_shape, in_shape, self.activation, index)


def place(v: Tensor, side: int, pairs: str, full: bool, d: int) -> Tensor:
    """Per-position variances (b, *S) of one side of the pairs, shaped to broadcast against a
    state of batch ``pairs`` and layout ``full`` (side 1: rows / p; side 2: columns / p')."""
    b = v.shape[0]
    batch = ((b, 1) if side == 1 else (1, b)) if pairs == "matrix" else (b,)
    if not full:
        return v.reshape(*batch, *v.shape[1:])
    pos = []
    for s in v.shape[1:]:
        pos += [s, 1] if side == 1 else [1, s]
    return v.reshape(*batch, *pos)


class ActivationStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape, activation, index: int):
        self.label, self.in_shape, self.out_shape = label, in_shape, out_shape
        self.activation, self.index = activation, index

    def prepare(self, var: Tensor) -> tuple[Tensor, ...] | None:
        """Per-example factors of the fused dual, computed once from the recorded variances
        (``relu_factors``), or None: the dual then runs from the variances themselves."""
        if type(self.activation) is not _acts.ReLU or _needs_grad(var):
            return None
        return relu_factors(var)

    def apply(self, state: KernelState, ev: Evaluation) -> KernelState:
        if ev.pairs == "matrix" and (ev.coincident or ev.identical is not None):
            state = _coincident_variances(state, ev.vars1[self.index], ev.identical)
        if state.log2_scale:
            return self._apply_scaled(state, ev)
        return self._apply(state, ev)

    def _apply_scaled(self, state: KernelState, ev: Evaluation) -> KernelState:
        """A state held at scale 2^E (``wideNN.layers._scale``): homogeneous duals run on it and
        keep (degree 1) or end (degree 0) the scale; bounded duals take the scaled covariances
        when every variance is ≥ 2^60; others the true kernel (a clear error if it overflows)."""
        act, s = self.activation, state.log2_scale
        if act.dual_degree is not None:
            out = self._apply(state, ev)
            out.log2_scale = s if act.dual_degree == 1 else 0
            return out
        v1, v2, diag = self._sides(state, ev)
        k, th = state.nngp, (state.ntk if ev.compute_ntk else None)
        if s > 0 and hasattr(act, "dual_scaled") and _all_large(v1, v2, s):
            t, td = act.dual_diag_scaled(k, s) if diag else act.dual_scaled(v1, k, v2, s)
        else:
            true = unscaled(KernelState(k, th, state.spatial, state.full, s), self.label)
            k, th = true.nngp, true.ntk
            if diag:
                t, td = act.dual_diag(k)
            else:
                v1, v2 = (unscaled(KernelState(v, None, (), False, s), self.label).nngp for v in (v1, v2))
                t, td = act.dual(v1, k, v2)
        return KernelState(t, None if th is None else td * th, state.spatial, state.full)

    def _sides(self, state: KernelState, ev: Evaluation) -> tuple[Tensor, Tensor, bool]:
        """(v1, v2, diag): the variances of the two sides placed against the state (recorded in
        self passes), and whether the state is itself those variances (flat self pass)."""
        d, k = len(state.spatial), state.nngp
        full = state.full and d > 0
        if ev.pairs == "self":
            var = positions_diagonal(k, d) if full else k
            ev.record[self.index] = var
            if not full:
                return var, var, True
            return place(var, 1, "self", True, d), place(var, 2, "self", True, d), False
        return (place(ev.vars1[self.index], 1, ev.pairs, full, d),
                place(ev.vars2[self.index], 2, ev.pairs, full, d), False)

    def _apply(self, state: KernelState, ev: Evaluation) -> KernelState:
        act, d, k = self.activation, len(state.spatial), state.nngp
        full = state.full and d > 0
        f1 = f2 = None
        if ev.pairs == "self":
            var = positions_diagonal(k, d) if full else k
            ev.record[self.index] = var
            if not full:
                t, td = act.dual_diag(k)
                ntk = None if (state.ntk is None or not ev.compute_ntk) else td * state.ntk
                return KernelState(t, ntk, state.spatial, state.full)
            v1, v2 = place(var, 1, "self", True, d), place(var, 2, "self", True, d)
            f1 = f2 = self.prepare(var)
        elif ev.prepared1 is not None and ev.prepared2 is not None:
            f1, f2 = ev.prepared1[self.index], ev.prepared2[self.index]
        if f1 is not None and f2 is not None and not _needs_grad(k, state.ntk):
            t, td = relu_dual_fused(k, [place(f, 1, ev.pairs, full, d) for f in f1],
                                    [place(f, 2, ev.pairs, full, d) for f in f2])
            ntk = None if (state.ntk is None or not ev.compute_ntk) else td.mul_(state.ntk)
            return KernelState(t, ntk, state.spatial, state.full)
        if ev.pairs != "self":
            v1 = place(ev.vars1[self.index], 1, ev.pairs, full, d)
            v2 = place(ev.vars2[self.index], 2, ev.pairs, full, d)
        if type(act) is _acts.ReLU and not _needs_grad(v1, k, v2, state.ntk):
            t, td = relu_dual_inplace(v1, k, v2)
            ntk = None if (state.ntk is None or not ev.compute_ntk) else td.mul_(state.ntk)
            return KernelState(t, ntk, state.spatial, state.full)
        t, td = act.dual(v1, k, v2)
        ntk = None if (state.ntk is None or not ev.compute_ntk) else td * state.ntk
        return KernelState(t, ntk, state.spatial, state.full)

    def module(self, generator, dtype, device) -> nn.Module:
        return self.activation


def _coincident_variances(state: KernelState, var: Tensor,
                          identical: tuple[Tensor, Tensor] | None = None) -> KernelState:
    """The state with its coincident entries K[a, a, p, p] (a diagonal tile; or K[a, b, p, p]
    for the ``identical`` example pairs of a cross tile) set to the recorded variances
    K(x_a, x_a)[p, p] (bitwise).  The two are the same number computed along different paths
    (a tile of example pairs, a self pass), so they differ by rounding; every dual then sees
    k12 ≠ k11 at a correlation of 1, and the duals whose coincident values rest on the
    cancellation k11 k22 − k12² (erf, GELU at variance k: relative error ~ε·k) lose digits —
    erf at variance 1e14 by 1 % — while the self pass and ``diag=True`` are exact."""
    d, k = len(state.spatial), state.nngp
    k = k.clone()
    if identical is None:
        same = torch.diagonal(k, dim1=0, dim2=1).movedim(-1, 0)  # (n, positions…), a view of k
        if state.full and d:
            same = positions_diagonal(same, d)
        same.copy_(var)
    else:
        a, b = identical
        pairs = k[a, b]  # (pairs, positions…): a copy, written back below
        same = positions_diagonal(pairs, d) if state.full and d else pairs
        same.copy_(var[a])
        k[a, b] = pairs
    return KernelState(k, state.ntk, state.spatial, state.full, state.log2_scale)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def relu_dual_inplace(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    """ReLU's duals (``wideNN.activations.ReLU.dual``: s/(2π)(√(1−c²) + (π−θ)c) and (π−θ)/(2π))
    without autograd, in two fresh output arrays and in-place passes (the masked, autograd-safe
    closed form allocates a dozen arrays the size of the covariance tensor).  Zero variances give
    c = 0, as ``wideNN._gaussian.correlation`` does."""
    r1 = torch.where(k11 > 0, k11, torch.ones_like(k11)).rsqrt_().mul_(k11 > 0)
    r2 = torch.where(k22 > 0, k22, torch.ones_like(k22)).rsqrt_().mul_(k22 > 0)
    c = torch.mul(k12, r1).mul_(r2).clamp_(-1.0, 1.0)
    tol = 8 * torch.finfo(c.dtype).eps  # as snap_correlation: coincident points are exactly c = 1
    c.masked_fill_(c >= 1 - tol, 1.0).masked_fill_(c <= -1 + tol, -1.0)
    p = torch.arccos(c).neg_().add_(math.pi)                            # π − θ
    t = torch.mul(c, c).neg_().add_(1.0).clamp_(min=0.0).sqrt_().addcmul_(p, c)
    t.mul_(k11.clamp(min=0).sqrt() * (1.0 / (2 * math.pi))).mul_(k22.clamp(min=0).sqrt())
    return t, p.mul_(1.0 / (2 * math.pi))


_INV_2PI = 1.0 / (2 * math.pi)


def relu_factors(var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example, per-position factors of ``relu_dual_fused`` from the variances k = K(x, x)[p, p]:
    (k^{-1/2} (0 where k = 0), √k, √k / 2π) — computed once per input set instead of once per
    tile of example pairs."""
    pos = var > 0
    r = torch.where(pos, var, torch.ones_like(var)).rsqrt_().mul_(pos)
    s = var.clamp(min=0).sqrt()
    return r, s, s * _INV_2PI


def relu_dual_fused(k12: Tensor, side1, side2) -> tuple[Tensor, Tensor]:
    """ReLU's duals as ``relu_dual_inplace`` from precomputed ``relu_factors`` of the two sides
    (placed to broadcast against k12), in two fresh arrays and ten passes:

        c = k12 r r',   T = s s'/2π (√(1−c²) + (π−θ)c),   Ṫ = (π−θ)/2π,   π − θ = arccos(−c)

    with c snapped to exactly ±1 within 8 ulps (as ``wideNN._gaussian.snap_correlation``).  The
    array holds m = −c after the snap, so arccos(m) is π − θ directly; |m| ≤ 1 exactly then, so
    1 − m² ≥ 0 needs no clamp."""
    r1, _, a1 = side1
    r2, a2, _ = side2
    tol = 8 * torch.finfo(k12.dtype).eps
    m = torch.mul(k12, r1).mul_(r2)
    threshold_(m, -1.0 + tol, -1.0)                      # c ≤ −1 + tol → −1 (c < −1 too)
    threshold_(m.neg_(), -1.0 + tol, -1.0)               # m = −c; c ≥ 1 − tol → 1 (c > 1 too)
    p = arccos(m)                                        # π − θ
    t = sqrt_(torch.addcmul(m.new_ones(()), m, m, value=-1.0))
    t.addcmul_(p, m, value=-1.0).mul_(a1).mul_(a2)
    return t, p.mul_(_INV_2PI)

