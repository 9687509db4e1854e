"""``kernel``: a distributed, resumable kernel computation into a ``TiledStore``.

Any kernel the library computes can be tiled: an object with ``.kernels(x1, x2=None,
diag=False) -> (nngp, ntk)`` (an ``Architecture``, a composed network description on image
inputs (N, C, H, W): only dim 0 is examples), or a function ``f(x1, x2) -> Tensor | (nngp,
ntk)`` (e.g. an empirical NTK of a fixed network).  Ranks share the missing tiles round-robin;
each tile is written, checksummed, the moment it is finished, so a killed job restarts where it
stopped and a corrupted tile is recomputed.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

import torch
from torch import Tensor

from .._checks import check_finite, check_float_dtype, check_int
from .fingerprint import describe_kernel, fingerprint_hash, make_fingerprint
from .group import Group, current_group, progress
from .plan import TilePlan
from .store import TiledStore

__all__ = ["kernel", "KernelResult", "evaluate_tile", "check_kernel_inputs", "COMPONENTS"]

COMPONENTS = ("nngp", "ntk")


@dataclasses.dataclass
class KernelResult:
    """What a kernel job did.  ``computed``: tiles this rank computed; ``computed_total``: all
    ranks; ``reused``: tiles already valid in the store; ``seconds``: this rank's wall time."""

    store: TiledStore
    computed: list[tuple[int, int]]
    computed_total: int
    reused: int
    seconds: float
    rank: int
    world_size: int


def check_kernel_inputs(kern: Any, x1: Any, x2: Any, components: Sequence[str]) -> tuple[str, ...]:
    """TypeError / ValueError for unusable inputs; returns the components as a tuple."""
    if not (hasattr(kern, "kernels") or callable(kern)):
        raise TypeError(f"kernel must have .kernels(x1, x2=None, diag=False) or be a callable "
                        f"f(x1, x2), got {type(kern).__name__}")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None and name == "x2":
            continue
        if not isinstance(x, Tensor) or not torch.is_floating_point(x):
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (N, ...) with N ≥ 1 examples, got {tuple(x.shape)}")
        check_finite(name, x)
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 have different example shapes: {tuple(x1.shape[1:])} vs "
                         f"{tuple(x2.shape[1:])}")
    comps = (components,) if isinstance(components, str) else tuple(components)
    if not comps or any(c not in COMPONENTS for c in comps) or len(set(comps)) != len(comps):
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS}, got {components!r}")
    return comps


def evaluate_tile(kern: Any, a: Tensor, b: Tensor | None, components: tuple[str, ...]) -> dict[str, Tensor]:
    """The requested components of the kernel between row inputs ``a`` and column inputs ``b``
    (``b=None``: ``a`` with itself, the diagonal tile of a symmetric job)."""
    if hasattr(kern, "kernels"):
        if components == ("nngp",) and hasattr(kern, "nngp"):
            out = {"nngp": kern.nngp(a, b)}
        else:
            out = dict(zip(COMPONENTS, kern.kernels(a, b)))
    else:
        res = kern(a, b)
        if isinstance(res, Tensor):
            if len(components) != 1:
                raise ValueError(f"the kernel function returned one matrix but components={components}")
            out = {components[0]: res}
        else:
            out = dict(zip(COMPONENTS, res))
    shape = (a.shape[0], (a if b is None else b).shape[0])
    for c in components:
        if c not in out or tuple(out[c].shape) != shape:
            raise ValueError(f"the kernel returned {c} of shape "
                             f"{None if c not in out else tuple(out[c].shape)} for a {shape} tile")
    return {c: out[c] for c in components}


def _tile_inputs(x1: Tensor, x2: Tensor | None, plan: TilePlan, i: int, j: int, device, dtype):
    a = x1[plan.rows(i)].to(device=device, dtype=dtype)
    if plan.symmetric and i == j:
        return a, None
    b = (x1 if x2 is None else x2)[plan.cols(j)].to(device=device, dtype=dtype)
    return a, b


def default_tile_size(n_rows: int, n_cols: int) -> int:
    """2048 (a 32 MB float64 tile), smaller for small matrices so that there are tiles to share."""
    return max(1, min(2048, max(n_rows, n_cols)))


def kernel(kern: Any, x1: Tensor, x2: Tensor | None = None, *, store: str | os.PathLike,
           components: Sequence[str] = COMPONENTS, tile_size: int | None = None,
           dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
           description: str | None = None) -> KernelResult:
    """Compute the kernel between x1 (N, ...) and x2 (M, ...) (None: x1 with itself, upper
    triangle only) into the tiled store at ``store``, over the ranks of the current process
    group (one process: world size 1).  Call it on every rank with the same arguments.

    Tiles already in the store with valid checksums are kept; missing or corrupt ones are
    computed, each written atomically as soon as it is done.  ``description`` names a kernel
    whose repr is not a stable description (lambdas, closures).  Raises ValueError on every rank
    for mismatched arguments across ranks, fewer tiles than ranks or a store of another kernel /
    config (nothing is written then); FileNotFoundError / PermissionError for a missing parent or
    read-only store folder.
    """
    group = current_group(device)
    comps = check_kernel_inputs(kern, x1, x2, components)
    check_float_dtype(dtype)
    n, m = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    tile_size = default_tile_size(n, m) if tile_size is None else check_int("tile_size", tile_size)
    plan = TilePlan(n, m, tile_size, symmetric=x2 is None)
    fp = make_fingerprint(describe_kernel(kern, description), x1, x2, dtype, comps, plan.to_dict())
    group.same_on_all_ranks("kernel job arguments (fingerprint of kernel, inputs, dtype, tiling)",
                            fingerprint_hash(fp))
    plan.check_world_size(group.world_size)
    st = _open_store(group, store, fp, plan, comps, dtype)
    return _run(group, kern, x1, x2, st, comps, dtype)


def _open_store(group: Group, path, fp, plan, comps, dtype) -> TiledStore:
    err, st = None, None
    if group.rank == 0:
        try:
            st = TiledStore.create(path, fp, plan, comps, dtype)
        except (OSError, ValueError) as e:
            err = e
    group.agree(err)
    return st if st is not None else TiledStore.open(path)


def _run(group: Group, kern, x1, x2, st: TiledStore, comps, dtype) -> KernelResult:
    t0 = time.perf_counter()
    plan = st.plan
    every = plan.tiles()
    # each rank verifies a share of the checksums; the union is the work left
    bad_parts = group.all_gather_object(st.missing(every[group.rank::group.world_size]))
    missing = sorted(t for part in bad_parts for t in part)
    mine = plan.assign(missing, group.rank, group.world_size)
    err = None
    try:
        with progress(len(mine), "kernel tiles", group) as bar:
            for i, j in mine:
                a, b = _tile_inputs(x1, x2, plan, i, j, group.device, dtype)
                with torch.no_grad():
                    st.write_tile(i, j, evaluate_tile(kern, a, b, comps))
                bar.update()
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        err = e
    group.agree(err)
    if group.rank == 0:
        st.finalize()
    group.barrier()
    if group.rank != 0:
        st = TiledStore.open(st.path)          # the manifest rank 0 completed
    return KernelResult(store=st, computed=list(mine), computed_total=len(missing),
                        reused=len(every) - len(missing), seconds=time.perf_counter() - t0,
                        rank=group.rank, world_size=group.world_size)



