"""Sliding-window bookkeeping shared by ``Conv`` and ``AvgPool``: sizes, strides, padding.

Padding as in neural-tangents' stax (and TensorFlow): ``"valid"`` none, output
⌊(S − k)/s⌋ + 1 (positions past the last full window are dropped, as torch and stax do); ``"same"`` zeros, output ⌈S/s⌉, total padding max((out − 1)·s + k − S, 0) split
with the extra position at the end; ``"circular"`` the same amounts, wrapped around.

The same windows act on covariance tensors (``conv_full``, ``conv_diagonal``, ``pool_full``): a
window over positions becomes a sum of k shifted, strided slices of the padded covariance — a
loop over the k filter taps, never over positions.  (A one-channel ``conv2d`` with a diagonal
k×k filter computes the same full-layout convolution but measured 20× slower on the CPU, and
needs the (S, S') plane moved to the last dims first.)
"""
from __future__ import annotations

import dataclasses
import functools

import torch
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

    def pad(self, x: Tensor) -> Tensor:
        """Pad the d spatial (last) dims of an activation tensor (N, C, *S) of the finite network."""
        if self.padding == "valid" or not any(lo or hi for lo, hi in self.pads):
            return x
        flat = [p for lo_hi in reversed(self.pads) for p in lo_hi]
        return F.pad(x, flat, mode="circular" if self.padding == "circular" else "constant")


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
                raise LayerError(f"{label}: {kind} kernel_size {k} is larger than the input's spatial "
                                 f"shape {spatial} with padding='valid'")
            out.append((n - kk) // ss + 1)
            pads.append((0, 0))
            continue
        if ss > n:
            raise LayerError(f"{label}: {kind} stride {s} is larger than the input's spatial shape {spatial}")
        if padding == "same" and kk > 2 * n - 1:
            # taps beyond n − 1 positions either side only ever see the zero padding
            raise LayerError(f"{label}: {kind} kernel_size {k} is larger than 2·{n} − 1 for the input's "
                             f"spatial shape {spatial}: its outer taps would only see padding")
        o = -(-n // ss)
        total = max((o - 1) * ss + kk - n, 0)
        lo, hi = total // 2, total - total // 2
        if padding == "circular" and max(lo, hi) > n:
            raise LayerError(f"{label}: {kind} kernel_size {k} wraps more than once around the input's "
                             f"spatial shape {spatial} with padding='circular'")
        out.append(o)
        pads.append((lo, hi))
    return Window(k, s, tuple(pads), padding), tuple(out)


def pad_dim(t: Tensor, dim: int, lo: int, hi: int, circular: bool) -> Tensor:
    """Pad one dim (any position) by lo/hi zeros, or wrapped copies."""
    if not (lo or hi):
        return t
    n = t.shape[dim]
    if circular:
        parts = [t.narrow(dim, n - lo, lo), t, t.narrow(dim, 0, hi)]
    else:
        parts = [t.new_zeros(t.shape[:dim] + (lo,) + t.shape[dim + 1:]), t,
                 t.new_zeros(t.shape[:dim] + (hi,) + t.shape[dim + 1:])]
    return torch.cat([p for p in parts if p.shape[dim]], dim=dim)


def _taps(t: Tensor, dims: tuple[int, ...], k: int, s: int, out: int, lo: int) -> Tensor:
    """Σ_{i<k} P[s·a + i] along all ``dims`` at once (the same i on each: a diagonal walk), with
    P = t preceded by ``lo`` implicit zeros (and zeros after it): each tap adds the slice of its
    valid range, so zero padding costs no copy.  Tap i = lo covers every output (see
    ``resolve_window``: lo < k), so it initialises the sum."""
    first, rest = _tap_slices(t.dim(), dims, t.shape[dims[0]], k, s, out, lo)
    acc = t[first].clone()
    for target, source in rest:
        acc[target].add_(t[source])
    return acc


@functools.lru_cache(maxsize=256)
def _tap_slices(ndim: int, dims: tuple[int, ...], n: int, k: int, s: int, out: int, lo: int):
    """The index tuples of ``_taps`` (built once per shape: every tile of a call reuses them)."""
    def sl(i: int, a0: int, a1: int, source: bool) -> tuple:
        idx = [slice(None)] * ndim
        for d in dims:
            idx[d] = slice(s * a0 + i - lo, s * (a1 - 1) + i - lo + 1, s) if source else slice(a0, a1)
        return tuple(idx)

    rest = []
    for i in range(k):
        if i == lo:
            continue
        a0 = max(0, -((i - lo) // s))                 # ⌈(lo − i)/s⌉
        a1 = min(out, (n - 1 + lo - i) // s + 1)
        if a1 > a0:
            rest.append((sl(i, a0, a1, False), sl(i, a0, a1, True)))
    return sl(lo, 0, out, True), tuple(rest)


def _pads(w: Window, j: int, t: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, int]:
    """Circular padding is materialised (wrapped copies); zero padding is left implicit."""
    lo, hi = w.pads[j]
    if w.padding != "circular":
        return t, lo
    for a in dims:
        t = pad_dim(t, a, lo, hi, True)
    return t, 0


def conv_full(w: Window, t: Tensor, out_spatial: tuple[int, ...]) -> Tensor:
    """Σ_i K[s·p + i, s·p' + i] on a full-layout (…, S1, S1', …, SD, SD') covariance (the
    filter sum; the convolution's kernel is this / k, scaled by the caller)."""
    d = len(w.kernel)
    lead = t.dim() - 2 * d
    for j in range(d):
        dims = (lead + 2 * j, lead + 2 * j + 1)
        t, lo = _pads(w, j, t, dims)
        t = _taps(t, dims, w.kernel[j], w.stride[j], out_spatial[j], lo)
    return t


def conv_diagonal(w: Window, t: Tensor, out_spatial: tuple[int, ...]) -> Tensor:
    """Σ_i K[s·p + i] on a diagonal-layout (…, S1, …, SD) covariance (a box filter; / k by the caller)."""
    d = len(w.kernel)
    lead = t.dim() - d
    for j in range(d):
        t, lo = _pads(w, j, t, (lead + j,))
        t = _taps(t, (lead + j,), w.kernel[j], w.stride[j], out_spatial[j], lo)
    return t


def pool_full(w: Window, t: Tensor, out_spatial: tuple[int, ...]) -> Tensor:
    """(1/k²) Σ_{i, j} K[s·p + i, s·p' + j] on a full-layout covariance: the window sum is
    separable, one dim of each (S, S') pair at a time."""
    d = len(w.kernel)
    lead = t.dim() - 2 * d
    for j in range(d):
        for a in (lead + 2 * j, lead + 2 * j + 1):
            t, lo = _pads(w, j, t, (a,))
            t = _taps(t, (a,), w.kernel[j], w.stride[j], out_spatial[j], lo).div_(w.kernel[j])
    return t
