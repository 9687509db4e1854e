"""Analytic NNGP and NTK of fully-connected networks (the infinite-width limit).

With σ_w² = ``weight_variance``, σ_b² = ``bias_variance``, d the input dimension and φ the
activation (dual kernels T, Ṫ from ``wideNN.activations``):

    K¹(x, x') = σ_b² + σ_w² x·x'/d,                       Θ¹ = K¹
    K^{l+1}   = σ_b² + σ_w² T(K^l),                        Θ^{l+1} = K^{l+1} + σ_w² Ṫ(K^l) Θ^l

and the output kernels are K^{depth+1}, Θ^{depth+1} (NTK parameterization, as in
neural-tangents' ``stax``).  In the standard parameterization the NNGP is the same and the
NTK depends on the hidden widths n_l:

    Θ¹ = x·x' + 1,   Θ^{l+1} = n_l T(K^l) + 1 + σ_w² Ṫ(K^l) Θ^l.

Memory is bounded by tiling the N×M outputs; the tile size is chosen automatically
(``block_size`` overrides it).  Without autograd, in the NTK parameterization with float
variances, every closed-form activation runs a fused in-place recursion on in-cache tiles
(``wideNN._fused``: one GEMM per tile and a few passes with one transcendental per layer,
tiles shared between single-threaded workers); with ``compile=True`` ReLU uses the
``torch.compile`` tile path below.  Both compute the same numbers as the generic path.

Extreme scales: activations with positively homogeneous duals (ReLU family, identity, step:
``Activation.dual_degree``) run the recursion on K̃ = 2^-E K with E a power of two renormalised
after every layer, so inputs from subnormal to 1e300 and deep layers that grow or shrink give
the exact kernel wherever it is representable and a clear error where it overflows.  The other
closed forms are written in bounded quantities (``wideNN._gaussian.correlation`` and
``shifted_gram``).  Inputs whose squares overflow (|x| ≳ 1e154 in float64) run a scaled first
layer (``wideNN._large_inputs``): erf, sin and cos, whose duals are bounded, give the exact kernel
even where the first-layer kernel σ_b² + σ_w²|x|²/d is not representable; GELU and the
quadrature activations need that first layer representable (a clear error otherwise).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import torch
from torch import Tensor
from torch.nn.functional import threshold_

from . import activations as _acts
from ._checks import (check_bool, check_float_precision, check_inputs, check_int, check_same_place, check_variance,
                      check_widths)
from ._fused import exact_near_one_ as _exact_near_one_, fused_kernels, openmp_threads
from ._native import library as _native_library
from ._numpy_math import arccos_into, sqrt_
from ._equal_rows import equal_pairs, equal_rows, identical_pairs, pair_mask
from ._gaussian import MAX_NODE_FACTOR
from ._large_inputs import large_inputs, scaled_first_layer
from ._quadrature_range import check_quadrature_range
from ._scaling import Scaled, homogeneous, ldexp, scaled_inputs

__all__ = ["kernels"]

# bytes of one tile of one N×M array (the fast path keeps ~6 such arrays alive)
_CPU_TILE_BYTES = 512 * 1024
_CUDA_TILE_BYTES = 256 * 1024 * 1024


def kernels(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    depth: int,
    activation: str | _acts.Activation,
    weight_variance: float | Tensor,
    bias_variance: float | Tensor,
    parameterization: str = "ntk",
    widths: Sequence[int] | None = None,
    diag: bool = False,
    compute_ntk: bool = True,
    block_size: int | None = None,
    compile: bool = False,
    compute_nngp: bool = True,
) -> tuple[Tensor | None, Tensor | None]:
    """Output-layer NNGP K and NTK Θ between ``x1`` (…, N, d) and ``x2`` (…, M, d).

    ``x2=None`` means x1 against itself.  ``diag=True`` returns only K(x1_i, x2_i) (x2 defaults
    to x1), shape (…, N), in O(N) memory.  Tensor variances may require grad (the generic
    autograd-friendly path is then used) and may carry a batch shape broadcasting with the
    leading dimensions of x.  Returns ``(nngp, ntk)``; ``ntk`` is None when
    ``compute_ntk=False``; ``compute_nngp=False`` (with ``compute_ntk``) returns ``(None, ntk)``
    and never stores the N×M output K (the recursion still runs through K tile by tile), so
    an NTK alone costs one output matrix of memory, not two.  ``compile=True`` fuses each
    layer of the ReLU fast path into one ``torch.compile`` kernel (several times faster per
    tile; the first call in a fresh environment pays the compilation, tens of seconds on a
    laptop CPU, cached on disk after).

    The recursion (σ_w² = ``weight_variance``, σ_b² = ``bias_variance``, d the input dimension,
    (u, v) ~ N(0, [[K^l(x,x), K^l(x,x')], [K^l(x,x'), K^l(x',x')]])):

        K¹ = σ_b² + σ_w² x·x'/d,                   Θ¹ = K¹
        K^{l+1} = σ_b² + σ_w² E[φ(u)φ(v)],          Θ^{l+1} = K^{l+1} + σ_w² E[φ'(u)φ'(v)] Θ^l

    returning K^{depth+1}, Θ^{depth+1} (the standard parameterization's NTK: module docstring).
    """
    act = _acts.get(activation)
    depth = _check_depth(depth)
    check_variance("weight_variance", weight_variance)
    check_variance("bias_variance", bias_variance)
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    check_inputs(x1, x2)
    check_float_precision(x1, "x1")
    diag, compute_ntk, compute_nngp = (check_bool(n, v) for n, v in (
        ("diag", diag), ("compute_ntk", compute_ntk), ("compute_nngp", compute_nngp)))
    for name, v in (("weight_variance", weight_variance), ("bias_variance", bias_variance)):
        check_same_place(x1, v, name)
    if compute_ntk and parameterization == "standard":
        widths = _check_widths(widths, depth)
    if block_size is not None:
        block_size = check_int("block_size", block_size)
    if not compute_nngp and not compute_ntk:
        raise ValueError("compute_nngp=False needs compute_ntk=True: nothing would be computed")

    spec = _Recursion(act, depth, weight_variance, bias_variance, parameterization, widths, compute_ntk)
    # inputs whose squares overflow run the first layer scaled (``wideNN._large_inputs``), off the
    # fused tiles; homogeneous duals carry a scale throughout (``wideNN._scaling``)
    large = not homogeneous(spec) and large_inputs(spec, x1, x2)[1] != 0
    if not homogeneous(spec) and not large:
        _check_first_layer(x1, x2, weight_variance, bias_variance)
    if diag:
        if x2 is not None and x2.shape != x1.shape:
            raise ValueError(f"diag=True needs x1 and x2 of the same shape, got "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}")
        return _check_finite_output(_diag(spec, x1, x2), depth)

    # an out-of-range variance at a deep layer is refused before the N×M work of the others
    check_quadrature_range(act, depth, weight_variance, bias_variance, (x1, x2))
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in (x1, x2, weight_variance, bias_variance))
    plain = (not needs_grad and parameterization == "ntk" and x1.dim() == 2
             and not isinstance(weight_variance, Tensor) and not isinstance(bias_variance, Tensor))
    # closed forms: fused tiles shared out between worker threads.  Without the compiled tile
    # layers (``wideNN._native``) ReLU keeps its own fused recursion below for small kernels:
    # with torch passes the worker tiles are 8–15 % faster quiet and 10–25 % with one busy core
    # at 2000 × 2000, the recursion 1.3× faster at 500 × 500 (depth 3, float64, 2 cores)
    m = x1.shape[-2] if x2 is None else x2.shape[-2]
    relu_tiles = type(act) is _acts.ReLU and (
        x1.shape[-2] * m >= _RELU_TILES_MIN_ENTRIES
        or (x1.device.type == "cpu" and _native_library() is not None))
    if plain and not large and not compile and (type(act) is not _acts.ReLU or relu_tiles):
        out = fused_kernels(x1, x2, act, depth, float(weight_variance), float(bias_variance),
                            compute_ntk, compute_nngp, block_size)
        if out is not None:
            return out if x2 is None else _identical_pairs_exact(spec, x1, x2, out)
    fast = (not needs_grad and type(act) is _acts.ReLU and parameterization == "ntk"
            and x1.dim() == 2 and not isinstance(weight_variance, Tensor)
            and not isinstance(bias_variance, Tensor))
    if fast:
        before = torch.get_num_threads()
        threads = before if x1.is_cuda else openmp_threads()
        torch.set_num_threads(threads)
        try:
            out = _relu_tiled(dataclasses.replace(spec, w=float(weight_variance), b=float(bias_variance)),
                              x1, x2, block_size, compile, compute_nngp)
        finally:
            torch.set_num_threads(before)
        if out is not None:
            return _check_finite_output(out, depth)
    return _check_finite_output(_generic_tiled(spec, x1, x2, block_size, compute_nngp), depth)


#: from this many kernel entries on, ReLU runs the worker-thread tiles instead of its recursion
_RELU_TILES_MIN_ENTRIES = 1_000_000


def _check_first_layer(x1: Tensor, x2: Tensor | None, w, b) -> None:
    """The input-layer variances K¹(x, x) = σ_b² + σ_w² |x|²/d must be representable: an
    overflow there would come back as NaN (inf/inf) from every later layer."""
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        scale = torch.maximum(x.detach().amax(), -x.detach().amin()) if x.numel() else x.new_zeros(())
        # |x|²/d ≤ max|x|², so this is exact unless max|x|² itself is near the limit
        s = float(scale) if scale.numel() else 0.0
        k = _as_float(b) + _as_float(w) * (s * s)
        if not math.isfinite(k) or k > torch.finfo(x.dtype).max:
            sq = (x.detach() * x.detach()).sum(-1) / x.shape[-1]
            top = (float(b) if not isinstance(b, Tensor) else float(b.detach().max())) + \
                (float(w) if not isinstance(w, Tensor) else float(w.detach().max())) * sq.max()
            if not bool(torch.isfinite(top)):
                raise ValueError(
                    f"the first-layer kernel σ_b² + σ_w²|x|²/d of {name} overflows {x.dtype} "
                    f"(max |entry| {float(scale):.3g}): rescale the inputs (the kernel is not "
                    f"representable in this dtype)")


def _check_finite_output(out, depth: int):
    """Raise a clear error instead of returning a kernel that overflowed in the recursion
    (e.g. ReLU with σ_w² > 2 grows like (σ_w²/2)^depth)."""
    for k in out:
        if k is not None and not _finite(k.detach()):
            raise ValueError(
                f"the kernel overflowed {k.dtype} in the depth-{depth} recursion (its values exceed "
                f"{torch.finfo(k.dtype).max:.3g}, or an intermediate layer's did): reduce "
                f"weight_variance or depth, or rescale the inputs"
                + (", or use float64" if k.dtype != torch.float64 else ""))
    return out


def _finite(x: Tensor) -> bool:
    if x.numel() == 0:
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


# ----------------------------------------------------------------------------- checks
#: the deepest network whose kernels are computed (a layer costs a few passes over the
#: kernel; deeper requests are typos such as 10**9, which would run for days)
MAX_DEPTH = 100_000


def _check_depth(depth) -> int:
    """The number of hidden layers (0: a linear model), at most ``MAX_DEPTH``."""
    return check_int("depth", depth, minimum=0, maximum=MAX_DEPTH)


def _check_widths(widths, depth: int) -> list[int]:
    if widths is None:
        raise ValueError("the standard-parameterization NTK depends on the hidden widths: "
                         "pass widths=[n_1, ..., n_depth] (or an int for all layers)")
    return check_widths("widths", widths, depth)


def _shaped(v, x: Tensor, extra: int):
    """A hyperparameter as a number, or as a tensor broadcasting over x's batch dims plus
    ``extra`` trailing kernel dims."""
    if isinstance(v, Tensor):
        v = v.to(dtype=x.dtype)
        return v.reshape(v.shape + (1,) * extra)
    return float(v)


# ----------------------------------------------------------------------------- generic path
@dataclasses.dataclass(frozen=True)
class _Recursion:
    """What the layer recursion needs besides the inputs: φ, the number of hidden layers,
    σ_w² and σ_b² (numbers, or tensors shaped to broadcast against the kernel), the
    parameterization, the standard parameterization's hidden widths, and whether Θ is wanted."""

    act: _acts.Activation
    depth: int
    w: float | Tensor
    b: float | Tensor
    param: str = "ntk"
    widths: Sequence[int] | None = None
    compute_ntk: bool = True

    def shaped(self, x: Tensor, extra: int) -> "_Recursion":
        """The same recursion with σ_w², σ_b² broadcasting over x's batch dims plus ``extra``."""
        return dataclasses.replace(self, w=_shaped(self.w, x, extra), b=_shaped(self.b, x, extra))


def _recursion(spec: _Recursion, g, n1, n2, d: int, same: bool, log2_scale: int = 0,
               diag_offset: int | None = None, equal: Tensor | None = None):
    """The layer recursion on any broadcastable (g, n1, n2) = (x·x'/d, |x|²/d, |x'|²/d) · 2^-log2_scale.

    ``same``: x and x' coincide (diagonal), so the 1-D ``dual_diag`` is used throughout.
    ``log2_scale`` ≠ 0 only for positively homogeneous duals (``wideNN._scaling.scaled_inputs``): the kernels
    are then carried as K = 2^E·K̃ with K̃ renormalised after every layer (``wideNN._scaling``).
    ``diag_offset``: g is a row tile of a symmetric kernel whose diagonal starts at this column;
    closed forms then take the coincident pairs from ``dual_diag`` (``_coincident_pairs``).
    ``equal``: a mask (broadcasting with g) of cross pairs of identical inputs, which closed
    forms take from both sides' ``dual_diag`` (``wideNN._equal_rows``).
    """
    act, depth, w, b, param, widths, compute_ntk = (spec.act, spec.depth, spec.w, spec.b, spec.param,
                                                   spec.widths, spec.compute_ntk)
    inputs_need_grad = torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in (g, n1, n2))
    sc = Scaled.start(act, b, w, g, log2_scale) if homogeneous(spec) else None
    first = 0
    if log2_scale and sc is None:
        k, k1, k2, th, first = scaled_first_layer(spec, g, n1, n2, d, same, log2_scale)
    else:
        bs, ws = (sc.b, sc.w) if sc is not None else (b, w)
        k = bs + ws * g
        k1 = bs + ws * n1
        k2 = k1 if same else bs + ws * n2
        th = None
        if compute_ntk:
            th = k if param == "ntk" else d * g + 1.0
    for layer in range(first, depth):
        if same:
            t, td = act.dual_diag(k)
        else:
            # (under autograd a closed form's own backward is exact: the table is for no-grad there)
            kappa = (_common_variance(k1, k2, inputs_need_grad or act.closed_form)
                     if act.uses_angle_table() else None)
            t, td = act.dual(k1, k, k2) if kappa is None else act.dual_equal_variance(kappa, k)
            diag1 = diag2 = None
            if diag_offset is not None and kappa is None and act.closed_form:
                diag1 = act.dual_diag(k1)
                t, td = _coincident_pairs(t, td, diag1, diag_offset)
            elif equal is not None and kappa is None and act.closed_form:
                diag1, diag2 = act.dual_diag(k1), act.dual_diag(k2)
                t, td = equal_pairs(t, td, diag1, diag2, equal)
        back = 0  # T is scale-free for degree 0: the recursion returns to scale 1
        if sc is not None and act.dual_degree == 0 and sc.e != 0:
            back, sc = sc.e, sc.reset(b)
        bs = sc.b if sc is not None else b
        k = bs + w * t
        if compute_ntk:
            if back and not bool(td.detach().any()):
                grad_term = torch.zeros_like(k)  # (step: Ṫ = 0; no 0·2^E in the backward)
            else:
                grad_term = ldexp(w * td * th, back)
            th = (k if param == "ntk" else widths[layer] * t + 1.0) + grad_term
        if not same:
            k1 = bs + w * (diag1 if diag1 is not None else act.dual_diag(k1))[0]
            k2 = bs + w * (diag2 if diag2 is not None else act.dual_diag(k2))[0]
        else:
            k1 = k2 = k
        if sc is not None:
            sc, (k, k1, k2, th) = sc.renormalised(b, k1, k2, (k, k1, k2, th))
    if sc is not None and sc.e != 0:
        k, th = ldexp(k, sc.e), (None if th is None else ldexp(th, sc.e))
    return k, th


