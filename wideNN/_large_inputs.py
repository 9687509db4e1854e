"""Inputs so large that x·x' overflows (|x| ≳ 1e154 in float64, 1e19 in float32), for the
activations whose duals are not positively homogeneous (those carry a scale through every layer:
``wideNN._scaling``).

The inputs are divided by 2^e (exact) and the first layer's kernels K̃¹ = 2^-E K¹ (E = 2e) are
formed from them without overflow.  Then:

- activations with a *scaled dual* (``dual_scaled``: erf, sin, cos, whose T is bounded) evaluate
  T(K¹) and 2^E·Ṫ(K¹) from K̃¹ directly, so the NNGP and the NTK Θ² = K² + σ_w² Ṫ(K¹)·Θ¹
  (with Θ¹ = 2^E Θ̃¹) are exact even where K¹ itself is not representable (erf of inputs 1e300);
- every other activation (GELU, the quadrature ones) continues from K¹ = 2^E K̃¹, which must be
  representable: a clear ValueError otherwise.  (GELU's duals are then exact at any variance;
  quadrature activations refuse variances their rule cannot resolve, with the estimated error.)

One scale serves all rows only when none is more than 2^30 below the largest (their first-layer
variances would lose their bits): such batches get a clear error, as for the homogeneous duals.
The scaled duals are used only while every first-layer variance exceeds 2^60 (below, the 1 of
1 + 2k matters: a tiny σ_w² can leave inputs of 1e160 with variances of order 1, which then run
through the ordinary duals from K¹ itself).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._scaling import ldexp

__all__ = ["large_inputs", "refuse_mixed_scales", "scaled_first_layer"]

#: rows whose largest entry falls below this fraction of the largest input are refused
_SMALLEST_ROW = 2.0 ** -30
#: the scaled duals drop the 1 of 1 + 2k: every variance must exceed this (else K¹ is used as it is)
_SCALED_DUAL_FROM = 2.0 ** 60


def large_inputs(spec, *xs: Tensor | None) -> tuple[list, int]:
    """The inputs times 2^-e and E = 2e when the largest entry is so large that x·x' could
    overflow (≥ 2^(maxexp/2 − 16): the sums over up to 2^32 features stay finite); else
    unchanged and 0."""
    present = [(name, x) for name, x in zip(("x1", "x2"), xs) if x is not None and x.numel()]
    if not present:
        return list(xs), 0
    info = torch.finfo(present[0][1].dtype)
    # row ∞-norms from the row maxima and minima (no |x| temporary; torch's ∞-norm reduction
    # measured 10× slower than the two)
    rows = [(name, torch.maximum(x.detach().amax(-1), -x.detach().amin(-1))) for name, x in present]
    top = max(float(r.max()) for _, r in rows)
    limit = 2.0 ** (math.frexp(info.max)[1] // 2 - 16)
    if not (math.isfinite(top) and top >= limit):
        return list(xs), 0
    e = math.frexp(top)[1]
    for name, r in rows:
        refuse_mixed_scales(name, "rows", r, top, _SMALLEST_ROW, present[0][1].dtype)
    return [None if x is None else ldexp(x, -e) for x in xs], 2 * e


def refuse_mixed_scales(name: str, what: str, sizes: Tensor, top: float, span: float,
                        dtype: torch.dtype) -> None:
    """ValueError naming ``name`` when some nonzero entry of ``sizes`` (∞-norms of its ``what``)
    lies below ``span``·``top``: divided by one power of two with the largest input, their
    squares would lose their bits."""
    small = sizes[(sizes > 0) & (sizes < span * top)]
    if small.numel():
        raise ValueError(
            f"{name} has {what} of size {float(small.min()):.3g} next to inputs of size {top:.3g}: "
            f"their kernels cannot be formed with one scale in {dtype} (the ratio exceeds "
            f"{1 / span:.3g}); compute the kernels of the two groups separately or rescale them")


def scaled_first_layer(spec, g, n1, n2, d: int, same: bool, e2: int):
    """(k, k1, k2, θ, layers done) after the first layer, from x̃·x̃'/d = 2^-E x·x'/d (see the
    module docstring); θ is None without the NTK."""
    act, w, b = spec.act, spec.w, spec.b
    bs = ldexp(b, -e2)
    k = bs + w * g
    k1 = bs + w * n1
    k2 = k1 if same else bs + w * n2
    th = None
    if spec.compute_ntk:
        th = k if spec.param == "ntk" else d * g + ldexp(1.0, -e2)
    if spec.depth == 0 or not hasattr(act, "dual_scaled") or not _all_large(k1, k2, e2):
        w_big = ldexp(w, e2)
        if bool(torch.isfinite(torch.as_tensor(w_big)).all()):
            # K¹ = σ_b² + (2^E σ_w²) x̃·x̃'/d: no subnormal intermediate when σ_w² is tiny
            k, k1 = b + w_big * g, b + w_big * n1
            k2 = k1 if same else b + w_big * n2
            th = None if th is None else (k if spec.param == "ntk" else _unscaled(th, e2))
            for t in (k, k1, k2):
                _unscaled(t, 0)  # (the overflow check)
            return k, k1, k2, th, 0
        return (*(None if t is None else _unscaled(t, e2) for t in (k, k1, k2, th)), 0)
    if same:
        t, td_scaled = act.dual_diag_scaled(k, e2)
    else:
        t, td_scaled = act.dual_scaled(k1, k, k2, e2)
    k_next = b + w * t
    th_next = None
    if th is not None:
        th_next = (k_next if spec.param == "ntk" else spec.widths[0] * t + 1.0) + w * td_scaled * th
    if same:
        return k_next, k_next, k_next, th_next, 1
    k1 = b + w * act.dual_diag_scaled(k1, e2)[0]
    k2 = b + w * act.dual_diag_scaled(k2, e2)[0]
    return k_next, k1, k2, th_next, 1


def _all_large(k1: Tensor, k2: Tensor, e2: int) -> bool:
    """Every first-layer variance 2^E·k̃ is at least ``_SCALED_DUAL_FROM`` (a tiny σ_w² can leave
    inputs of 1e160 with variances of order 1, where the scaled duals would not hold)."""
    low = float(torch.minimum(k1.detach().min(), k2.detach().min()))
    return low > 0 and math.log2(low) + e2 >= math.log2(_SCALED_DUAL_FROM)


def _unscaled(t: Tensor, e2: int) -> Tensor:
    out = ldexp(t, e2)
    if not bool(torch.isfinite(out.detach()).all()):
        raise ValueError(
            f"the first-layer kernel σ_b² + σ_w²|x|²/d overflows {t.dtype} (inputs up to "
            f"~2^{e2 // 2}): rescale the inputs (the kernel is not representable in this dtype; "
            f"erf, sin and cos accept such inputs, their duals being bounded)")
    return out
