"""``predict``: test predictions K(x_test, X) α streamed tile by tile over the ranks.

The test×train kernel is never held whole: each rank computes (or reads from a tiled store) its
share of the test×train tiles and adds tile @ α[tile's columns] into its rows of the output,
and one all-reduce of the (N_test, O) output combines the ranks.  With ``store=`` the tiles are
kept on disk (resumable, reusable for more solutions); without, they are dropped after use.
The posterior variances need the training system as well: ``wideNN.distributed.posterior(...,
variance=True)`` (``wideNN.distributed.variance``).
"""
from __future__ import annotations

import os

from typing import Any

import torch
from torch import Tensor

from .._checks import check_finite, check_float_dtype, check_int
from .fingerprint import describe_kernel, fingerprint_hash, make_fingerprint, tensor_digest
from .group import current_group, progress
from .job import check_kernel_inputs, default_tile_size, evaluate_tile, kernel as kernel_job
from .plan import TilePlan

__all__ = ["predict"]


def predict(kern: Any, x_test: Tensor, x_train: Tensor, alpha: Tensor, *, component: str = "nngp",
            store: str | os.PathLike | None = None, tile_size: int | None = None,
            dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
            description: str | None = None) -> Tensor:
    """μ = K(x_test, x_train) α, shape (N_test, O) [(N_test,) for a 1-D α], on every rank.

    ``component``: "nngp" or "ntk" (the kernel the solution α belongs to).  ``store``: a folder
    for the test×train tiles (computed by the resumable kernel job first) or None to compute
    them on the fly.  Call on every rank with the same arguments.
    """
    group = current_group(device)
    comps = check_kernel_inputs(kern, x_test, x_train, (component,))
    check_float_dtype(dtype)
    if not isinstance(alpha, Tensor) or alpha.dim() not in (1, 2) or alpha.shape[0] != x_train.shape[0]:
        raise ValueError(f"alpha must have shape (N_train,) or (N_train, O) with N_train = "
                         f"{x_train.shape[0]}, got {getattr(alpha, 'shape', type(alpha).__name__)}")
    check_finite("alpha", alpha)
    a2 = (alpha if alpha.dim() == 2 else alpha.unsqueeze(1)).to(device=group.device, dtype=torch.float64)
    n, m = x_test.shape[0], x_train.shape[0]
    tile_size = default_tile_size(n, m) if tile_size is None else check_int("tile_size", tile_size)
    plan = TilePlan(n, m, tile_size, symmetric=False)
    if store is not None:
        st = kernel_job(kern, x_test, x_train, store=store, components=comps, tile_size=tile_size,
                        dtype=dtype, device=device, description=description).store
    else:
        fp = make_fingerprint(describe_kernel(kern, description), x_test, x_train, dtype, comps,
                              plan.to_dict())
        group.same_on_all_ranks("predict arguments", (fingerprint_hash(fp), tensor_digest(a2)))
        plan.check_world_size(group.world_size)
        st = None
    out = torch.zeros(n, a2.shape[1], dtype=torch.float64, device=group.device)
    mine = plan.assign(plan.tiles(), group.rank, group.world_size)
    err = None
    try:
        _stream(group, kern, x_test, x_train, a2, plan, mine, st, component, comps, dtype, out)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        err = e
    group.agree(err)
    group.all_reduce_(out)
    return out if alpha.dim() == 2 else out.squeeze(1)


def _stream(group, kern, x_test, x_train, a2, plan, mine, st, component, comps, dtype, out) -> None:
    """Add this rank's tiles' contributions tile @ α[cols] into ``out`` (its rows)."""
    with progress(len(mine), "prediction tiles", group) as bar:
        for i, j in mine:
            if st is not None:
                tile = st.read_tile(component, i, j).to(group.device)
            else:
                a = x_test[plan.rows(i)].to(device=group.device, dtype=dtype)
                b = x_train[plan.cols(j)].to(device=group.device, dtype=dtype)
                with torch.no_grad():
                    tile = evaluate_tile(kern, a, b, comps)[component]
            out[plan.rows(i)] += tile.to(torch.float64) @ a2[plan.cols(j)]
            bar.update()



