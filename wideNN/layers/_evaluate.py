"""Tiled evaluation of a resolved description's kernels over example pairs.

Two kinds of pass share the layer transforms (``Evaluation.pairs``):

1. *self* passes, each example with itself, batch (n,): they record, for every activation, the
   per-position variances K(x, x)[p, p] its dual needs (a few numbers per example and position);
2. *pair* passes over tiles of example pairs, batch (n, m) (or (n,) for ``diag=True``), which read
   those variances.  Only the tile's covariance tensors are alive, so memory is bounded by the
   tile size: pairs per tile ≈ budget / (bytes per entry · position entries · live arrays).

With x2 = None only tiles on and above the diagonal are computed and mirrored, so the kernel is
exactly symmetric.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_inputs
from ._state import KernelState, input_state
from .base import Evaluation

# working-set target of one tile (all of its live arrays together): on the CPU small enough to
# share the machine; on CUDA a quarter of the free memory, at most this
_CPU_BUDGET = 256 * 1024 * 1024
_CUDA_BUDGET = 16 * 1024 * 1024 * 1024
# live tile-sized arrays of a pass (K, Θ, their transforms and temporaries of a dual)
_ARRAYS = 12


def check_kernel_inputs(x1, x2, diag: bool) -> None:
    """Tensors (N, *in_shape) of one float dtype and device, finite, same per-example shape."""
    check_inputs(x1, x2)  # tensors, float, ≥ 2-D, finite, same dtype/device, same last dim
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 have different per-example shapes: {tuple(x1.shape[1:])} vs "
                         f"{tuple(x2.shape[1:])}")
    if diag and x2 is not None and x1.shape != x2.shape:
        raise ValueError(f"diag=True needs x1 and x2 of the same shape, got {tuple(x1.shape)} and "
                         f"{tuple(x2.shape)}")
    if x1.dim() > 4:
        raise ValueError(f"x1 must be (N, C), (N, C, L) or (N, C, H, W), got shape {tuple(x1.shape)}")


def _pairs_per_tile(root, x: Tensor) -> int:
    budget = _CPU_BUDGET
    if x.is_cuda:
        budget = min(_CUDA_BUDGET, torch.cuda.mem_get_info(x.device)[0] // 4)
    arrays = _ARRAYS + max((_quadrature_arrays(s) for s in _activation_steps(root)), default=0)
    return max(1, budget // (x.element_size() * root.max_entries() * arrays))


def _activation_steps(step):
    from .activation import ActivationStep
    if isinstance(step, ActivationStep):
        yield step
    for child in getattr(step, "steps", ()):
        yield from _activation_steps(child)
    if hasattr(step, "block"):
        yield from _activation_steps(step.block)


def _quadrature_arrays(step) -> int:
    """Quadrature duals integrate node by node with (…, nodes) temporaries."""
    act = step.activation
    return 0 if act.closed_form else 6 * act.quadrature_degree


def _run(root, xa: Tensor, xb: Tensor | None, pairs: str, ev: Evaluation) -> KernelState:
    d = xa.dim() - 2
    return root.apply(input_state(xa, xb, d, root.in_full, pairs), ev)


def self_pass(root, x: Tensor, block: int, compute_ntk: bool):
    """Per-activation variances (N, *S) of x with itself, and the output kernels (N, …)."""
    n_act = root.n_activations
    parts: list[list[Tensor]] = [[] for _ in range(n_act)]
    nngp, ntk = [], []
    for start in range(0, x.shape[0], block):
        ev = Evaluation("self", compute_ntk, record={})
        st = _run(root, x[start:start + block], None, "self", ev)
        for i in range(n_act):
            parts[i].append(ev.record[i])
        nngp.append(st.nngp)
        ntk.append(st.ntk)
    variances = [torch.cat(p) for p in parts]
    return variances, _cat(nngp), (_cat(ntk) if compute_ntk else None)


def _cat(parts):
    if any(p is None for p in parts):
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def evaluate(root, x1: Tensor, x2: Tensor | None, diag: bool, block_size: int | None,
             compute_ntk: bool) -> tuple[Tensor, Tensor | None]:
    """``(nngp, ntk)`` of a resolved description (see ``Serial.kernels``)."""
    per_tile = _pairs_per_tile(root, x1)
    block = block_size or per_tile
    if diag:
        vars1, k, th = self_pass(root, x1, block, compute_ntk)
        if x2 is None:
            return k, _ntk_or_zero(th, k, compute_ntk)
        vars2, _, _ = self_pass(root, x2, block, False)
        ks, ths = [], []
        for s in range(0, x1.shape[0], block):
            sl = slice(s, s + block)
            ev = Evaluation("zip", compute_ntk, [v[sl] for v in vars1], [v[sl] for v in vars2])
            st = _run(root, x1[sl], x2[sl], "zip", ev)
            ks.append(st.nngp)
            ths.append(st.ntk)
        k = _cat(ks)
        return k, _ntk_or_zero(_cat(ths) if compute_ntk else None, k, compute_ntk)
    vars1 = self_pass(root, x1, block, False)[0] if root.n_activations else []
    vars2 = vars1 if x2 is None else (self_pass(root, x2, block, False)[0] if root.n_activations else [])
    rows = block_size or max(1, math.isqrt(per_tile))
    return _matrix(root, x1, x2, vars1, vars2, rows, compute_ntk)


def _ntk_or_zero(th, k, compute_ntk):
    if not compute_ntk:
        return None
    return torch.zeros_like(k) if th is None else th


def _matrix(root, x1, x2, vars1, vars2, rows, compute_ntk):
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n, m = x1.shape[0], xb.shape[0]
    nngp = ntk = None
    for i in range(0, n, rows):
        ri = slice(i, i + rows)
        for j in range(i if symmetric else 0, m, rows):
            rj = slice(j, j + rows)
            ev = Evaluation("matrix", compute_ntk, [v[ri] for v in vars1], [v[rj] for v in vars2])
            st = _run(root, x1[ri], xb[rj], "matrix", ev)
            th = _ntk_or_zero(st.ntk, st.nngp, compute_ntk)
            if symmetric and i == j:
                # the pair (a, b) and (b, a) round differently (k11 and k22 enter the duals in
                # different orders): average so the kernel is exactly symmetric
                st.nngp = 0.5 * (st.nngp + st.nngp.transpose(0, 1))
                th = None if th is None else 0.5 * (th + th.transpose(0, 1))
            if nngp is None:
                shape = (n, m, *st.nngp.shape[2:])
                nngp = st.nngp.new_empty(shape)
                ntk = st.nngp.new_empty(shape) if compute_ntk else None
            for out, val in ((nngp, st.nngp), (ntk, th)):
                if out is None:
                    continue
                out[ri, rj] = val
                if symmetric and j != i:
                    out[rj, ri] = val.transpose(0, 1)
    return nngp, ntk
