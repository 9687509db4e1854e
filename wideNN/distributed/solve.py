"""``solve``: (K + σ²I) α = Y for a training kernel held in a ``TiledStore``, over the ranks.

Two methods, one answer:

* ``"cholesky"``: rank 0 gathers the whole matrix, factors it in place with escalating jitter
  (``wideNN.linalg.cholesky``, the single-process path) and broadcasts α.  Exact; needs one
  N×N matrix in one process (8N² bytes in float64).
* ``"pcg"``: every rank holds its contiguous block of rows of K (N/W × N); a mat-vec is the local
  product plus one all-reduce of an N×O buffer; preconditioned conjugate gradients
  (``pcg.pcg``) with a pivoted-Cholesky + diagonal preconditioner runs on all O output columns
  at once.  Memory per rank 8N²/W bytes (4N²/W with ``storage_dtype=float32``; products are
  accumulated in float64 either way).
* ``"auto"``: Cholesky when 8N² bytes fit in ``max_dense_bytes`` (default: half the memory of
  the device), PCG otherwise.

The factor or the row blocks live in a ``systems`` object; ``solve`` drops it after α, the
distributed posterior keeps it for the variances' many right-hand sides.
"""
from __future__ import annotations

import dataclasses
import os
import time

import torch
from torch import Tensor

from .._checks import check_finite, check_float_dtype, check_int, check_positive, check_variance
from ..linalg import DEFAULT_JITTERS
from .fingerprint import tensor_digest
from .group import current_group
from .store import TiledStore
from .systems import build_system

__all__ = ["solve", "Solution", "SolveOptions"]


@dataclasses.dataclass(frozen=True)
class SolveOptions:
    """PCG settings: relative residual ``tol`` per output column, ``max_iterations``,
    ``preconditioner`` ("pivoted_cholesky", "diagonal" or None), its ``rank``, the dtype the
    row blocks are kept in (``storage_dtype``; accumulation is float64) and the Cholesky
    ``jitters``."""

    tol: float = 1e-10
    max_iterations: int = 2000
    preconditioner: str | None = "pivoted_cholesky"
    rank: int = 100
    storage_dtype: torch.dtype = torch.float64
    jitters: tuple[float, ...] = DEFAULT_JITTERS

    def __post_init__(self) -> None:
        check_positive("tol", self.tol)
        check_int("max_iterations", self.max_iterations)
        check_int("rank", self.rank)
        check_float_dtype(self.storage_dtype, "storage_dtype")
        if self.preconditioner not in ("pivoted_cholesky", "diagonal", None):
            raise ValueError(f"preconditioner must be 'pivoted_cholesky', 'diagonal' or None, "
                             f"got {self.preconditioner!r}")


@dataclasses.dataclass
class Solution:
    """α (N, O) on every rank, and how it was found: ``method``, ``iterations`` (0 for
    Cholesky), ``residual`` (max relative ‖y − (K + σ²I)α‖/‖y‖ over columns, PCG) against the
    stated ``tol``, ``jitter`` (Cholesky), ``preconditioner_rank``, ``seconds``, ``history`` (PCG
    residual per iteration)."""

    alpha: Tensor
    method: str
    iterations: int = 0
    residual: float | None = None
    converged: bool = True
    jitter: float = 0.0
    preconditioner_rank: int = 0
    seconds: float = 0.0
    history: list | None = None
    tol: float | None = None


def _dense_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def solve(store: TiledStore | str | os.PathLike, y: Tensor, *, component: str = "nngp",
          noise_variance: float = 0.0, method: str = "auto", options: SolveOptions = SolveOptions(),
          device: torch.device | str | None = None, max_dense_bytes: int | None = None) -> Solution:
    """α = (K + σ²I)⁻¹ Y for the symmetric kernel ``component`` of ``store`` (see the module
    docstring for the methods).  Call on every rank with the same arguments; returns α on every
    rank.  Raises ValueError on every rank for a non-symmetric or incomplete store, targets of
    the wrong shape, or arguments that differ across ranks."""
    t0 = time.perf_counter()
    _, _, yy, system = prepare(store, y, component, noise_variance, method, options, device,
                               max_dense_bytes)
    sol = solve_system(system, yy)
    sol.seconds = time.perf_counter() - t0
    return sol


def _check_solve_inputs(st: TiledStore, y, component: str, method: str) -> Tensor:
    if method not in ("auto", "cholesky", "pcg"):
        raise ValueError(f"method must be 'auto', 'cholesky' or 'pcg', got {method!r}")
    if not st.plan.symmetric:
        raise ValueError(f"the store at {st.path} holds a rectangular kernel; solve needs the "
                         f"symmetric training kernel (x2=None)")
    if component not in st.components:
        raise ValueError(f"component {component!r} is not in the store ({st.components})")
    if not st.manifest.get("complete"):
        raise ValueError(f"the store at {st.path} is incomplete: run the kernel job to finish it")
    if not isinstance(y, Tensor) or not torch.is_floating_point(y):
        raise TypeError(f"y must be a floating-point tensor, got {type(y).__name__}")
    if y.dim() not in (1, 2) or y.shape[0] != st.plan.n_rows:
        raise ValueError(f"y must have shape (N,) or (N, O) with N = {st.plan.n_rows}, got {tuple(y.shape)}")
    check_finite("y", y)
    return (y if y.dim() == 2 else y.unsqueeze(1)).to(torch.float64)


def prepare(store: TiledStore | str | os.PathLike, y: Tensor, component: str, noise_variance: float,
            method: str, options: SolveOptions, device, max_dense_bytes: int | None):
    """Checks, then the system of ``method`` ("auto" resolved): (group, store, Y as (N, O)
    float64, system).  ``solve`` and the distributed posterior share it."""
    group = current_group(device)
    st = store if isinstance(store, TiledStore) else TiledStore.open(store)
    yy = _check_solve_inputs(st, y, component, method)
    check_variance("noise_variance", noise_variance, scalar=True)
    if not isinstance(options, SolveOptions):
        raise TypeError(f"options must be a SolveOptions, got {type(options).__name__}")
    group.same_on_all_ranks("solve arguments", (str(st.path), tensor_digest(yy), component,
                                                float(noise_variance), method, repr(options)))
    n = st.plan.n_rows
    if method == "auto":
        budget = _dense_budget(group.device) if max_dense_bytes is None else max_dense_bytes
        method = "cholesky" if 8 * n * n <= budget else "pcg"
    return group, st, yy, build_system(group, st, component, float(noise_variance), method, options)


def solve_system(system, y: Tensor) -> Solution:
    """α = M⁻¹ Y with a prepared system, as a ``Solution``."""
    alpha, info = system.solve(y)
    if info is None:
        return Solution(alpha=alpha, method="cholesky", jitter=system.jitter)
    return Solution(alpha=alpha, method="pcg", iterations=info.iterations, residual=info.residual,
                    converged=info.converged, preconditioner_rank=system.preconditioner_rank,
                    history=info.history, tol=system.opts.tol)
