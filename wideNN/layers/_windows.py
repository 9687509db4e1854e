"""Sliding-window bookkeeping shared by ``Conv`` and ``AvgPool``: sizes, strides, padding.

Padding as in neural-tangents' stax (and TensorFlow): ``"valid"`` none, output
⌊(S − k)/s⌋ + 1; ``"same"`` zeros, output ⌈S/s⌉, total padding max((out − 1)·s + k − S, 0) split
with the extra position at the end; ``"circular"`` the same amounts, wrapped around.
"""
from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from .base import LayerError

PADDINGS = ("same", "valid", "circular")


def as_tuple(name: str, value, d: int, label: str) -> tuple[int, ...]:
    """An int or a d-tuple of positive ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != d:
            raise LayerError(f"{label}: {name} {tuple(value)} has {len(value)} entries but the input "
                             f"has {d} spatial dimension(s)")
        return tuple(check_int(f"{label} {name}", v) for v in value)
    return (check_int(f"{label} {name}", value),) * d


def check_window_arg(name: str, value) -> None:
    """Early type/range check of kernel_size/stride (int or tuple of ints), before shapes are known."""
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
        check_int(name, v)


def check_padding(owner: str, padding) -> str:
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"{owner} padding must be one of {PADDINGS}, got {padding!r}")
    return padding.lower()


@dataclasses.dataclass(frozen=True)
class Window:
    """A resolved window over d spatial dims: sizes k, strides s, padding (lo, hi) per dim."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    padding: str

    @property
    def size(self) -> int:
        n = 1
        for k in self.kernel:
            n *= k
        return n

    def pad(self, x: Tensor, dims: int | None = None) -> Tensor:
        """Pad the last ``dims`` (default: all d) dims of x; for a full-layout plane pass the
        same (lo, hi) for both dims of the plane (see ``plane_pad``)."""
        if self.padding == "valid" or not any(lo or hi for lo, hi in self.pads):
            return x
        flat = [p for lo_hi in reversed(self.pads) for p in lo_hi]
        return F.pad(x, flat, mode="circular" if self.padding == "circular" else "constant")

    def plane_pad(self, x: Tensor, dim: int) -> Tensor:
        """Pad both axes of a (…, S, S') plane of spatial dim ``dim``."""
        lo, hi = self.pads[dim]
        if self.padding == "valid" or not (lo or hi):
            return x
        return F.pad(x, (lo, hi, lo, hi), mode="circular" if self.padding == "circular" else "constant")


def resolve_window(kind: str, label: str, spatial: tuple[int, ...], kernel_size, stride,
                   padding: str) -> tuple[Window, tuple[int, ...]]:
    """The window and the output spatial shape, with errors naming the layer and the shapes."""
    d = len(spatial)
    k = as_tuple("kernel_size", kernel_size, d, label)
    s = as_tuple("stride", stride, d, label)
    out, pads = [], []
    for i, (n, kk, ss) in enumerate(zip(spatial, k, s)):
        if padding == "valid":
            if kk > n:
                raise LayerError(f"{label}: {kind} window {k} is larger than the input's spatial "
                                 f"shape {spatial} with padding='valid'")
            out.append((n - kk) // ss + 1)
            pads.append((0, 0))
            continue
        if ss > n:
            raise LayerError(f"{label}: {kind} stride {s} is larger than the input's spatial shape {spatial}")
        o = -(-n // ss)
        total = max((o - 1) * ss + kk - n, 0)
        lo, hi = total // 2, total - total // 2
        if padding == "circular" and max(lo, hi) > n:
            raise LayerError(f"{label}: {kind} window {k} wraps more than once around the input's "
                             f"spatial shape {spatial} with padding='circular'")
        out.append(o)
        pads.append((lo, hi))
    return Window(k, s, tuple(pads), padding), tuple(out)
