"""Inputs whose squares leave the dtype's range, through the layer-by-layer evaluation.

The per-position covariances Σ_c x_cp x'_cp' / C of inputs ≳ 1e154 (float64; ≳ 1e19 float32)
overflow, and those of inputs ≲ 1e-154 fall below the normal range.  Such inputs are divided by
a power of two 2^e first (exact), and the kernel state carries E = 2e (``KernelState.log2_scale``):
the true kernels are 2^E times the tensors held.

- Linear layers (Dense, Conv, pooling, Flatten) commute with the scale; a bias variance enters
  as σ_b² 2^-E (the standard parameterization's NTK term 1 as 2^-E).  Where σ_b² 2^-E would be
  large (tiny inputs, E < 0), the state is first brought to the scale at which σ_b² 2^-E ≤ 1:
  the parts that then underflow are below round-off next to σ_b².
- Positively homogeneous activations (``Activation.dual_degree``: ReLU family and identity,
  degree 1) keep the scale: T(2^E k̃) = 2^E T(k̃), Ṫ scale-free.  Step (degree 0) ends it:
  T(2^E k̃) = T(k̃), and Ṫ (degree −1) gives Ṫ(2^E k̃)·2^E Θ̃ = Ṫ(k̃)·Θ̃.
- Activations with bounded duals (``dual_scaled``: erf, sin, cos) evaluate T and 2^E·Ṫ from the
  scaled covariances when every variance reaching them is at least 2^60 (as
  ``wideNN._large_inputs`` for the first layer of an MLP): exact at any input size.
- Every other activation, and a residual sum of branches at different scales, return to E = 0
  first: a clear ValueError when the true kernel is not representable.

The output is 2^E times the last state (the overflow check of ``Serial.kernels`` follows).
One scale serves a batch only while no example position is far below the largest input (its
covariances would lose their bits): such batches get a clear error.  Positions whose inputs are
all 0 are exact, except where an output that keeps positions shows their kernels, made of bias
variances that the scale would push below the normal range (a clear error too).  Likewise erf,
sin and cos need every variance reaching them to be large: a position that sees only zeros next
to variances that overflow gets the overflow error (one scale cannot hold both).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._large_inputs import refuse_mixed_scales
from .._scaling import ldexp
from ._state import KernelState

__all__ = ["check_layer_scales", "rescaled", "scaled_bias", "scaled_layer_inputs", "unscaled"]

#: positions below this fraction of the largest input are refused unless every activation is
#: homogeneous (as ``wideNN._large_inputs``: their squares would lose their bits)
_SMALLEST_POSITION = 2.0 ** -30


def _steps(step):
    yield step
    for child in getattr(step, "steps", ()):
        yield from _steps(child)
    if hasattr(step, "block"):
        yield from _steps(step.block)


def _homogeneous(root, compute_ntk: bool) -> bool:
    """Whether the scale survives every activation (``dual_degree`` set) and the NTK scales with
    K (the standard parameterization adds 1 at each linear layer, which 2^-E could overflow)."""
    from .activation import ActivationStep
    for s in _steps(root):
        if isinstance(s, ActivationStep) and s.activation.dual_degree is None:
            return False
        if compute_ntk and getattr(s, "parameterization", "ntk") == "standard":
            return False
    return True


def _row_maxima(x: Tensor) -> Tensor:
    return x.detach().reshape(x.shape[0], -1).abs().amax(-1)


def check_layer_scales(desc, x1: Tensor, x2: Tensor | None, rows: list) -> list:
    """The examples whose squares fall below the normal range (``rows``: their ∞-norms): a clear
    error, unless the enclosing bias variance is positive (it then dominates their kernels).
    Returns the offending rows' sizes (empty: nothing to refuse)."""
    info = torch.finfo(x1.dtype)
    b = desc.bias_variance
    held = b is not None and float(b.detach().min() if isinstance(b, Tensor) else b) > 0
    if held:
        return []
    out = []
    for name, r in rows:
        small = r[(r > 0) & (r * r < info.tiny * 2.0 ** 20)]
        if small.numel():
            out.append((name, float(small.min())))
    return out


def _refuse_small(x1: Tensor, small: list) -> None:
    name, size = small[0]
    raise ValueError(f"{name} has examples of size {size:.3g}: their squares fall below the normal "
                     f"range of {x1.dtype}, where the layer kernels lose their precision; rescale the "
                     f"inputs (with zero bias variance the kernels of ReLU-type networks scale exactly "
                     f"by the square of the factor)")