def _coincident_pairs(t: Tensor, td: Tensor, diag1, offset: int) -> tuple[Tensor, Tensor]:
    """T and Ṫ with the entries of a point with itself (column = row + ``offset``) replaced by
    the one-variable ``dual_diag`` of its variance.  Two reasons: the layer's own variance and
    its covariance with itself then stay equal at every layer (the bivariate form rounds
    differently), and under autograd their derivative is the accurate one-variable one — through
    the bivariate form it is the sum of three partials (in k11, k12, k22) that cancel from
    O(k^-1/2) to O(k^-3/2) for GELU and from O(k) to O(1) for erf at variance k, which cost
    k·ε relative (1e-6 at variance 1e10)."""
    rows, cols = t.shape[-2], t.shape[-1]
    n = max(0, min(rows, cols - offset))
    if n == 0:
        return t, td
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=t.device)
    idx = torch.arange(n, device=t.device)
    mask[idx, idx + offset] = True
    return torch.where(mask, diag1[0], t), torch.where(mask, diag1[1], td)


def _common_variance(k1: Tensor, k2: Tensor, inputs_need_grad: bool = False) -> float | Tensor | None:
    """The one variance shared by every input (as after per-example normalisation), when there is
    one; quadrature activations then interpolate a 1-D table in the angle instead of integrating
    every entry (``Activation.dual_equal_variance``).  Under autograd through the variances it is
    returned as a 0-d tensor carrying their gradient (every entry of k1 and k2 is the same function
    of σ_w², σ_b², so the mean of k2 carries the total derivative); a gradient with respect to the inputs
    needs each row's own variance, so ``inputs_need_grad`` turns the table off."""
    grad = torch.is_grad_enabled() and (k1.requires_grad or k2.requires_grad)
    if grad and inputs_need_grad:
        return None
    lo = torch.minimum(k1.min(), k2.min()).detach()
    hi = torch.maximum(k1.max(), k2.max()).detach()
    if not bool(lo > 0) or bool(hi - lo > 1e-12 * hi):
        return None
    # from the column side only: it is the same for every row tile, so the tiles share one table
    if grad:
        return k2.mean()
    return float(k2.mean())


