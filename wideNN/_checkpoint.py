"""Checkpoints of long loops (hyperparameter fits, training), so that an interrupted call resumes.

A checkpoint is one ``torch.save`` file written atomically (temporary file + ``os.replace``),
so a kill at any moment leaves either the previous checkpoint or the new one. It carries a
fingerprint of everything that determines the loop's result (inputs, options, starting
parameters); a file with another fingerprint is refused instead of silently mixing two runs.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def fingerprint(*parts: Any) -> str:
    """A SHA-256 over ``parts``: tensors by dtype, shape and bytes; anything else by ``repr``."""
    h = hashlib.sha256()
    for part in parts:
        items = part if isinstance(part, (list, tuple)) else [part]
        for item in items:
            if isinstance(item, Tensor):
                t = item.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(item).encode())
            h.update(b"\0")
    return h.hexdigest()


def check_path(path: Any, name: str = "checkpoint") -> Path | None:
    """``None``, or the path as a ``Path`` whose folder exists (a clear error otherwise)."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path, got {type(path).__name__}")
    p = Path(path)
    if not p.parent.is_dir():
        raise ValueError(f"{name}: folder {str(p.parent)!r} does not exist")
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a folder, not a file")
    return p


def save(path: Path, key: str, state: dict) -> None:
    """Write ``{"fingerprint": key, **state}`` to ``path`` atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mask = os.umask(0o22)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            torch.save({"fingerprint": key, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path | None, key: str) -> dict | None:
    """The state saved at ``path`` for fingerprint ``key``; ``None`` when there is no file.

    A file of another run (different fingerprint) or an unreadable one raises ``ValueError``.
    """
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {str(path)!r} is unreadable ({type(e).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("fingerprint") != key:
        raise ValueError(f"checkpoint {str(path)!r} belongs to another run (different inputs, options or "
                         f"starting parameters); delete it or pass another path")
    return state


#: besides every ``checkpoint_every`` steps, a checkpoint is written once this many seconds have
#: passed since the last one (and at least 20 write-durations, so writing costs ≤ 5 % of the
#: time): a run preempted every few seconds still advances between preemptions
MIN_SECONDS = 2.0


class Schedule:
    """When a loop starting at step ``start`` writes its next checkpoint: every ``every`` steps,
    or after ``MIN_SECONDS`` (at least 20× the last write's duration) of wall time."""

    def __init__(self, every: int, start: int) -> None:
        self.every, self.start = every, start
        self.last = time.monotonic()
        self.cost = 0.0

    def due(self, step: int) -> bool:
        if step <= self.start:
            return False
        return step % self.every == 0 or time.monotonic() - self.last >= max(MIN_SECONDS, 20 * self.cost)

    def write(self, path: Path, key: str, state: dict) -> None:
        began = time.monotonic()
        save(path, key, state)
        self.last = time.monotonic()
        self.cost = self.last - began
