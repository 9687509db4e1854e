"""Experiment grids over the ranks of a ``torchrun`` launch.

``torchrun --nproc-per-node=K -m wideNN run CONFIG`` starts K copies of the run.  Every rank
runs the experiment's code; the cells an experiment hands to ``ctx.grid({key: fn, ...})``
(widths × seeds × hyperparameters: independent computations) are split round-robin over the
ranks, each rank computes only its share, and the values are gathered so that every rank
continues with all of them, exactly as a single process would.  Rank 0 alone writes the output
folder (results.json, config.yaml, table, figures); the other ranks only read it.

Resumable as a single-process run: cells already in results.json are skipped, and each rank
also writes the cells it has finished to ``OUT/.grid/rank<R>.json`` (atomically, after every
cell), so the cells of a launch that died before the gather are merged on the next run instead
of recomputed.  Without a launch (or with one rank) ``ctx.grid`` is the plain loop of
``ctx.cached`` calls, so both give the same results.json.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .._io import atomic_write_bytes
from .results import to_jsonable

if TYPE_CHECKING:
    import torch

    from wideNN.distributed import Group

    from .context import Context

__all__ = ["launch_group", "finish", "run_cells", "SHARD_DIR"]

SHARD_DIR = ".grid"


def launch_group(device: "torch.device") -> "Group | None":
    """The process group of a ``torchrun`` launch with more than one rank (initialised here:
    gloo on CPU, NCCL for CUDA devices), or None for a plain run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    from wideNN.distributed import current_group
    global _OWNED
    _OWNED = not dist.is_initialized()
    return current_group(device)


_OWNED = False     # whether launch_group initialised the process group (finish then leaves it)


def finish(group: "Group | None") -> None:
    """Leave the process group at the end of a launched run, if ``launch_group`` joined it (a
    group the caller initialised is left to the caller)."""
    global _OWNED
    if group is not None and _OWNED:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
        _OWNED = False


def _read_shards(out: Path, keys: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted((out / SHARD_DIR).glob("rank*.json")):
        try:
            found.update({k: v for k, v in json.loads(path.read_text()).items() if k in keys})
        except (OSError, ValueError):
            continue          # a shard is written atomically; an unreadable one is not ours
    return found


def run_cells(ctx: "Context", cells: Mapping[str, Callable[[], Any]], desc: str | None = None) -> dict[str, Any]:
    """``{key: value}`` for every cell, each value the stored (JSON) form of ``fn()``; computed
    only where results.json lacks it, split over the ranks of ``ctx.group`` when there is one."""
    group = getattr(ctx, "group", None)
    if group is None or not group.distributed:
        return {k: ctx.cached(k, fn) for k, fn in ctx.progress(list(cells.items()), desc=desc)}
    # rank 0 decides what is left (results.json + shards of an earlier launch), everyone follows
    recovered = _read_shards(ctx.out_dir, cells) if group.rank == 0 else None
    recovered = group.broadcast_object(recovered, 0)
    for k, v in recovered.items():
        if not ctx.done(k):
            ctx.results[k] = v
    pending = group.broadcast_object([k for k in cells if not ctx.done(k)], 0)
    mine = pending[group.rank::group.world_size]
    shard = ctx.out_dir / SHARD_DIR / f"rank{group.rank}.json"
    local: dict[str, Any] = {}
    error = None
    try:
        shard.parent.mkdir(exist_ok=True)
        for k in ctx.progress(mine, desc=f"[rank {group.rank}] {desc or 'grid'}"):
            local[k] = to_jsonable(cells[k]())
            atomic_write_bytes(shard, json.dumps(local).encode())
            ctx.drop_checkpoints(k)                         # the cell is stored in the shard
    except Exception as e:  # noqa: BLE001 - every rank must learn that the grid failed
        error = e
    group.agree(error)
    merged: dict[str, Any] = {}
    for part in group.all_gather_object(local):
        merged.update(part)
    for k in cells:                                         # in the cells' (single-process) order
        if k in merged:
            ctx.results[k] = merged[k]
    ctx.flush()
    group.barrier()
    if group.rank == 0:                                     # merged into results.json: drop
        for path in (ctx.out_dir / SHARD_DIR).glob("rank*.json"):
            path.unlink(missing_ok=True)
    return {k: ctx.results[k] for k in cells}