def _diag(spec: _Recursion, x1: Tensor, x2: Tensor | None):
    d = x1.shape[-1]
    shaped = spec.shaped(x1, 1)
    (x1, x2), scale = scaled_inputs(spec, x1, x2)
    n1 = (x1 * x1).sum(-1) / d
    if x2 is None:
        return _recursion(shaped, n1, n1, n1, d, True, scale)
    n2 = (x2 * x2).sum(-1) / d
    g = (x1 * x2).sum(-1) / d
    equal = (x1 == x2).all(-1) if _identical_pairs_matter(spec, x1, x2) else None
    if equal is not None and bool(equal.any()):
        g = torch.where(equal, 0.5 * n1 + 0.5 * n2, g)
    else:
        equal = None
    return _recursion(shaped, g, n1, n2, d, False, scale, equal=equal)


def _identical_pairs_matter(spec: _Recursion, x1: Tensor, x2: Tensor) -> bool:
    """Identical cross pairs get their own form (``wideNN._equal_rows``) for closed forms: their
    gradients need it, and so do the values of the duals whose coincident form rests on the
    cancellation k11 k22 − k12² (erf's NTK at variance 1e14 was 2 % off, the GEMM's k12
    differing from the row sums' k11 by rounding)."""
    return spec.act.closed_form


