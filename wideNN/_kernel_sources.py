"""Adapters that give a predictor the kernel blocks it needs from any description of a kernel.

A source answers ``pair(x1, x2, nngp, ntk)`` → (K or None, Θ or None) between example batches
(only the first dimension is the example dimension; x2=None is x1 with itself) and
``nngp_diag(x)``.  Sources: an ``Architecture`` (tiled analytic kernels), any object with a
``.kernels(x1, x2=None, diag=False)`` method returning (nngp, ntk), a GPyTorch kernel (one
kernel), or a function ``fn(x1, x2=None)`` returning (nngp, ntk) or one matrix.  A single kernel
plays the role of the kernel the predictor trains with (K for ``kernel="nngp"``, Θ for
``"ntk"``); asking it for the other one raises.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .architecture import Architecture

_DIAG_ROWS = 512  # rows per block when a diagonal has to come from full blocks


class KernelSource:
    def pair(self, x1: Tensor, x2: Tensor | None, nngp: bool, ntk: bool) -> tuple[Tensor | None, Tensor | None]:
        raise NotImplementedError

    def nngp_diag(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class ArchitectureSource(KernelSource):
    """An ``Architecture``'s analytic kernels with a fixed tile size and hidden widths."""

    def __init__(self, arch: Architecture, widths=None, block_size: int | None = None):
        self.arch, self.widths = arch, widths
        self.kw = {} if block_size is None else {"block_size": int(block_size)}

    def pair(self, x1, x2, nngp, ntk):
        if nngp and ntk:
            return self.arch.kernels(x1, x2, widths=self.widths, **self.kw)
        if nngp:
            return self.arch.nngp(x1, x2, **self.kw), None
        return None, self.arch.ntk(x1, x2, widths=self.widths, **self.kw)

    def nngp_diag(self, x):
        return self.arch.nngp(x, diag=True)


class MethodSource(KernelSource):
    """Any object with ``.kernels(x1, x2=None, diag=False)`` → (nngp, ntk), e.g. a composed
    layer description with image inputs (N, C, H, W)."""

    def __init__(self, obj: Any):
        self.obj = obj

    def pair(self, x1, x2, nngp, ntk):
        if nngp and not ntk and hasattr(self.obj, "nngp"):
            return self.obj.nngp(x1, x2), None
        k, th = self.obj.kernels(x1, x2)
        return (k if nngp else None), (th if ntk else None)

    def nngp_diag(self, x):
        if hasattr(self.obj, "nngp"):
            return self.obj.nngp(x, diag=True)
        return self.obj.kernels(x, diag=True)[0]


class FunctionSource(KernelSource):
    """``fn(x1, x2)`` returning (nngp, ntk) or one matrix (the role ``single`` names); x2 is
    None for x1 with itself, the library's convention (symmetric code paths are more exact on
    the diagonal, e.g. arc-cosine kernels at correlation 1)."""

    def __init__(self, fn: Callable, single: str, diag_fn: Callable | None = None):
        self.fn, self.single, self.diag_fn = fn, single, diag_fn

    def _call(self, x1, x2):
        out = self.fn(x1, x2)
        if isinstance(out, Tensor):
            out = (out, None) if self.single == "nngp" else (None, out)
        elif not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"the kernel function must return a tensor or a pair (nngp, ntk), got "
                            f"{type(out).__name__}")
        want = (x1.shape[0], (x1 if x2 is None else x2).shape[0])
        for name, m in zip(("NNGP", "NTK"), out):
            # a user function's matrix of the wrong shape would fail later inside a solve
            if m is not None and (not isinstance(m, Tensor) or tuple(m.shape) != want):
                got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"the kernel function returned a {name} of shape {got} for inputs of "
                                 f"{want[0]} and {want[1]} examples; expected {want}")
        return tuple(out)

    def pair(self, x1, x2, nngp, ntk):
        k, th = self._call(x1, x2)
        for want, got, name in ((nngp, k, "NNGP"), (ntk, th, "NTK")):
            if want and got is None:
                raise ValueError(f"the kernel gives a single matrix, used as the {self.single.upper()}; "
                                 f"this prediction also needs the {name} (pass a function returning "
                                 f"(nngp, ntk), or compute_variance=False for the NTK mean)")
        return (k if nngp else None), (th if ntk else None)

    def nngp_diag(self, x):
        if self.diag_fn is not None and self.single == "nngp":
            return self.diag_fn(x)
        parts = [self.pair(x[i:i + _DIAG_ROWS], None, True, False)[0].diagonal()
                 for i in range(0, x.shape[0], _DIAG_ROWS)]
        return torch.cat(parts)


def _is_gpytorch_kernel(obj: Any) -> bool:
    try:
        import gpytorch
    except ImportError:  # pragma: no cover - gpytorch is a dependency
        return False
    return isinstance(obj, gpytorch.kernels.Kernel)


def as_source(kernels: Any, single: str, *, widths=None, block_size: int | None = None) -> KernelSource:
    """The adapter for ``kernels`` (see the module docstring)."""
    if isinstance(kernels, KernelSource):
        return kernels
    if isinstance(kernels, Architecture):
        return ArchitectureSource(kernels, widths, block_size)
    if _is_gpytorch_kernel(kernels):
        def dense(a, b):
            return kernels(a, a if b is None else b).to_dense()
        return FunctionSource(dense, single, lambda x: kernels(x, x, diag=True))
    if hasattr(kernels, "kernels") and callable(kernels.kernels):
        return MethodSource(kernels)
    if callable(kernels):
        return FunctionSource(kernels, single)
    raise TypeError(f"kernels must be an Architecture, an object with a .kernels(x1, x2, diag) method, "
                    f"a GPyTorch kernel or a function (x1, x2) -> kernel(s); got {type(kernels).__name__}")
