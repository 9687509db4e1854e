"""Dense linear algebra for kernel matrices: jittered Cholesky, stable spectral functions.

Kernel matrices of deep networks are PSD in exact arithmetic but often numerically singular
(near-duplicate inputs, deep ReLU kernels whose correlations all approach 1).  The helpers here
make the failure modes explicit:

* ``cholesky(A)`` factors A + εI with ε escalating from 0 through ``jitters`` (relative to the
  mean diagonal) and raises ``NotPSDError`` naming every jitter tried when all fail.  With
  ``overwrite=True`` the factor is written into A's own memory (no second N×N buffer), which
  is what bounds the memory of large GP solves; a failed attempt then rebuilds A from the
  callable that made it.
* ``eigh_psd(A)`` is a symmetric eigendecomposition whose small negative eigenvalues
  (round-off) are clipped to zero and whose clearly negative ones raise ``NotPSDError``.
* ``flow_weights(lam, s)`` = (1 − e^{−s λ})/λ computed with ``expm1`` (no cancellation for
  small sλ); s = ∞ gives the pseudo-inverse 1/λ; eigenvalues at rounding level get weight 0
  at every s (finite or not).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ._checks import check_jitters

__all__ = ["NotPSDError", "cholesky", "cholesky_differentiable", "eigh_psd", "flow_weights", "DEFAULT_JITTERS"]

# relative to mean(diag(A)); 0 first so a well-conditioned matrix is factored exactly
DEFAULT_JITTERS: tuple[float, ...] = (0.0, 1e-10, 1e-8, 1e-6, 1e-4)


class NotPSDError(ValueError):
    """A kernel matrix is not (numerically) positive (semi-)definite."""


def cholesky(
    a: Tensor | Callable[[], Tensor],
    jitters: Sequence[float] = DEFAULT_JITTERS,
    *,
    overwrite: bool = False,
    name: str = "kernel matrix",
) -> tuple[Tensor, float]:
    """Lower Cholesky factor of A + εI with the smallest working ε from ``jitters``.

    Args:
        a: a symmetric (…, N, N) tensor, or a zero-argument callable returning a fresh one
            (used with ``overwrite=True`` to rebuild A after a failed in-place attempt).
        jitters: relative jitters tried in order; the absolute jitter is
            ``jitter * mean(diag(A))`` (per batch element's mean for a batch).
        overwrite: factor in place: the returned L shares A's memory and A is destroyed.
        name: what A is, for the error message.

    Returns ``(L, jitter)`` with the relative jitter that was used.
    Raises ``NotPSDError`` listing every jitter tried when none gives a factorization.
    """
    build = a if callable(a) else None
    mat = build() if build is not None else a
    if mat.dim() < 2 or mat.shape[-1] != mat.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(mat.shape)}")
    if not bool(torch.isfinite(mat.diagonal(dim1=-2, dim2=-1)).all()):
        raise NotPSDError(f"{name} has NaN or infinite diagonal entries")
    jitters = check_jitters("jitters", jitters)
    scale = _diagonal_scale(mat, name)
    tried: list[float] = []
    for attempt, jitter in enumerate(jitters):
        if attempt > 0 and overwrite:
            if build is None:
                raise RuntimeError("overwrite=True retries need a callable that rebuilds the matrix")
            mat = build()
        work = mat if overwrite else mat.clone()
        if jitter:
            work.diagonal(dim1=-2, dim2=-1).add_(jitter * scale.unsqueeze(-1))
        # The transposed view is column-major, which lets LAPACK/cuSOLVER factor in place;
        # A is symmetric, so it is the same matrix.
        info = torch.empty(work.shape[:-2], dtype=torch.int32, device=work.device)
        torch.linalg.cholesky_ex(work.mT, out=(work.mT, info))
        tried.append(jitter)
        if not bool((info != 0).any()) and not _degenerate(work.mT, scale):
            return work.mT, float(jitter)
        if overwrite:
            del work, mat
    raise NotPSDError(
        f"{name} is not positive definite: Cholesky failed with relative jitters {tried} "
        f"(absolute jitter = relative × mean diagonal {float(scale.max()):.3g}). Check the inputs "
        f"for NaNs or duplicates, add noise_variance > 0, or use float64.")


def _diagonal_scale(mat: Tensor, name: str) -> Tensor:
    """Mean diagonal (per batch element), the unit of the relative jitters; a kernel that is
    zero on the diagonal is zero everywhere (PSD), so no jitter can make a posterior of it."""
    scale = mat.diagonal(dim1=-2, dim2=-1).mean(-1)
    if bool((scale <= 0).any()):
        raise NotPSDError(f"{name} has a non-positive mean diagonal ({float(scale.min()):.3g}): the "
                          f"kernel vanishes on these inputs (e.g. zero inputs with zero bias "
                          f"variance); add noise_variance > 0 or change the architecture")
    return scale


def _degenerate(L: Tensor, scale: Tensor) -> bool:
    """A factor of a matrix that is singular to working precision: LAPACK 'succeeded', but
    solves with it return rounding noise (e.g. duplicated inputs with conflicting targets and
    no noise), so the next jitter is tried instead.  Either the smallest pivot² is at round-off
    level relative to the mean diagonal (n·ε), or — LAPACK often leaves pivots² of a few times
    that on such matrices — the smallest eigenvalue is (``numerically_singular``)."""
    n = L.shape[-1]
    pivots = L.diagonal(dim1=-2, dim2=-1)
    tol = n * torch.finfo(L.dtype).eps * scale
    return bool((pivots.min(-1).values ** 2 < tol).any()) or numerically_singular(L)


def numerically_singular(L: Tensor, margin: float = 100.0) -> bool:
    """Whether A = L Lᵀ (batched: any of them) may have an eigenvalue within ``margin`` × the
    eigendecomposition's round-off cut n·ε·λ_max (``flow_weights``, ``eigh_psd``).

    Two steps each of inverse and of power iteration on the factor (O(n²) each, against the
    factorization's O(n³); ~20 % of a 2000 × 2000 Cholesky on the CPU) estimate λ_min from above
    and λ_max from below; a round-off-level eigenvalue (~n·ε·λ_max) dominates the inverse
    iteration from its first step, a genuine one stays many orders above the cut.
    """
    n = L.shape[-1]
    g = torch.Generator(device=L.device).manual_seed(0)
    start = torch.randn(n, 1, generator=g, dtype=L.dtype, device=L.device)
    hi = lo = start.expand(*L.shape[:-2], n, 1)
    lam_max = inv_min = None
    with torch.no_grad():
        L = L.detach()
        for _ in range(2):
            hi = L @ (L.mT @ hi)
            lam_max = hi.norm(dim=(-2, -1), keepdim=True)
            hi = hi / lam_max
            lo = torch.cholesky_solve(lo, L)
            inv_min = lo.norm(dim=(-2, -1), keepdim=True)
            lo = lo / inv_min
    cut = margin * n * torch.finfo(L.dtype).eps * lam_max
    return bool((~torch.isfinite(inv_min) | (inv_min * cut >= 1.0)).any())


def cholesky_differentiable(a: Tensor, jitters: Sequence[float] = DEFAULT_JITTERS,
                            name: str = "kernel matrix") -> tuple[Tensor, float]:
    """As ``cholesky`` but out of place and differentiable with respect to ``a``."""
    if not bool(torch.isfinite(a.detach()).all()):
        raise NotPSDError(f"{name} has NaN or infinite entries")
    scale = _diagonal_scale(a.detach(), name)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    tried = []
    for jitter in check_jitters("jitters", jitters):
        work = a + (jitter * scale)[..., None, None] * eye if jitter else a
        L, info = torch.linalg.cholesky_ex(work)
        tried.append(jitter)
        if not bool((info != 0).any()) and not _degenerate(L.detach(), scale):
            return L, float(jitter)
    raise NotPSDError(f"{name} is not positive definite: Cholesky failed with relative jitters "
                      f"{tried} (absolute jitter = relative × mean diagonal {float(scale.max()):.3g})")


def eigh_psd(a: Tensor, *, name: str = "kernel matrix", rtol: float | None = None,
             overwrite: bool = False) -> tuple[Tensor, Tensor]:
    """Eigendecomposition A = V diag(λ) Vᵀ of a symmetric PSD matrix, λ clipped at 0.

    Eigenvalues below ``-rtol · max|λ|`` mean A is not PSD and raise ``NotPSDError``
    (default rtol: 100 · N · machine epsilon, the size of round-off in λ); those in between
    are round-off and are set to 0.  ``overwrite=True`` lets a large CPU decomposition use A's
    memory as its workspace (A is destroyed; peak A + V instead of A + a copy + V).
    """
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise NotPSDError(f"{name} has NaN or infinite entries")
    lam, vec = _eigh(a, overwrite)
    top = lam.abs().amax(-1, keepdim=True)
    if rtol is None:
        rtol = 100 * a.shape[-1] * torch.finfo(a.dtype).eps
    if bool((lam < -rtol * top).any()):
        raise NotPSDError(f"{name} is not positive semi-definite: smallest eigenvalue "
                          f"{float(lam.min()):.3g} vs largest {float(top.max()):.3g}")
    return lam.clamp_min(0.0), vec


#: from this size on, a CPU eigendecomposition goes through LAPACK's MRRR driver (syevr, via
#: scipy) instead of torch's divide and conquer (syevd): 3.7× faster at N = 3000 in float64 on
#: the 2-core test machine (15.8 s against 59 s), same accuracy (residual and orthogonality
#: ~N·eps); below it the two are close and torch avoids the copy
SCIPY_EIGH_MIN = 512


def _eigh(a: Tensor, overwrite: bool = False) -> tuple[Tensor, Tensor]:
    if (a.device.type == "cpu" and a.dim() == 2 and a.shape[-1] >= SCIPY_EIGH_MIN
            and a.dtype in (torch.float32, torch.float64)
            and not (torch.is_grad_enabled() and a.requires_grad)):
        import scipy.linalg
        # the transpose is the same symmetric matrix, and column-major: LAPACK reads it in place
        lam, vec = scipy.linalg.eigh(a.detach().numpy().T, driver="evr", check_finite=False,
                                     overwrite_a=overwrite and a.is_contiguous())
        return torch.from_numpy(lam), torch.from_numpy(vec)
    return torch.linalg.eigh(a)


def flow_weights(lam: Tensor, s: Tensor, *, rcond: float | None = None) -> Tensor:
    """f(λ, s) = (1 − e^{−sλ})/λ, broadcasting λ (…, N) against s (…, 1).

    Stable for all λ ≥ 0: ``-expm1(-sλ)/λ`` has no cancellation for small sλ.  Eigenvalues at
    or below ``rcond · max λ`` (default N · eps) are rounding noise: their eigenvectors are
    not determined by the matrix, and a weight of up to s on them (the exact λ → 0 limit)
    multiplies that noise by s, which for large finite s (1e14 and beyond) swamps the answer.
    They get weight 0 at every s, the same rule as the pseudo-inverse at s = ∞ (where f = 1/λ
    above the cut), so f is continuous in s and a finite-time posterior tends to the t = ∞ one
    (gradient flow never fits a zero-eigenvalue direction either).  The price is at most the
    rounding level: a test function's overlap with such a direction is O(√(rcond·λ_max)).
    """
    s = torch.as_tensor(s, dtype=lam.dtype, device=lam.device)
    n = lam.shape[-1]
    if rcond is None:
        rcond = n * torch.finfo(lam.dtype).eps
    cut = rcond * lam.amax(-1, keepdim=True)
    positive = lam > cut
    safe = torch.where(positive, lam, torch.ones_like(lam))
    finite = torch.isfinite(s)
    s_fin = torch.where(finite, s, torch.zeros_like(s))
    f_fin = torch.where(positive, -torch.expm1(-s_fin * safe) / safe, torch.zeros_like(lam))
    f_inf = torch.where(positive, 1.0 / safe, torch.zeros_like(lam))
    return torch.where(finite, f_fin, f_inf)