def _identical_pairs_exact(spec: _Recursion, x1: Tensor, x2: Tensor, out):
    """The fused tiles' entries at identical cross pairs (x1[i] == x2[j]) replaced by the
    one-variable recursion of that input, as on the diagonal of K(x1, x1)."""
    pairs = identical_pairs(x1, x2)
    if pairs is None:
        return out
    i, j = pairs
    k, th = _diag(spec, x1[i], None)
    nngp, ntk = out
    if nngp is not None:
        nngp[i, j] = k
    if ntk is not None and th is not None:
        ntk[i, j] = th
    return out


def _auto_rows(m: int, x: Tensor, arrays: int) -> int:
    budget = _CUDA_TILE_BYTES if x.is_cuda else 8 * _CPU_TILE_BYTES
    return max(16, budget // max(1, m * x.element_size() * max(1, arrays // 4)))


def _quadrature_arrays(act, x1: Tensor, xb: Tensor, w, b, needs_grad: bool) -> int:
    """Extra tile-sized arrays a layer of a quadrature activation keeps alive on CUDA.

    Off the angle-table path (inputs of different norms, or autograd) the dual is integrated
    node by node with (rows, M, nodes) temporaries (measured for tanh: ≈ 6·nodes tile arrays), and
    the rule has up to 8·quadrature_degree nodes for large variances.  With the 256 MB CUDA
    tile that would be 60–200 GB, so the rows are scaled down; on the CPU the tile budget is
    small enough (≤ ~4 GB) and the tiling is left as it is.  0 for closed forms and when
    every input has the same variance (the table path: a few arrays per entry)."""
    if act.closed_form or not x1.is_cuda:
        return 0
    if not needs_grad and not isinstance(w, Tensor) and not isinstance(b, Tensor):
        d = x1.shape[-1]
        k1 = b + w * (x1 * x1).sum(-1) / d
        k2 = b + w * (xb * xb).sum(-1) / d
        if _common_variance(k1, k2) is not None:
            return 0
    # ~6–7 temporaries per node, at the largest node count the rule can pick
    return 7 * MAX_NODE_FACTOR * act.quadrature_degree


def _generic_tiled(spec: _Recursion, x1: Tensor, x2: Tensor | None, block_size: int | None,
                   compute_nngp: bool = True):
    act, w, b, compute_ntk = spec.act, spec.w, spec.b, spec.compute_ntk
    d = x1.shape[-1]
    (x1, x2), scale = scaled_inputs(spec, x1, x2)
    xb = x1 if x2 is None else x2
    shaped = spec.shaped(x1, 2)
    n2 = ((xb * xb).sum(-1) / d).unsqueeze(-2)
    m = xb.shape[-2]
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in (x1, x2, w, b))
    # tiles written into preallocated outputs under autograd too (not concatenated at the end),
    # except inside torch.func transforms, whose wrapped tiles cannot be written into them
    preallocate = not needs_grad or not _functorch_wrapped(x1, x2, w, b)
    if block_size:
        rows = int(block_size)
    else:
        rows = _auto_rows(m, x1, arrays=12 + _quadrature_arrays(act, x1, xb, w, b, needs_grad))
    nngp_parts, ntk_parts = [], []
    nngp = ntk = None
    labels = equal_rows(x1, x2) if x2 is not None and _identical_pairs_matter(spec, x1, x2) else None

    def tile(xa: Tensor, start: int):
        n1 = ((xa * xa).sum(-1) / d).unsqueeze(-1)
        g = xa @ xb.transpose(-1, -2) / d
        if x2 is None:
            # coincident pairs get exactly |x|²/d (the GEMM rounds differently from the row sums),
            # so their correlation is exactly 1 at every layer
            diag = torch.diagonal(g, offset=start, dim1=-2, dim2=-1)
            diag.copy_(n1.squeeze(-1)[..., :diag.shape[-1]])
        equal = pair_mask(labels, start, xa.shape[-2])
        if equal is not None and bool(equal.any()):  # identical cross pairs: the same, both sides
            g = torch.where(equal, 0.5 * n1 + 0.5 * n2, g)
        else:
            equal = None
        return _recursion(shaped, g, n1, n2, d, False, scale, start if x2 is None else None, equal)

    for start in range(0, x1.shape[-2], rows):
        xa = x1[..., start:start + rows, :]
        k, th = tile(xa, start)
        if not preallocate:  # keep the graph: concatenate at the end
            nngp_parts.append(k)
            ntk_parts.append(th)
            continue
        if start == 0:  # write tiles into preallocated outputs: peak ≈ outputs + one tile
            shape = k.shape[:-2] + (x1.shape[-2], m)
            nngp = torch.empty(shape, dtype=k.dtype, device=k.device) if compute_nngp else None
            ntk = torch.empty(shape, dtype=k.dtype, device=k.device) if compute_ntk else None
        if compute_nngp:
            nngp[..., start:start + rows, :] = k
        if compute_ntk:
            ntk[..., start:start + rows, :] = th
    if not preallocate:
        nngp = torch.cat(nngp_parts, dim=-2) if len(nngp_parts) > 1 else nngp_parts[0]
        ntk = (torch.cat(ntk_parts, dim=-2) if len(ntk_parts) > 1 else ntk_parts[0]) if compute_ntk else None
    if x2 is None and not act.closed_form:
        # quadrature nodes sit on the Cholesky factor of each (k11, k12, k22), which is not
        # symmetric in the pair: average the two triangles so K(x, x') = K(x', x) exactly
        if needs_grad:
            nngp = 0.5 * (nngp + nngp.transpose(-1, -2))
            ntk = 0.5 * (ntk + ntk.transpose(-1, -2)) if compute_ntk else None
        else:
            for out in (nngp, ntk):
                if out is not None:
                    _symmetrize_(out)
    if not compute_nngp:
        nngp = None  # (the autograd path concatenated it; it is not returned)
    return nngp, ntk


