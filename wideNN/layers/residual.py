"""``Residual``: x + block(x).

The block ends in a fresh trainable linear layer whose weights have mean zero and are
independent of x, so the two branches are uncorrelated and their kernels add (as in
neural-tangents' ``FanInSum``; Garriga-Alonso et al. 2019 for residual CNN-GPs):

    K' = K + K_block,      Θ' = Θ + Θ_block

where K_block, Θ_block are the block's output kernels (Θ_block already carries Θ through the block).
"""
from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from ._scale import unscaled
from ._state import KernelState
from .base import Env, Layer, LayerError, Step, shape_str


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Residual(Layer):
    """x + block(x); ``block`` is any layer (usually a ``Serial``) ending in Dense or Conv whose
    output shape equals its input shape."""

    block: Layer
    kind = "Residual"

    def __post_init__(self) -> None:
        from .serial import as_layer
        object.__setattr__(self, "block", as_layer(self.block, "Residual block"))

    def resolve(self, in_shape: tuple, env: Env) -> Step:
        from .serial import Serial
        if not _ends_in_linear(self.block):
            raise LayerError(f"{env.label}: a residual block must end in a Dense or Conv (a fresh "
                             f"linear layer makes the two branches independent), got {self.block!r}")
        gaussian = env.gaussian
        inner = env.child(env.label + " > ", final=False)
        inner.counter = env.counter
        if not isinstance(self.block, Serial):
            inner.label = env.label + " > layer 0 (" + self.block.kind + ")"
        step = self.block.resolve(in_shape, inner)
        env.gaussian = gaussian  # x + block(x) is Gaussian iff x is (the block ends in a linear layer)
        out = step.out_shape
        same = len(out) == len(in_shape) and all(a is None or b is None or a == b for a, b in zip(out, in_shape))
        if not same:
            raise LayerError(f"{env.label}: the residual block maps shape {shape_str(in_shape)} to {shape_str(out)}; "
                             f"x + block(x) needs the same shape")
        return ResidualStep(env.label, in_shape, in_shape, step)


def _ends_in_linear(layer: Layer) -> bool:
    from .serial import Serial
    from .dense import Dense
    from .conv import Conv
    if isinstance(layer, Serial):
        return bool(layer.layers) and _ends_in_linear(layer.layers[-1])
    return isinstance(layer, (Dense, Conv))


class ResidualStep(Step):
    carries_scale = True

    def __init__(self, label, in_shape, out_shape, block: Step):
        self.label, self.in_shape, self.out_shape, self.block = label, in_shape, out_shape, block

    def mark_modes(self, out_full: bool) -> bool:
        self.out_full = out_full
        block_in = self.block.mark_modes(out_full)
        self.in_full = out_full or block_in
        return self.in_full

    def max_entries(self) -> int:
        return max(super().max_entries(), self.block.max_entries())

    def apply(self, state: KernelState, ev) -> KernelState:
        branch = self.block.apply(state, ev)
        if branch.full and not self.out_full:
            branch = branch.diagonalized()
        ident = state.diagonalized() if (state.full and not self.out_full) else state
        if ident.log2_scale != branch.log2_scale:
            # held at different scales (``wideNN.layers._scale``: an activation in the block
            # returned to true units): add in true units
            ident, branch = unscaled(ident, self.label), unscaled(branch, self.label)
        ntk = ident.ntk
        if ev.compute_ntk and branch.ntk is not None:
            ntk = branch.ntk if ntk is None else ntk + branch.ntk
        return KernelState(ident.nngp + branch.nngp, ntk, state.spatial, ident.full, ident.log2_scale)

    def module(self, generator, dtype, device) -> nn.Module:
        from .modules import ResidualModule
        return ResidualModule(self.block.module(generator, dtype, device))
