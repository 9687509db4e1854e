"""Empirical NTK and NNGP of finite PyTorch models, computed with ``torch.func``.

For a model f: (N, …) → (N, O) with trainable parameters θ,

    Θ(x, x')[o, o'] = Σ_p ∂f_o(x)/∂θ_p · ∂f_o'(x')/∂θ_p          (empirical NTK)
    K(x, x')[o, o'] = f_o(x) · f_o'(x')                           (empirical NNGP of one draw)

returned as ``mode="full"`` (N, M, O, O), ``"diagonal"`` (N, M, O) (o = o') or ``"trace"``
(N, M), the MEAN over outputs of the diagonal, so that it converges to the analytic kernel of
``wideNN.analytic`` as the width grows.

Methods for the NTK (all give the same numbers up to rounding):

- ``"jacobian"``: per-example Jacobians (``vmap(jacrev(...))``), contracted parameter by
  parameter with matrix products.  Memory O(chunk·O·P).
- ``"ntk_vp"``: NTK-vector products: a ``vjp`` of f(x2) for each output cotangent, then a
  ``jvp`` of f(x1) along the resulting parameter tangent.  The Jacobian of x1 is never
  formed (the tangents are the rows of a column tile's Jacobian).
- ``"structured"``: for MLPs (``wideNN.Network`` or an ``nn.Sequential`` of ``nn.Linear`` and
  elementwise activations) the layer formula of ``wideNN._structured``: a handful of GEMMs per
  layer instead of O(N·M·O²·P) work.
- ``"auto"``: ``structured`` when it applies, otherwise the cheaper of ``jacobian`` and
  ``ntk_vp`` by the cost model below.

Cost model for ``"auto"`` (after Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width Neural
Tangent Kernel", ICML 2022, counting what the two code paths here actually do).  With F the
FLOPs of one single-example forward pass (``torch.utils.flop_counter``, floored at 2P), P
trainable parameters, O outputs, E the (n, m) example pairs the tiles compute (N·M, or about
half of N² for tiled x2=None), all in units of one FLOP of a large matrix product:

    jacobian  ≈ κ·(1 + 2O)·F·R + μ·O·P·R + 2·E·O^k·P     (k = 2 in full mode, else 1)
    ntk_vp    ≈ κ·2·O·F·Σ(a·b + b²) + μ·O·P·Σb           (over a×b tiles; one: a=N, b=M)

R is the number of per-example Jacobians built (a forward and O backward passes each: N + M, or
more when column Jacobians do not fit next to a row tile and are rebuilt for each row tile).  An
a×b tile of ntk_vp does a vjp through its b columns for each of its b·O cotangents (2b²·O·F),
then a jvp through its a rows along each resulting tangent (2ab·O·F).  κ is the cost of a FLOP
of these vmapped autodiff passes and μ that of storing one number of an O·P-per-example
Jacobian or tangent block (fresh memory, written then read); κ = 9 (per-case fits 4–13) and
μ = 100 were measured on CPU (``benchmarks/bench_auto_method.py``, RESULTS.md).  ``auto``
takes ntk_vp when its cost is strictly lower.  So trace/diagonal mode, O = 1 and convolutions
(F ≫ P) go to jacobian; full mode with many outputs and F ≈ 2P (dense layers) goes to ntk_vp
once O ≳ 4κ.  Both paths store
O·P numbers per column example (ntk_vp's tangents are the rows of the column Jacobian), so the
per-example memory of ntk_vp is never below that of jacobian: when one example's Jacobian does
not fit, neither does ntk_vp's tile, and memory enters the choice only through the tile sizes.

Both x1 and x2 are tiled into blocks of ``chunk_size`` examples (chosen from a memory budget
when None), so N = 10k never needs the N·O·P Jacobian at once.  The model is left as it was:
parameters are read detached, buffers are passed as copies (so even a train-mode update of
running statistics cannot leak back), the module's mode is not touched, and parameters with
``requires_grad=False`` are treated as constants (their terms drop out of Θ).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, stack_module_state, vjp, vmap
from torch.utils.flop_counter import FlopCounterMode

from . import _structured
from ._checks import apply_model, check_inputs, check_int, check_seed
from ._ntk_cost import _choose_method, _forward_flops, _method_costs

__all__ = ["empirical_ntk", "empirical_nngp"]

_MODES = ("trace", "diagonal", "full")
_METHODS = ("auto", "jacobian", "ntk_vp", "structured")


# ----------------------------------------------------------------------------- validation
def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _check_batches(x1: Tensor, x2: Tensor | None) -> None:
    """x1 (N, …) and x2 (M, …) with the same per-example shape: (d,), (C, L), (C, H, W), …"""
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None:
            check_inputs(x, name1=name)
            if x.shape[0] == 0:
                raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); "
                                 f"empirical kernels need at least one example")
    if x2 is not None:
        if x1.dim() == x2.dim() == 2 and x1.shape[1] != x2.shape[1]:
            raise ValueError(f"x1 and x2 have different feature sizes: {x1.shape[1]} vs {x2.shape[1]}")
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"x1 and x2 have different per-example shapes: "
                             f"{tuple(x1.shape[1:])} vs {tuple(x2.shape[1:])}")
        check_inputs(x1, x2, check_finite=False)  # dtype and device


# layers whose training-mode forward couples the examples of a batch or draws random numbers
_TRAIN_MODE_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _check_model(model: nn.Module, x: Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, layer in model.named_modules():
        if layer.training and isinstance(layer, _TRAIN_MODE_LAYERS):
            raise ValueError(
                f"the model's layer {name or '(root)'!r} ({type(layer).__name__}) is in training mode, "
                f"where its output is random or depends on the rest of the batch, so the network has "
                f"no per-example kernel; call model.eval() first (and model.train() after, if needed)")
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if not torch.is_floating_point(p):
            continue
        if p.dtype != x.dtype:
            raise TypeError(f"the model's {name} is {p.dtype} but the inputs are {x.dtype}; "
                            f"convert one of them (e.g. model.to({x.dtype}) or x.to({p.dtype}))")
        if p.device != x.device:
            raise ValueError(f"the model's {name} is on {p.device} but the inputs are on {x.device}")


def _split_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable parameters, constants): detached trainable parameters, and copies of the
    buffers (plus frozen parameters) so that functional calls cannot modify the model."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    consts = {n: b.detach().clone() for n, b in model.named_buffers()}
    consts.update({n: p.detach() for n, p in model.named_parameters() if not p.requires_grad})
    return params, consts


def _check_per_example(fn: Callable[[Tensor], Tensor], x: Tensor) -> None:
    """The raw model output (before any reshape) must have one row per example, and an
    example's output must not depend on the other examples of the batch (a model that sums or
    averages over the batch has no per-example kernel)."""
    y1 = _apply(fn, x[:1])
    y2 = _apply(fn, x[:2]) if x.shape[0] >= 2 else None
    for n, y in ((1, y1), (2, y2)):
        if y is None:
            continue
        if not isinstance(y, Tensor) or y.dim() == 0 or y.shape[0] != n:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"the model must map a batch of N examples to a batch of N outputs; "
                             f"a batch of {n} gave output shape {shape} (does it reduce over the batch?)")
    if y2 is not None:
        tol = 1e-4 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
        scale = float(y1.abs().max()) if y1.numel() else 0.0
        if not torch.allclose(y2[:1], y1, rtol=tol, atol=tol * max(scale, 1e-30)):
            raise ValueError("the model's output for one example depends on the other examples of "
                             "the batch (e.g. normalisation or a mean over the batch), so it has no "
                             "per-example kernel")


def _apply(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    with torch.no_grad():
        return apply_model(fn, x, f"the model cannot be applied to inputs of per-example shape "
                                  f"{tuple(x.shape[1:])}")


def _out_dim(fn: Callable[[Tensor], Tensor], x: Tensor) -> int:
    y = _apply(fn, x[:1])
    if y.dim() == 0 or y.shape[0] != 1:
        raise ValueError(f"the model must map a batch of N examples to a batch of N outputs; "
                         f"a batch of 1 gave output shape {tuple(y.shape)}")
    return max(1, int(math.prod(y.shape[1:])))


# ----------------------------------------------------------------------------- tiling
def _memory_budget(device: torch.device) -> int:
    """Bytes the tiles' intermediates may use: a quarter of free GPU memory, or a quarter of
    available RAM on the CPU, clamped to [256 MiB, 8 GiB]."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(256 << 20, free // 4))
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 8 << 30
    return int(min(8 << 30, max(256 << 20, avail // 4)))


def _plan(per_example_bytes: float, n: int, m: int, device: torch.device,
          chunk_size: int | None) -> tuple[int, bool]:
    """(rows/columns per tile, whether all column features are kept across row tiles).

    Keeping the column features avoids recomputing them for every row tile; it is done only
    when they fit in the budget next to one row tile."""
    budget = _memory_budget(device)
    per = max(1.0, per_example_bytes)
    chunk = chunk_size or int(max(1, min(max(n, m), budget // per)))
    return chunk, (m + chunk) * per <= budget


def _check_chunk(chunk_size: int | None) -> None:
    if chunk_size is not None:
        check_int("chunk_size", chunk_size)


def _swap(block: Tensor, mode: str) -> Tensor:
    """Θ(x', x) from Θ(x, x'): swap the example axes (and the output axes in full mode)."""
    return block.permute(1, 0, 3, 2) if mode == "full" else block.transpose(0, 1)


def _tiled(x1: Tensor, x2: Tensor | None, chunk: int, tail: tuple[int, ...],
           featurize: Callable[[Tensor], object], pair: Callable[[object, object], Tensor],
           mode: str, cache_cols: bool = False) -> Tensor:
    """Assemble the (N, M, *tail) kernel from blocks of ``chunk`` rows and columns.

    Features of the current row block are computed once and reused across its columns, and
    with ``cache_cols`` the column features are computed once for all rows; with x2=None only
    the upper triangle of blocks is computed and mirrored."""
    sym = x2 is None
    xb = x2 if x2 is not None else x1
    n, m = x1.shape[0], xb.shape[0]
    starts1 = list(range(0, n, chunk))
    starts2 = list(range(0, m, chunk))
    if len(starts1) == 1 and len(starts2) == 1:
        f1 = featurize(x1)
        return pair(f1, f1 if sym else featurize(xb))
    cache: dict[int, object] = {}
    out = torch.empty((n, m, *tail), dtype=x1.dtype, device=x1.device)
    for i in starts1:
        f1 = cache[i] if sym and i in cache else featurize(x1[i:i + chunk])
        for j in starts2:
            if sym and j < i:
                continue
            if sym and j == i:
                f2 = f1
            elif j in cache:
                f2 = cache[j]
            else:
                f2 = featurize(xb[j:j + chunk])
                if cache_cols:
                    cache[j] = f2
            block = pair(f1, f2)
            out[i:i + chunk, j:j + chunk] = block
            if sym and j > i:
                out[j:j + chunk, i:i + chunk] = _swap(block, mode)
            del f2, block
        if sym:
            cache.pop(i, None)
    return out


def _tail(mode: str, o: int) -> tuple[int, ...]:
    return {"full": (o, o), "diagonal": (o,), "trace": ()}[mode]


# ----------------------------------------------------------------------------- contractions
def _contract_jacobians(j1: dict[str, Tensor], j2: dict[str, Tensor], mode: str) -> Tensor:
    """Σ_p J1[n, o, p] J2[m, o', p] in the requested mode, one GEMM per parameter tensor."""
    out: Tensor | None = None
    for name, a in j1.items():
        b = j2[name]
        n, o, m = a.shape[0], a.shape[1], b.shape[0]
        if mode == "trace":
            term = a.reshape(n, -1) @ b.reshape(m, -1).T
        elif mode == "diagonal":
            term = torch.bmm(a.reshape(n, o, -1).transpose(0, 1),
                             b.reshape(m, o, -1).permute(1, 2, 0)).permute(1, 2, 0)
        else:
            term = (a.reshape(n * o, -1) @ b.reshape(m * o, -1).T).view(n, o, m, o).permute(0, 2, 1, 3)
        out = term if out is None else out + term
    assert out is not None
    return out


def _finish(theta: Tensor, mode: str, o: int) -> Tensor:
    return (theta / o if mode == "trace" else theta).contiguous()


# ----------------------------------------------------------------------------- NTK
def empirical_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None = None, *, mode: str = "trace",
                  method: str = "auto", chunk_size: int | None = None) -> Tensor:
    """Empirical neural tangent kernel Θ(x1, x2) of ``model`` at its current parameters.

    Θ(x, x')[o, o'] = Σ_p ∂f_o(x)/∂θ_p · ∂f_o'(x')/∂θ_p over the parameters with
    ``requires_grad=True``; f(x) is the model applied to the single example x (outputs of shape
    (1, …) are flattened to O values).

    Args:
        model: any ``nn.Module`` mapping a batch (N, …) to a batch of outputs (N, …).
        x1: (N, …) inputs.  x2: (M, …) inputs, or None for x1 against itself.
        mode: ``"full"`` → (N, M, O, O); ``"diagonal"`` → (N, M, O), Θ[n, m, o, o];
            ``"trace"`` → (N, M), the mean over o of Θ[n, m, o, o].
        method: ``"jacobian"``, ``"ntk_vp"``, ``"structured"`` (MLPs only) or ``"auto"``:
            structured when the model is an MLP of dense layers and elementwise activations,
            else whichever of jacobian / ntk_vp the cost model estimates cheaper, from F, the
            FLOPs of one single-example forward (counted with ``FlopCounterMode``, at least
            2P), with E = N·M example pairs, κ = 9, μ = 100 and k = 2 in full mode, 1
            otherwise: jacobian ≈ (κ·(1 + 2O)·F + μ·O·P)·(N + M) + 2·E·O^k·P,
            ntk_vp ≈ κ·2·E·O·F·(1 + M/N) + μ·O·P·M for one tile (module docstring for
            tiles and x2=None); ntk_vp when strictly cheaper.  In practice: jacobian for
            trace/diagonal, O = 1 and convolutions; ntk_vp for full mode of dense models with
            O ≳ 4κ outputs.
        chunk_size: rows/columns per tile; None picks one from the memory budget.

    The model is not modified (parameters, buffers and train/eval mode stay as they were).
    Raises ValueError for mismatched inputs, an empty batch, a model without trainable
    parameters, or ``method="structured"`` on a model it does not support.
    """
    _check_mode(mode)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    _check_chunk(chunk_size)
    _check_batches(x1, x2)
    _check_model(model, x1)
    params, consts = _split_state(model)
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters "
                         f"(none with requires_grad=True), so its NTK is identically zero")

    layers = _structured.parse(model)
    if layers is not None and x1.dim() != 2 and not _structured.flattens_input(layers):
        layers = None  # dense layers act on the last axis only: not the MLP formula
    if method == "structured" and layers is None:
        reason = (_structured.unsupported_reason(model)
                  or f"the inputs are {x1.dim()}-D, not (N, features), and the model does not "
                     f"start with nn.Flatten")
        raise ValueError(f"method='structured' is the MLP formula and does not support this model: "
                         f"{reason}; use method='auto' (picks jacobian or ntk_vp), 'jacobian' or "
                         f"'ntk_vp' for convolutional and other models")
    if method == "auto" and layers is not None:
        method = "structured"
    if method == "structured":
        d = math.prod(x1.shape[1:])
        if _structured.in_features(layers) != d:
            raise ValueError(f"inputs have {d} features (per-example shape {tuple(x1.shape[1:])}) "
                             f"but the model's first dense layer expects {_structured.in_features(layers)}")

    if method == "structured":
        return _ntk_structured(layers, x1, x2, mode, chunk_size)

    def f_batch(p: dict[str, Tensor], x: Tensor) -> Tensor:
        y = functional_call(model, (p, consts), (x,))
        return y.reshape(x.shape[0], -1)

    _check_per_example(lambda x: functional_call(model, (params, consts), (x,)), x1)

    # the FLOP count for "auto" rides on the single-example forward that finds O
    counter = FlopCounterMode(display=False) if method == "auto" else None
    with counter if counter is not None else contextlib.nullcontext():
        o = _out_dim(lambda x: f_batch(params, x), x1)
    n_params = sum(p.numel() for p in params.values())
    itemsize = x1.element_size()
    m_cols = (x2 if x2 is not None else x1).shape[0]
    # the Jacobian itself plus the O-fold batched backward pass that produces it
    jac_plan = _plan(1.5 * o * n_params * itemsize, x1.shape[0], m_cols, x1.device, chunk_size)
    # ntk_vp: a tile of M columns needs M·O parameter tangents at once
    vp_plan = _plan(2.0 * o * n_params * itemsize, x1.shape[0], m_cols, x1.device, chunk_size)
    if method == "auto":
        costs = _method_costs(x1.shape[0], m_cols, x2 is None, o, n_params,
                              _forward_flops(counter, n_params), mode, jac_plan, vp_plan)
        method = _choose_method(costs)
    if method == "jacobian":
        def f_single(p: dict[str, Tensor], x: Tensor) -> Tensor:
            return f_batch(p, x.unsqueeze(0))[0]

        jac = vmap(jacrev(f_single), in_dims=(None, 0))
        chunk, cache = jac_plan
        theta = _tiled(x1, x2, chunk, _tail(mode, o), lambda x: jac(params, x),
                       lambda a, b: _contract_jacobians(a, b, mode), mode, cache)
        return _finish(theta, mode, o)

    chunk, _ = vp_plan

    def pair(xa: Tensor, xb: Tensor) -> Tensor:
        return _ntk_vp_block(f_batch, params, xa, xb, mode)

    theta = _tiled(x1, x2, chunk, _tail(mode, o), lambda x: x, pair, mode)
    return _finish(theta, mode, o)


def _ntk_vp_block(f_batch: Callable, params: dict[str, Tensor], xa: Tensor, xb: Tensor,
                  mode: str) -> Tensor:
    """Θ(xa, xb) column by column: for each output (m, o') of f(xb), the parameter tangent
    v = J_b[m, o']ᵀ (a vjp), then J_a v (a jvp) gives Θ[:, m, :, o']."""
    fb, pullback = vjp(lambda p: f_batch(p, xb), params)
    m, o = fb.shape
    cotangents = torch.eye(m * o, dtype=fb.dtype, device=fb.device).view(m * o, m, o)
    tangents = vmap(pullback)(cotangents)[0]

    def push(t: dict[str, Tensor]) -> Tensor:
        return jvp(lambda p: f_batch(p, xa), (params,), (t,))[1]

    cols = vmap(push)(tangents)                      # (M·O', N, O)
    n = cols.shape[1]
    full = cols.view(m, o, n, o).permute(2, 0, 3, 1)  # (N, M, O, O')
    if mode == "full":
        return full
    diag = full.diagonal(dim1=2, dim2=3)             # (N, M, O)
    return diag if mode == "diagonal" else diag.sum(-1)


def _ntk_structured(layers: list, x1: Tensor, x2: Tensor | None, mode: str,
                    chunk_size: int | None) -> Tensor:
    o = _structured.n_outputs(layers)
    dense = [l for l in layers if l.kind == "dense"]
    # per example: every layer input and every G (O × width) kept for the tile
    per_example = x1.element_size() * (o * sum(l.module.weight.shape[0] for l in dense)
                                       + sum(l.module.weight.shape[1] for l in dense))
    if mode == "full":
        per_example += x1.element_size() * o * o * 64  # the S = G G'ᵀ block against ≤64 columns
    chunk, cache = _plan(2.0 * per_example, x1.shape[0], (x2 if x2 is not None else x1).shape[0],
                         x1.device, chunk_size)
    theta = _tiled(x1, x2, chunk, _tail(mode, o), lambda x: _structured.features(layers, x),
                   lambda a, b: _structured.contract(a, b, mode), mode, cache)
    return _finish(theta, mode, o)


# ----------------------------------------------------------------------------- NNGP
def _outer_mean(f1: Tensor, f2: Tensor, mode: str) -> Tensor:
    """Σ_s f1[s, n, o] f2[s, m, o'] (summed over samples s; caller divides)."""
    s, n, o = f1.shape
    m = f2.shape[1]
    if mode == "trace":
        return f1.permute(1, 0, 2).reshape(n, s * o) @ f2.permute(1, 0, 2).reshape(m, s * o).T
    if mode == "diagonal":
        return torch.bmm(f1.permute(2, 1, 0), f2.permute(2, 0, 1)).permute(1, 2, 0)
    a = f1.permute(1, 2, 0).reshape(n * o, s)
    b = f2.permute(1, 2, 0).reshape(m * o, s)
    return (a @ b.T).view(n, o, m, o).permute(0, 2, 1, 3)


def empirical_nngp(model, x1: Tensor, x2: Tensor | None = None, *, mode: str = "trace",
                   chunk_size: int | None = None, width: int | Sequence[int] | None = None,
                   out_features: int = 1, n_samples: int = 64, seed: int = 0) -> Tensor:
    """Empirical NNGP: the second moment of the outputs, K(x, x')[o, o'] = E[f_o(x) f_o'(x')].

    - ``model`` an ``nn.Module``: the single draw f(x1) f(x2)ᵀ at its current parameters.
    - ``model`` a ``wideNN.Architecture`` or a composed description (anything with
      ``.build``): the Monte-Carlo estimate K ≈ (1/S) Σ_s f_s(x1) f_s(x2)ᵀ over S =
      ``n_samples`` networks ``arch.build(d, width, out_features, seed=seed + s)`` (inputs
      (N, d)) or ``arch.build(in_shape=x1.shape[1:], width=width, out_features=out_features,
      seed=seed + s)`` (inputs (N, C, L) / (N, C, H, W)), evaluated together with
      ``torch.func.stack_module_state`` + ``vmap`` (in groups that fit the memory budget).
      The prior mean is zero, so the outputs are not centred.  Its error against the analytic
      NNGP shrinks like 1/√(S·O) (plus an O(1/width) bias for depth ≥ 2).

    Modes as in ``empirical_ntk``: ``"full"`` (N, M, O, O), ``"diagonal"`` (N, M, O),
    ``"trace"`` (N, M) = mean over outputs.  ``chunk_size`` tiles the forward passes over examples.
    """
    _check_mode(mode)
    _check_chunk(chunk_size)
    _check_batches(x1, x2)
    if not isinstance(model, nn.Module) and callable(getattr(model, "build", None)):
        return _nngp_monte_carlo(model, x1, x2, mode, chunk_size, width, out_features, n_samples, seed)
    if width is not None:
        raise ValueError("width/out_features/n_samples/seed apply only when model is an Architecture "
                         "or a composed description (something with .build)")
    _check_model(model, x1)
    params, consts = _split_state(model)

    def f(x: Tensor) -> Tensor:
        return functional_call(model, (params, consts), (x,)).reshape(x.shape[0], -1)

    def outputs(x: Tensor) -> Tensor:
        step = chunk_size or x.shape[0]
        return torch.cat([f(x[i:i + step]) for i in range(0, x.shape[0], step)])[None]

    _check_per_example(lambda x: functional_call(model, (params, consts), (x,)), x1)
    _out_dim(f, x1)
    f1 = outputs(x1)
    f2 = f1 if x2 is None else outputs(x2)
    return _finish(_outer_mean(f1, f2, mode), mode, f1.shape[-1])


def _activation_numel(model: nn.Module, x: Tensor) -> int:
    """Numbers the leaf modules of ``model`` produce for the single example x (at least the
    output): the activation memory a forward pass needs per example, whatever the layers."""
    total = [0]

    def hook(_m, _inp, out):
        if isinstance(out, Tensor):
            total[0] += out.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            y = _guarded(model, x)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], y.numel())


def _guarded(model: nn.Module, x: Tensor) -> Tensor:
    return apply_model(model, x, f"the network built for inputs of per-example shape "
                                 f"{tuple(x.shape[1:])} cannot be applied to them")


def _nngp_monte_carlo(arch, x1: Tensor, x2: Tensor | None, mode: str, chunk_size: int | None,
                      width, out_features: int, n_samples: int, seed: int) -> Tensor:
    if width is None:
        raise ValueError("empirical_nngp of an Architecture needs width=")
    from .architecture import Architecture  # architecture imports networks; keep import light

    n_samples = check_int("n_samples", n_samples)
    seed = check_seed("seed", seed)
    check_seed("seed + n_samples - 1", seed + n_samples - 1)  # network s is built with seed + s
    xs = x1 if x2 is None else torch.cat([x1, x2])
    n = x1.shape[0]
    if isinstance(arch, Architecture) and x1.dim() == 2:
        build = lambda s: arch.build(x1.shape[1], width, out_features, seed=seed + s,  # noqa: E731
                                     dtype=x1.dtype, device=x1.device)
    else:
        build = lambda s: arch.build(in_shape=tuple(x1.shape[1:]), width=width,  # noqa: E731
                                     out_features=out_features, seed=seed + s, dtype=x1.dtype,
                                     device=x1.device)
    probe = build(0)
    n_params = sum(p.numel() for p in probe.parameters())
    # per network in a group: its parameters and the activations of a chunk of inputs
    step = chunk_size or xs.shape[0]
    per_net = x1.element_size() * (n_params + step * _activation_numel(probe, x1[:1]))
    group = int(max(1, min(n_samples, _memory_budget(x1.device) // (2.0 * per_net))))
    base = copy.deepcopy(probe).to("meta")
    total: Tensor | None = None
    for g0 in range(0, n_samples, group):
        nets = [probe if s == 0 else build(s) for s in range(g0, min(n_samples, g0 + group))]
        p, b = stack_module_state(nets)
        call = vmap(lambda pp, bb, x: functional_call(base, (pp, bb), (x,)), in_dims=(0, 0, None))
        with torch.no_grad():
            out = torch.cat([call(p, b, xs[i:i + step]) for i in range(0, xs.shape[0], step)], dim=1)
        f1 = out[:, :n]
        f2 = f1 if x2 is None else out[:, n:]
        part = _outer_mean(f1, f2, mode)
        total = part if total is None else total + part
        del nets, p, b, out
    assert total is not None
    return _finish(total / n_samples, mode, out_features)