def _functorch_wrapped(*tensors) -> bool:
    """Inside a torch.func transform (whose wrapped tensors cannot be written into a plain
    preallocated output)."""
    return any(isinstance(t, Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _symmetrize_(a: Tensor, block: int = 1024) -> Tensor:
    """a ← (a + aᵀ)/2 in place, one pair of tiles at a time: the out-of-place expression
    allocates two more N×N matrices (the tanh MNIST:50k kernel ran out of memory on it)."""
    n = a.shape[-1]
    for i in range(0, n, block):
        for j in range(i, n, block):
            upper = a[..., i:i + block, j:j + block]
            lower = a[..., j:j + block, i:i + block]
            avg = (upper + lower.transpose(-1, -2)).mul_(0.5)
            upper.copy_(avg)
            lower.copy_(avg.transpose(-1, -2))
    return a


# ----------------------------------------------------------------------------- fused ReLU path
def _relu_tiled(spec: _Recursion, x1: Tensor, x2: Tensor | None, block_size: int | None,
                compile: bool, compute_nngp: bool = True):
    """ReLU, NTK parameterization, no autograd: tiled, in place, in normalised coordinates.

    With r = K(x, x)^{-1/2} the recursion is run on c = K r r' and q = Θ r r':
        c' = σ_b² r₊ r₊' + A ⊙ (√(1−c²) + (π−θ) c),   q' = c' + A ⊙ (π−θ) ⊙ q,
    A = (σ_w²/2π) (r₊/r) ⊗ (r₊'/r'), r₊ the next layer's r (ReLU: K₊(x,x) = σ_b² + σ_w² K(x,x)/2).
    The first layer's c is one GEMM per row panel of row-scaled inputs with one extra column
    for σ_b²; the layers then run on in-cache tiles of the panel (eagerly in place, or as one
    fused ``torch.compile`` kernel per layer with ``compile=True``).
    Returns None when some input has zero variance (normalisation undefined).
    """
    depth, w, b, compute_ntk = spec.depth, spec.w, spec.b, spec.compute_ntk
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    d = x1.shape[-1]
    k1 = b + w * (x1 * x1).sum(-1) / d
    k2 = k1 if symmetric else b + w * (xb * xb).sum(-1) / d
    # zero, subnormal or overflowing variances: the generic path, which carries a power-of-two
    # scale (``wideNN._scaling``), takes them
    tiny = torch.finfo(x1.dtype).tiny * 2.0 ** 64
    if not all(bool(torch.isfinite(k).all()) and bool((k >= tiny).all()) for k in (k1, k2)):
        return None

    def augment(x, k):
        r = k.rsqrt()
        out = torch.empty(x.shape[0], d + (b > 0), dtype=x.dtype, device=x.device)
        torch.mul(x, (r * math.sqrt(w / d)).unsqueeze(-1), out=out[:, :d])
        if b > 0:
            torch.mul(r, math.sqrt(b), out=out[:, d])
        return out

    def factors(k):
        """Per layer: A's row factor √(K/K₊), σ_b² r₊ factor, and the final √K (vectors)."""
        rows, bias = [], []
        for _ in range(depth):
            k_next = b + 0.5 * w * k
            rows.append((k / k_next).sqrt_())
            bias.append(k_next.rsqrt())
            k = k_next
        return rows, bias, k.sqrt()

    rows1, bias1, back1 = factors(k1)
    rows2, bias2, back2 = (rows1, bias1, back1) if symmetric else factors(k2)
    for v in (*rows1, *bias1, back1, *rows2, *bias2, back2):
        if not (bool(torch.isfinite(v).all()) and bool((v > 0).all())):
            return None  # a layer's variance over- or underflowed: the generic path decides
    a1 = augment(x1, k1)
    a2 = a1 if symmetric else augment(xb, k2)
    n, m = x1.shape[0], xb.shape[0]
    nngp = torch.empty(n, m, dtype=x1.dtype, device=x1.device) if compute_nngp else None
    ntk = torch.empty(n, m, dtype=x1.dtype, device=x1.device) if compute_ntk else None
    if block_size:
        tile = int(block_size)
    else:
        budget = _CUDA_TILE_BYTES if x1.is_cuda else _CPU_TILE_BYTES
        tile = max(32, int(math.sqrt(budget / x1.element_size())))
    layer = _compiled_relu_layer() if compile else None
    # tile buffers of the eager path: q, two alternating c's, and the π − θ scratch
    bufs = [] if compile else [torch.empty(min(tile, n), min(tile, m), dtype=x1.dtype, device=x1.device)
                               for _ in range(4)]
    w2pi = torch.tensor(w / (2 * math.pi), dtype=x1.dtype, device=x1.device)
    bt = torch.tensor(b, dtype=x1.dtype, device=x1.device)
    for i in range(0, n, tile):
        ri, j0 = slice(i, i + tile), (i if symmetric else 0)
        panel = a1[ri] @ a2[j0:].T
        _exact_near_one_(panel, a1[ri], a2[j0:])
        for j in range(j0, m, tile):
            rj = slice(j, j + tile)
            c = panel[:, j - j0:j - j0 + tile]
            # coincident points have correlation exactly 1 at every layer; the recursion would
            # leave 1 − ulps, which arccos turns into angles of ~1e-8
            on_diagonal = symmetric and i == j
            if compile:
                c = c.contiguous()  # one memory layout for every call: no recompilation
                q = c
                for l in range(depth):
                    if on_diagonal:
                        c.diagonal().fill_(1.0)
                    c, q = layer(c, q, rows1[l][ri, None], rows2[l][None, rj], bias1[l][ri, None],
                                 bias2[l][None, rj], w2pi, bt, compute_ntk)
            else:
                # reuse four tile buffers: fresh 512 KB temporaries would each be mmapped and
                # page-faulted, which costs more than the arithmetic
                h, wd = c.shape
                qb, out, other, scratch = (buf[:h, :wd] for buf in bufs)
                q = qb.copy_(c) if compute_ntk else c
                for l in range(depth):
                    if on_diagonal:
                        c.diagonal().fill_(1.0)
                    c = _relu_layer_(c, q, rows1[l][ri], rows2[l][rj], bias1[l][ri], bias2[l][rj],
                                     w2pi, bt, compute_ntk, out, scratch)
                    out, other = other, out
            if compute_nngp:
                nngp[ri, rj] = c.mul_(back1[ri, None]).mul_(back2[None, rj])
                if symmetric and j != i:
                    nngp[rj, ri] = c.T
            if compute_ntk:
                ntk[ri, rj] = q.mul_(back1[ri, None]).mul_(back2[None, rj])
                if symmetric and j != i:
                    ntk[rj, ri] = q.T
    return nngp, ntk


def _negate_snapped_(c: Tensor) -> Tensor:
    """c → m = −c in place, clamped to [−1, 1], with correlations within 8 ulps of ±1 set to
    exactly ±1 (as ``snap_correlation`` in the generic path: a coincident pair stays coincident
    through every layer).  Three passes without masks: threshold_ sets x ≤ −1 + tol to −1,
    applied to c and then to −c.  The ReLU dual then takes arccos(m) = π − θ directly."""
    tol = 8 * torch.finfo(c.dtype).eps
    threshold_(c, -1.0 + tol, -1.0)
    return threshold_(c.neg_(), -1.0 + tol, -1.0)


def _relu_layer_(c, q, row, col, brow, bcol, w2pi, b, compute_ntk: bool, out: Tensor, p: Tensor) -> Tensor:
    """One ReLU layer on a tile (see ``_relu_tiled``): returns the new c written into ``out``
    and updates q in place; ``p`` is scratch; c is overwritten.  No allocation of tile-sized
    arrays; on the CPU the arccos and the square root run in NumPy (``arccos_into``)."""
    m = _negate_snapped_(c)
    arccos_into(m, p)                                                           # π − θ
    # |m| ≤ 1 exactly, so 1 − m² ≥ 0
    sqrt_(torch.addcmul(_one(m), m, m, value=-1.0, out=out)).addcmul_(p, m, value=-1.0)  # √(1−c²) + (π−θ)c
    rs = row * w2pi
    out.mul_(rs[:, None]).mul_(col[None, :]).addr_(brow * b, bcol)
    if compute_ntk:
        q.mul_(p).mul_(rs[:, None]).mul_(col[None, :]).add_(out)
    return out


def _one(x: Tensor) -> Tensor:
    return torch.ones((), dtype=x.dtype, device=x.device)


def _relu_layer_pure(c, q, row, col, brow, bcol, w2pi, b, compute_ntk: bool):
    """The same layer as ``_relu_layer_`` written functionally, for ``torch.compile`` to fuse."""
    c = c.clamp(-1.0, 1.0)
    tol = 8 * torch.finfo(c.dtype).eps
    c = torch.where(c >= 1.0 - tol, 1.0, torch.where(c <= -1.0 + tol, -1.0, c))
    p = math.pi - torch.arccos(c)
    scale = (w2pi * row) * col
    c_new = scale * (torch.sqrt(torch.clamp(1.0 - c * c, min=0.0)) + p * c) + (b * brow) * bcol
    q_new = c_new + scale * p * q if compute_ntk else c_new
    return c_new, q_new


@functools.lru_cache(maxsize=1)
def _compiled_relu_layer():
    """The ReLU layer as one fused kernel (compiled once per process; inductor caches on disk)."""
    return torch.compile(_relu_layer_pure, dynamic=True)


def _as_float(v) -> float:
    """The largest value of a hyperparameter (number or tensor), without autograd."""
    return float(v.detach().max()) if isinstance(v, Tensor) else float(v)
