"""A power-of-two scale carried through the kernel recursion of positively homogeneous duals.

For activations whose duals satisfy T(λk) = λ^p T(k), Ṫ(λk) = Ṫ(k) (``Activation.dual_degree``:
ReLU family and identity p = 1, step p = 0) the NNGP/NTK recursion of ``wideNN.analytic`` runs on
K̃ = 2^-E K: the inputs are divided by a power of two first, and K̃ is renormalised whenever a
layer's variances leave [2^-64, 2^64].  Every rescaling is exact, so inputs from subnormal to
1e300 and layers that grow or shrink by hundreds of orders of magnitude give the kernel to
round-off wherever the output itself is representable (and overflow to a clear error otherwise).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

__all__ = ["Scaled", "homogeneous", "ldexp", "scaled_inputs"]


def _largest(v) -> float:
    """The largest value of a hyperparameter (number or tensor), without autograd."""
    return float(v.detach().max()) if isinstance(v, Tensor) else float(v)


def homogeneous(spec) -> bool:
    """Whether the recursion may carry a power-of-two scale: positively homogeneous duals, and an
    NTK that scales with K (the standard parameterization's Θ adds 1 at every layer)."""
    return spec.act.dual_degree is not None and (spec.param == "ntk" or not spec.compute_ntk)


#: a layer's variances are rescaled when their largest leaves [2^-RANGE, 2^RANGE]
_RENORMALISE_RANGE = 64


@dataclasses.dataclass(frozen=True)
class Scaled:
    """The power of two E of a recursion carried as K = 2^E·K̃, and σ_b² 2^-E, σ_w² 2^(s−E) of
    its first layer (s the inputs' own scale).  For duals homogeneous of degree 1 (ReLU family,
    identity) K̃ and Θ̃ satisfy the same recursion with σ_b² → σ_b² 2^-E; degree 0 (step) drops
    back to E = 0 after the first dual.  E changes by powers of two only: every rescaling is
    exact, and intermediate layers that would over- or underflow (depth 1000 at σ_w² = 5, inputs
    of 1e-310) no longer decide the result; the output is 2^E·K̃, finite wherever representable."""

    e: int
    b: float | Tensor
    w: float | Tensor

    @staticmethod
    def start(act, b, w, g: Tensor, s: int) -> "Scaled":
        if s == 0:
            return Scaled(0, b, w)
        bmax = _largest(b)
        e = s
        if bmax > 0 and math.isfinite(bmax):
            e = max(s, math.frexp(bmax)[1])  # σ_b² 2^-E ≤ 1: never overflows
        return Scaled(e, ldexp(b, -e), ldexp(w, s - e))

    def reset(self, b) -> "Scaled":
        return Scaled(0, b, self.w)

    def renormalised(self, b, k1: Tensor, k2: Tensor, arrays):
        top = float(torch.maximum(k1.detach().abs().max(), k2.detach().abs().max()))
        if not (math.isfinite(top) and top > 0) or abs(math.frexp(top)[1]) <= _RENORMALISE_RANGE:
            return self, arrays
        j = math.frexp(top)[1]
        e = self.e + j
        arrays = tuple(None if a is None else ldexp(a, -j) for a in arrays)
        return Scaled(e, ldexp(b, -e), self.w), arrays


def ldexp(x, e: int):
    """x·2^e for a number or tensor, exact (powers of two) unless the result over/underflows;
    in steps the dtype can represent, so 0 stays 0 (no 0·∞)."""
    if e == 0:
        return x
    if not isinstance(x, Tensor):
        try:
            return math.ldexp(float(x), e)
        except OverflowError:
            return math.inf
    step = 100 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1000
    while e != 0:
        part = max(-step, min(step, e))
        x = x * (2.0 ** part)
        e -= part
    return x


def scaled_inputs(spec, *xs: Tensor | None) -> tuple[list, int]:
    """The inputs times 2^-e (exact), with e the exponent of their largest entry, and 2e (the
    scale of x·x'), when the recursion can carry a scale and the inputs are far from 1 (else
    unchanged and 0): |x| ~ 1e-310 (subnormal) or 1e-160 left nothing or a few bits of x·x'.
    Other duals: only inputs whose squares overflow are scaled (``wideNN._large_inputs``)."""
    if not homogeneous(spec):
        from ._large_inputs import large_inputs  # (imports this module)
        return large_inputs(spec, *xs)
    present = [(name, x) for name, x in zip(("x1", "x2"), xs) if x is not None and x.numel()]
    row_tops = [(name, x.detach().abs().amax(-1)) for name, x in present]
    top = max((float(r.max()) for _, r in row_tops), default=0.0)
    if not (math.isfinite(top) and top > 0):
        return list(xs), 0
    # one scale serves every input only while the squared norms of all of them stay normal
    # numbers after it: rows far smaller than the largest would lose their correlations
    info = torch.finfo(present[0][1].dtype)
    span = 2.0 ** -int(0.4 * math.log2(info.max))
    b = spec.b
    bmin = float(b.detach().min()) if isinstance(b, Tensor) else float(b)
    # (a bias variance that stays a normal number at the scale of the largest input keeps the
    # small rows' variances normal too: their kernels are then exact as they are)
    held = bmin > 0 and math.log2(bmin) - 2 * math.frexp(top)[1] >= math.log2(info.tiny) + 64
    for name, r in row_tops:
        small = r[(r > 0) & (r < span * top)]
        if small.numel() and not held:
            raise ValueError(
                f"{name} has rows of size {float(small.min()):.3g} next to inputs of size {top:.3g}: "
                f"their kernel cannot be formed with one scale in {present[0][1].dtype} (the "
                f"ratio exceeds {1 / span:.3g}); compute the kernels of the two groups separately "
                f"or rescale them")
    e = math.frexp(top)[1]
    if abs(e) <= _RENORMALISE_RANGE // 2:
        return list(xs), 0
    return [None if x is None else ldexp(x, -e) for x in xs], 2 * e
