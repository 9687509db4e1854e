"""The kernel transform shared by the trainable linear layers (Dense, Conv).

With ``op`` the layer's linear action on a covariance (identity for Dense; the average over the
filter's positions for a convolution, Novak et al. 2019 eq. (7); Garriga-Alonso et al. 2019):

    K' = σ_b² + σ_w² · op(K)
    Θ' = K' + σ_w² · op(Θ)                                  (NTK parameterization)
    Θ' = fan_in · op(K) + 1 + σ_w² · op(Θ)                  (standard parameterization)

where fan_in = C·k (input channels times filter positions).  The standard-parameterization
NTK is the gradient of W ~ N(0, σ_w²/fan_in) giving Σ x x' = fan_in · op(K), and of b giving 1.
A state held at scale 2^E (``wideNN.layers._scale``) follows the same maps, with σ_b² and the 1
taken as σ_b² 2^-E and 2^-E.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .._scaling import ldexp
from ._scale import scaled_bias
from ._state import KernelState


def _as(v, like: Tensor):
    """A (scalar) variance as a number or as a 0-d tensor on ``like``'s dtype/device."""
    if isinstance(v, Tensor):
        return v.to(dtype=like.dtype, device=like.device).reshape(())
    return float(v)


def affine(state: KernelState, op: Callable[[Tensor], Tensor], spatial: tuple[int, ...],
           weight_variance, bias_variance, parameterization: str, fan_in: int | None,
           label: str, compute_ntk: bool, scale: float = 1.0) -> KernelState:
    """K, Θ after a trainable linear layer (see the module docstring); the layer's op is
    ``scale · op`` (a convolution passes its window sum and 1/k, saving a pass over the tensor)."""
    w = _as(weight_variance, state.nngp)
    b = _as(bias_variance, state.nngp)
    s = state.log2_scale
    if s:
        state, b = scaled_bias(state, b)
        s = state.log2_scale
    if scale != 1.0:
        w = w * scale
        fan_in = None if fan_in is None else fan_in * scale
    k_op = op(state.nngp)
    fresh = not (torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                                 for t in (k_op, w, b, state.ntk)))
    if fresh and parameterization == "ntk":
        # op returned new arrays: update them in place (no autograd to preserve)
        nngp = k_op.mul_(w).add_(b)
        if not compute_ntk:
            return KernelState(nngp, None, spatial, state.full, s)
        ntk = nngp.clone() if state.ntk is None else op(state.ntk).mul_(w).add_(nngp)
        return KernelState(nngp, ntk, spatial, state.full, s)
    nngp = b + w * k_op
    if not compute_ntk:
        return KernelState(nngp, None, spatial, state.full, s)
    carried = None if state.ntk is None else w * op(state.ntk)
    if parameterization == "ntk":
        ntk = nngp if carried is None else nngp + carried
    else:
        if fan_in is None:
            raise ValueError(f"{label}: the standard-parameterization NTK depends on the channel "
                             f"counts: pass width=... (the hidden width used by build)")
        ntk = fan_in * k_op + (1.0 if not s else ldexp(1.0, -s))
        if carried is not None:
            ntk = ntk + carried
    return KernelState(nngp, ntk, spatial, state.full, s)
