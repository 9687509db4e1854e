"""The process group a distributed computation runs in: rank, world size, device, collectives.

Everything in ``wideNN.distributed`` runs unchanged in three settings:

* one plain process (no ``torch.distributed`` group): world size 1, collectives are no-ops;
* a ``torchrun`` launch (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the environment): the group
  is initialised on first use, gloo for CPU tensors, NCCL for CUDA (one device per rank,
  ``cuda:LOCAL_RANK``);
* a group the caller initialised itself (``torch.distributed.init_process_group``).

Errors are agreed on: a check that fails on one rank (a corrupt store, a mismatched config)
raises the same exception on every rank instead of leaving the others waiting in a collective.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

__all__ = ["Group", "current_group", "spawn", "progress", "free_port"]


@dataclasses.dataclass(frozen=True)
class Group:
    """Rank ``rank`` of ``world_size``; ``device`` is where this rank computes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors must live: the GPU for NCCL, the CPU for gloo."""
        if self.distributed and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")

    # -- collectives ----------------------------------------------------------------
    def _buffer(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` itself when the backend can use it; else a contiguous copy on the comm device
        (gloo reads a strided tensor's storage in memory order, not in index order)."""
        if t.device == self.comm_device and t.is_contiguous():
            return t
        return t.to(self.comm_device).contiguous()

    def all_reduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (returns it, on its original device)."""
        if not self.distributed:
            return t
        buf = self._buffer(t)
        dist.all_reduce(buf)
        if buf is not t:
            t.copy_(buf)
        return t

    def broadcast_(self, t: torch.Tensor, src: int) -> torch.Tensor:
        """Overwrite ``t`` on every rank with rank ``src``'s ``t``."""
        if not self.distributed:
            return t
        buf = self._buffer(t)
        dist.broadcast(buf, src)
        if buf is not t:
            t.copy_(buf)
        return t

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order ([obj] in a single process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing in a single process)."""
        if self.distributed:
            dist.barrier()

    def agree(self, error: BaseException | None) -> None:
        """Raise on every rank if any rank passes an error (the lowest rank's, with its rank)."""
        errors = self.all_gather_object(None if error is None else (type(error), str(error)))
        for r, e in enumerate(errors):
            if e is not None:
                kind, msg = e
                prefix = f"rank {r}: " if self.distributed else ""
                raise kind(prefix + msg)

    def same_on_all_ranks(self, what: str, value: Any) -> None:
        """ValueError on every rank unless ``value`` (e.g. a config fingerprint) agrees."""
        values = self.all_gather_object(value)
        bad = [r for r, v in enumerate(values) if v != values[0]]
        if bad:
            raise ValueError(f"ranks have mismatched {what}: rank 0 has {values[0]!r} but rank(s) "
                             f"{bad} have {[values[r] for r in bad]!r}; every rank must be launched "
                             f"with the same arguments")


def _init_from_env(device: torch.device | None) -> None:
    want_cuda = device is not None and torch.device(device).type == "cuda"
    backend = "nccl" if want_cuda else "gloo"
    if want_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)


def current_group(device: torch.device | str | None = None) -> Group:
    """The group this process belongs to (initialising it from a ``torchrun`` environment).

    ``device``: ``None``/"cpu" computes on the CPU; "cuda" means ``cuda:LOCAL_RANK`` (one GPU
    per rank); an explicit "cuda:N" is kept.
    """
    from .._checks import check_device
    device = check_device("device", device)
    if dist.is_available() and not dist.is_initialized() and "WORLD_SIZE" in os.environ \
            and int(os.environ["WORLD_SIZE"]) > 1 and "MASTER_ADDR" in os.environ:
        _init_from_env(torch.device(device) if device is not None else None)
    ws = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if ws > 1 else 0
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % max(1, torch.cuda.device_count()))
    return Group(rank=rank, world_size=ws, device=dev)


def progress(total: int, desc: str, group: Group):
    """A tqdm bar for this rank (one line per rank); silent with ``WIDENN_NO_PROGRESS=1``."""
    from tqdm.auto import tqdm
    disable = os.environ.get("WIDENN_NO_PROGRESS") == "1"
    return tqdm(total=total, desc=f"[rank {group.rank}/{group.world_size}] {desc}",
                position=group.rank, leave=False, disable=disable)


def free_port() -> int:
    """A TCP port that is free now (for a local rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned(rank: int, fn: Callable, world_size: int, port: int, backend: str, args: Sequence) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    try:
        fn(rank, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, *args: Any, backend: str = "gloo") -> None:
    """Run ``fn(rank, *args)`` in ``world_size`` fresh processes joined in one process group
    (``torch.multiprocessing.spawn`` with a local rendezvous on a free port; one OpenMP thread
    per worker unless ``OMP_NUM_THREADS`` says otherwise).  For tests and single-node use;
    ``torchrun`` is the launcher for anything larger.  Raises if any worker fails."""
    import torch.multiprocessing as mp

    from .._checks import check_int
    # before any process starts: a bad argument would otherwise surface in every child
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(rank, *args), got {type(fn).__name__}")
    world_size = check_int("world_size", world_size)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_spawned, args=(fn, world_size, free_port(), backend, tuple(args)),
             nprocs=world_size, join=True)
