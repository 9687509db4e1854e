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
from typing import Callable

import torch
from torch import Tensor

from .._checks import check_inputs
from .._equal_rows import identical_pairs
from .._fused import run_tasks, tile_threads
from ._scale import rescaled
from ._state import KernelState, input_state
from .base import Evaluation

# working-set target of one tile (all of its live arrays together).  CPU: small enough that a
# layer's dozen elementwise passes over the tile run in cache (the L2/L3 of one core; measured on
# the flatten-readout CNN-GP, 28×28, tiles of ~100 example pairs ran 2.7× faster than tiles of
# ~3000); CUDA: a quarter of the free memory, at most this
_CPU_BUDGET = 8 * 1024 * 1024
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


def _run(root, xa: Tensor, xb: Tensor | None, pairs: str, ev: Evaluation,
         log2_scale: int = 0) -> KernelState:
    """The output state of one pass; inputs divided by 2^(E/2) (``log2_scale`` = E,
    ``wideNN.layers._scale``) return 2^E times the scaled output (∞ where it overflows)."""
    d = xa.dim() - 2
    state = input_state(xa, xb, d, root.in_full, pairs)
    if not log2_scale:
        return root.apply(state, ev)
    state.log2_scale = log2_scale
    return rescaled(root.apply(state, ev), 0)


def _prepared(root, variances: list[Tensor]) -> list | None:
    """Per activation, the per-example factors of its fused dual (``ActivationStep.prepare``),
    computed once for all tiles; None when no activation has one."""
    steps = {s.index: s for s in _activation_steps(root)}
    out = [steps[i].prepare(v) for i, v in enumerate(variances)]
    return out if any(f is not None for f in out) else None


def _tiles(tasks: list, work: Callable[[object], bool], on_cpu: bool) -> None:
    """work(task) for every task.  The first runs in this thread; its result says whether the
    kernels carry autograd.  Without autograd, on the CPU the others are shared out between
    worker threads that run their tiles single-threaded (``wideNN._fused``: an OpenMP barrier
    per small pass would wait for descheduled threads on a shared machine), with the caller's
    inference mode."""
    if not tasks:
        return
    grad = work(tasks[0])
    rest = tasks[1:]
    if not on_cpu or grad:
        for task in rest:
            work(task)
        return
    inference = torch.is_inference_mode_enabled()

    def in_worker(task, _buffers) -> None:
        with (torch.inference_mode() if inference else torch.no_grad()):
            work(task)

    before = torch.get_num_threads()
    try:
        threads = min(tile_threads(before), max(1, len(rest)))
        torch.set_num_threads(1)
        run_tasks(rest, in_worker, lambda: None, threads)
    finally:
        torch.set_num_threads(before)


def self_pass(root, x: Tensor, block: int, compute_ntk: bool, log2_scale: int = 0):
    """Per-activation variances (N, *S) of x with itself (at the scale of the state reaching each
    activation), and the output kernels (N, …)."""
    n_act = root.n_activations
    starts = list(range(0, x.shape[0], block))
    results: list = [None] * len(starts)

    def work(b: int) -> bool:
        ev = Evaluation("self", compute_ntk, record={})
        st = _run(root, x[starts[b]:starts[b] + block], None, "self", ev, log2_scale)
        results[b] = ([ev.record[i] for i in range(n_act)], st.nngp, st.ntk)
        return _requires_grad(st)

    _tiles(list(range(len(starts))), work, not x.is_cuda)
    variances = [torch.cat([r[0][i] for r in results]) for i in range(n_act)]
    nngp, ntk = _cat([r[1] for r in results]), _cat([r[2] for r in results])
    return variances, nngp, (ntk if compute_ntk else None)


def _requires_grad(st: KernelState) -> bool:
    return st.nngp.requires_grad or (st.ntk is not None and st.ntk.requires_grad)


