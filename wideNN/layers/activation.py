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

from torch import Tensor, nn

from .. import activations as _acts
from ._state import KernelState, positions_diagonal
from .base import Env, Evaluation, Layer, LayerError, Step


@dataclasses.dataclass(frozen=True, eq=False)
class ActivationLayer(Layer):
    """Wraps an ``Activation`` so it composes with the other layers (``Serial`` does this for you)."""

    activation: _acts.Activation
    kind = "Activation"

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        name = type(self.activation).__name__
        if not env.gaussian:
            raise LayerError(f"{env.label.replace('(Activation)', f'({name})')}: an activation needs "
                             f"Gaussian pre-activations: put a Dense or Conv before it")
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
    def __init__(self, label, in_shape, out_shape, activation, index: int):
        self.label, self.in_shape, self.out_shape = label, in_shape, out_shape
        self.activation, self.index = activation, index

    def apply(self, state: KernelState, ev: Evaluation) -> KernelState:
        act, d, k = self.activation, len(state.spatial), state.nngp
        full = state.full and d > 0
        if ev.pairs == "self":
            var = positions_diagonal(k, d) if full else k
            ev.record[self.index] = var
            if full:
                t, td = act.dual(place(var, 1, "self", True, d), k, place(var, 2, "self", True, d))
            else:
                t, td = act.dual_diag(k)
        else:
            v1 = place(ev.vars1[self.index], 1, ev.pairs, full, d)
            v2 = place(ev.vars2[self.index], 2, ev.pairs, full, d)
            t, td = act.dual(v1, k, v2)
        ntk = None if (state.ntk is None or not ev.compute_ntk) else td * state.ntk
        return KernelState(t, ntk, state.spatial, state.full)

    def module(self, generator, dtype, device) -> nn.Module:
        return self.activation
