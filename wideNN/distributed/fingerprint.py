"""What a tiled kernel store was computed from: the kernel's description, the inputs, the dtype
and the tiling.  A store is reused only when its fingerprint equals the job's, so tiles of a
different kernel, different data or a different precision are never mixed into one matrix."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import Tensor

__all__ = ["describe_kernel", "tensor_digest", "make_fingerprint", "fingerprint_differences"]


def describe_kernel(kernel: Any, description: str | None = None) -> str:
    """A stable text naming the kernel: ``description`` if given, else ``repr`` of an object with
    ``.kernels`` (an ``Architecture`` or a composed network description lists every
    hyperparameter there), else ``module.qualname`` of a plain function.

    Raises ValueError when no stable text exists (a lambda, a closure, an object whose repr is a
    memory address): pass ``description=`` then, naming everything the kernel depends on.
    """
    if description is not None:
        if not isinstance(description, str) or not description:
            raise TypeError(f"description must be a non-empty string, got {description!r}")
        return description
    if hasattr(kernel, "kernels"):
        text = repr(kernel)
    elif callable(kernel):
        qual = getattr(kernel, "__qualname__", "")
        if not qual or "<lambda>" in qual or "<locals>" in qual:
            raise ValueError(f"kernel {kernel!r} has no stable name (a lambda or a closure): pass "
                             f"description='...' naming the kernel and all its hyperparameters")
        text = f"{kernel.__module__}.{qual}"
    else:
        raise TypeError(f"kernel must have a .kernels(x1, x2=None, diag=False) method or be callable "
                        f"as kernel(x1, x2), got {type(kernel).__name__}")
    if " at 0x" in text:
        raise ValueError(f"the repr of {type(kernel).__name__} is a memory address ({text}); pass "
                         f"description='...' naming the kernel and all its hyperparameters")
    return text


def tensor_digest(x: Tensor | None, chunk_rows: int = 4096) -> dict | None:
    """SHA-256 of the tensor's values (row chunks, C order) with its shape and dtype."""
    if x is None:
        return None
    h = hashlib.sha256()
    flat = x.detach().reshape(x.shape[0], -1) if x.dim() > 0 else x.detach().reshape(1, 1)
    for start in range(0, flat.shape[0], chunk_rows):
        block = flat[start:start + chunk_rows].cpu().contiguous()
        h.update(block.numpy().tobytes() if block.dtype != torch.bfloat16 else block.float().numpy().tobytes())
    return {"sha256": h.hexdigest(), "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}


def make_fingerprint(description: str, x1: Tensor, x2: Tensor | None, dtype: torch.dtype,
                     components: tuple[str, ...], plan: dict) -> dict:
    """The JSON-able record a store is checked against (see the module docstring)."""
    return {"kernel": description, "x1": tensor_digest(x1), "x2": tensor_digest(x2),
            "dtype": str(dtype).replace("torch.", ""), "components": list(components), "plan": plan}


def fingerprint_hash(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def fingerprint_differences(stored: dict, wanted: dict) -> list[str]:
    """Human-readable list of the fields that differ (empty when they agree)."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if a != b:
            out.append(f"{key}: store has {_short(a)}, this job has {_short(b)}")
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else repr(v)
    return text if len(text) < 160 else text[:157] + "..."

