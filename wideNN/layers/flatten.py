"""``Flatten``: (N, C, *S) → (N, C·P).

A following Dense divides by its fan-in C·P (stax's convention), so the kernel of the flattened
representation is the mean over positions of the per-position covariance (Novak et al. 2019,
the "flatten" readout of the CNN-GP):

    K' = (1/P) Σ_p K[p, p]         (Θ alike)

Only the coincident position pairs enter, so everything before a Flatten may run in the cheap
diagonal layout.
"""
from __future__ import annotations

import dataclasses
import math

from torch import nn

from ._state import KernelState, positions_diagonal
from .base import Env, Layer, Step


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Flatten(Layer):
    """Flatten channels and positions into one feature axis (identity on flat inputs)."""

    kind = "Flatten"

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        c = in_shape[0]
        size = None if c is None else c * math.prod(in_shape[1:])
        return FlattenStep(env.label, in_shape, (size,))


class FlattenStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape):
        self.label, self.in_shape, self.out_shape = label, in_shape, out_shape

    def mark_modes(self, out_full: bool) -> bool:
        self.out_full = self.in_full = False
        return False

    def apply(self, state: KernelState, ev) -> KernelState:
        d = len(state.spatial)
        if d == 0:
            return state

        def op(t):
            if state.full:
                t = positions_diagonal(t, d)
            return t.mean(dim=tuple(range(-d, 0)))

        out = state.map(op, ())
        out.full = False
        return out

    def module(self, generator, dtype, device) -> nn.Module:
        return nn.Flatten()