def _cat(parts):
    if any(p is None for p in parts):
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def evaluate(root, x1: Tensor, x2: Tensor | None, diag: bool, block_size: int | None,
             compute_ntk: bool, log2_scale: int = 0) -> tuple[Tensor, Tensor | None]:
    """``(nngp, ntk)`` of a resolved description (see ``Serial.kernels``); ``log2_scale`` = E ≠ 0
    for inputs divided by 2^(E/2) (``wideNN.layers._scale``)."""
    per_tile = _pairs_per_tile(root, x1)
    block = block_size or per_tile
    sc = log2_scale
    if diag:
        vars1, k, th = self_pass(root, x1, block, compute_ntk, sc)
        if x2 is None:
            return k, _ntk_or_zero(th, k, compute_ntk)
        vars2, _, _ = self_pass(root, x2, block, False, sc)
        prep1, prep2 = _prepared(root, vars1), _prepared(root, vars2)
        ks, ths = [], []
        for s in range(0, x1.shape[0], block):
            sl = slice(s, s + block)
            ev = Evaluation("zip", compute_ntk, [v[sl] for v in vars1], [v[sl] for v in vars2],
                            prepared1=_slice(prep1, sl), prepared2=_slice(prep2, sl))
            st = _run(root, x1[sl], x2[sl], "zip", ev, sc)
            ks.append(st.nngp)
            ths.append(st.ntk)
        k = _cat(ks)
        return k, _ntk_or_zero(_cat(ths) if compute_ntk else None, k, compute_ntk)
    vars1 = self_pass(root, x1, block, False, sc)[0] if root.n_activations else []
    vars2 = vars1 if x2 is None else (self_pass(root, x2, block, False, sc)[0] if root.n_activations else [])
    rows = block_size or max(1, math.isqrt(per_tile))
    return _matrix(root, x1, x2, vars1, vars2, rows, compute_ntk, sc)


def _local_pairs(pairs, i: int, j: int, rows: int):
    """The identical example pairs that fall in the tile at (i, j), in its own indices."""
    if pairs is None:
        return None
    a, b = pairs
    inside = (a >= i) & (a < i + rows) & (b >= j) & (b < j + rows)
    return (a[inside] - i, b[inside] - j) if bool(inside.any()) else None


def _slice(prepared: list | None, rows: slice) -> list | None:
    if prepared is None:
        return None
    return [None if f is None else tuple(t[rows] for t in f) for f in prepared]


def _ntk_or_zero(th, k, compute_ntk):
    if not compute_ntk:
        return None
    return torch.zeros_like(k) if th is None else th


def _matrix(root, x1, x2, vars1, vars2, rows, compute_ntk, log2_scale=0):
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n, m = x1.shape[0], xb.shape[0]
    prep1 = _prepared(root, vars1) if vars1 else None
    prep2 = prep1 if symmetric else (_prepared(root, vars2) if vars2 else None)
    outputs: list = []
    tiles = [(i, j) for i in range(0, n, rows) for j in range(i if symmetric else 0, m, rows)]
    same = None if symmetric or not root.n_activations else identical_pairs(x1.flatten(1), x2.flatten(1))

    def work(ij) -> bool:
        i, j = ij
        ri, rj = slice(i, i + rows), slice(j, j + rows)
        ev = Evaluation("matrix", compute_ntk, [v[ri] for v in vars1], [v[rj] for v in vars2],
                        prepared1=_slice(prep1, ri), prepared2=_slice(prep2, rj),
                        coincident=symmetric and i == j, identical=_local_pairs(same, i, j, rows))
        st = _run(root, x1[ri], xb[rj], "matrix", ev, log2_scale)
        th = _ntk_or_zero(st.ntk, st.nngp, compute_ntk)
        if symmetric and i == j:
            # the pair (a, b) and (b, a) round differently (k11 and k22 enter the duals in
            # different orders): average so the kernel is exactly symmetric
            st.nngp = 0.5 * (st.nngp + st.nngp.transpose(0, 1))
            th = None if th is None else 0.5 * (th + th.transpose(0, 1))
        if not outputs:  # the first tile runs alone (``_tiles``)
            shape = (n, m, *st.nngp.shape[2:])
            outputs.append(st.nngp.new_empty(shape))
            outputs.append(st.nngp.new_empty(shape) if compute_ntk else None)
        for out, val in zip(outputs, (st.nngp, th)):
            if out is None:
                continue
            out[ri, rj] = val
            if symmetric and j != i:
                out[rj, ri] = val.transpose(0, 1)
        return _requires_grad(st)

    _tiles(tiles, work, not x1.is_cuda)
    return outputs[0], outputs[1]