def scaled_layer_inputs(desc, root, x1: Tensor, x2: Tensor | None, compute_ntk: bool):
    """(x1 2^-e, x2 2^-e, 2e) for inputs whose squares overflow (any description) or fall below
    the normal range (homogeneous descriptions without a bias that holds them); (x1, x2, 0)
    otherwise, unchanged.  A clear error for tiny inputs of other descriptions and for batches
    that one scale cannot serve."""
    present = [(name, x) for name, x in (("x1", x1), ("x2", x2)) if x is not None and x.numel()]
    if not present:
        return x1, x2, 0
    rows = [(name, _row_maxima(x)) for name, x in present]
    top = max(float(r.max()) for _, r in rows)
    info = torch.finfo(x1.dtype)
    large = math.isfinite(top) and top >= 2.0 ** (math.frexp(info.max)[1] // 2 - 16)
    small = [] if large else check_layer_scales(desc, x1, x2, rows)
    if not large and not small:
        return x1, x2, 0
    homogeneous = _homogeneous(root, compute_ntk)
    if small and not homogeneous:
        _refuse_small(x1, small)
    span = 2.0 ** -int(0.4 * math.log2(info.max)) if homogeneous else _SMALLEST_POSITION
    for name, x in present:
        # per example and position: the largest channel (its square dominates the position's variance)
        pos = x.detach().abs().amax(1) if x.dim() > 2 else x.detach().abs().amax(-1)
        refuse_mixed_scales(name, "positions (largest channel)", pos, top, span, x1.dtype)
    e = math.frexp(top)[1]
    if large and len(root.out_shape) > 1:
        _check_bias_held(root, present, 2 * e, info)
    return ldexp(x1, -e), (None if x2 is None else ldexp(x2, -e)), 2 * e


def _check_bias_held(root, present, s: int, info) -> None:
    """An output that keeps positions shows each position's own kernel: where a position's inputs
    are all 0 (every layer's window on it), it is made of bias variances alone, which at the scale
    2^s can fall below the normal range and lose their bits (to 0): a clear error where fewer than
    45 bits would be left (float64: σ_b² 2^-s < 2^-8·tiny; float32: below tiny).  (In outputs
    that average over positions such kernels are below round-off next to the others.)"""
    digits = 1 - math.frexp(info.eps)[1] + 1  # 53 / 24 significant bits
    floor = info.tiny * 2.0 ** -max(0, digits - 45)
    lost = [b for b in (_largest_bias(st) for st in _steps(root)) if b > 0 and math.ldexp(b, -s) < floor]
    if not lost:
        return
    for name, x in present:
        if x.dim() > 2 and bool((x.detach().abs().amax(1) == 0).any()):
            raise ValueError(
                f"{name} has positions where every channel is 0 next to inputs of size "
                f"~2^{s // 2}: with the bias variance {max(lost):.3g} their per-position kernels in "
                f"this description's spatial output (~σ_b²) cannot be held at the scale of the "
                f"others in {x.dtype}; rescale the inputs, or end the description in a pooling "
                f"or Flatten layer")


def _largest_bias(step) -> float:
    b = getattr(step, "bias_variance", None)
    if b is None:
        return 0.0
    return float(b.detach().max()) if isinstance(b, Tensor) else float(b)


def rescaled(state: KernelState, target: int) -> KernelState:
    """The same kernels held at scale ``target`` (exact, powers of two; ∞ where the held values
    overflow, which only a lower target can do)."""
    j = state.log2_scale - target
    ntk = None if state.ntk is None else ldexp(state.ntk, j)
    return KernelState(ldexp(state.nngp, j), ntk, state.spatial, state.full, target)


def unscaled(state: KernelState, where: str) -> KernelState:
    """The state in true units (scale 0); a clear error where the true kernel overflows."""
    s = state.log2_scale
    if s <= 0:
        return rescaled(state, 0)
    out = rescaled(state, 0)
    for t in (out.nngp, out.ntk):
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(
                f"{where}: the kernel reaching it overflows {t.dtype} (inputs up to ~2^{s // 2}: "
                f"its values exceed {torch.finfo(t.dtype).max:.3g}); only ReLU-type activations "
                f"(whose kernels scale with the inputs) and erf, sin, cos (bounded, when every "
                f"variance reaching them is large) accept such inputs here: rescale the inputs")
    return out


def scaled_bias(state: KernelState, b):
    """(state, σ_b² 2^-E) for a state at scale E ≠ 0.  For E < 0 a bias with σ_b² 2^-E > 1
    first moves the state to the scale E' = min(0, exponent of σ_b²) (K̃ shrinks by 2^(E−E'):
    what underflows is below round-off next to σ_b² 2^-E' ≥ 1/2)."""
    s = state.log2_scale
    if s < 0:
        top = float(b.detach().max()) if isinstance(b, Tensor) else float(b)
        if top > 0 and math.isfinite(top):
            target = min(0, max(s, math.frexp(top)[1]))
            if target != s:
                state = rescaled(state, target)
                s = target
    return state, ldexp(b, -s)
