"""The two factorizations of a predictor's training kernel and their tiled test-block loops
(the formulas are in ``wideNN.predictor``).  ``plan`` carries the regime, noise, the NTK
covariance convention and the targets; ``tests`` yields test kernel blocks."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from .linalg import cholesky, cholesky_differentiable, eigh_psd


@dataclasses.dataclass
class Plan:
    shares_kernel: bool        # M = K (readout) or M = Θ
    noise: float
    noise_on_prior: bool       # C = K + σ²I (True) or K
    variance: bool             # build what the variance needs
    y: Tensor                  # (N, O) targets (residuals for a finite network)
    name: str                  # the trained kernel, for error messages
    jitters: Any
    data: Any                  # .train(nngp, ntk) -> (K, Θ)

    @property
    def needs_prior_kernel(self) -> bool:
        return self.variance and not self.shares_kernel

    def build(self) -> tuple[Tensor, Tensor | None]:
        """(M + σ²I, C or None), both fresh N×N matrices (noise in place unless differentiable)."""
        k, th = self.data.train(nngp=self.shares_kernel or self.needs_prior_kernel,
                                ntk=not self.shares_kernel)
        mat = k if self.shares_kernel else th
        prior = None if self.shares_kernel or not self.variance else k
        del k, th
        if self.noise:
            mat = _add_diag(mat, self.noise)
            if prior is not None and self.noise_on_prior:
                prior = _add_diag(prior, self.noise)
        return mat, prior

    def build_trained(self) -> Tensor:
        """M + σ²I alone (a Cholesky retry rebuilds only what it factors)."""
        k, th = self.data.train(nngp=self.shares_kernel, ntk=not self.shares_kernel)
        mat = k if self.shares_kernel else th
        del k, th
        return _add_diag(mat, self.noise) if self.noise else mat


def _add_diag(m: Tensor, v: float) -> Tensor:
    if m.requires_grad:
        return m + v * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    m.diagonal().add_(v)
    return m


def _auto_block(n_train: int, device: torch.device, per_row: int) -> int:
    # elements of the N-wide row blocks kept alive at once (~128 MB on CPU, ~2 GB on CUDA)
    budget = (2 ** 28 if device.type == "cuda" else 2 ** 24) // max(1, per_row)
    return max(16, budget // max(1, n_train))


def cholesky_solve(b: Tensor, L: Tensor) -> Tensor:
    """(L Lᵀ)⁻¹ b by two triangular solves.  ``torch.cholesky_solve`` copies L into a fresh
    column-major buffer on every call (measured: +1 N×N matrix), which for N = 50k is 20 GB
    more than the factor itself; ``solve_triangular`` works on L's memory in either layout."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, b, upper=False), upper=True)


def gaussian_lml(y: Tensor, L: Tensor, alpha: Tensor) -> Tensor:
    """−½ Σ y·α − (O/2) log det(L Lᵀ) − (N·O/2) log 2π for α = (L Lᵀ)⁻¹ y, y of shape (N, O)."""
    n, o = y.shape
    logdet = 2.0 * L.diagonal().log().sum()
    return -0.5 * (y * alpha).sum() - 0.5 * o * logdet - 0.5 * n * o * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- Cholesky
@dataclasses.dataclass
class CholeskyFactor:
    L: Tensor
    alpha: Tensor
    prior: Tensor | None
    jitter: float
    log_marginal_likelihood: Tensor


def factor_cholesky(plan: Plan) -> CholeskyFactor:
    mat, prior = plan.build()
    if mat.requires_grad:
        L, jitter = cholesky_differentiable(mat, plan.jitters, name=plan.name)
        del mat
    else:
        # the first attempt factors this matrix in place; a retry with jitter rebuilds it
        first = [mat]
        del mat
        L, jitter = cholesky(lambda: first.pop() if first else plan.build_trained(), plan.jitters,
                             overwrite=True, name=plan.name)
    alpha = cholesky_solve(plan.y, L)
    return CholeskyFactor(L, alpha, prior, jitter, gaussian_lml(plan.y, L, alpha))


def predict_cholesky(f: CholeskyFactor, plan: Plan, tests, variance: bool, full_cov: bool,
                     block: int | None):
    n = f.L.shape[0]
    rows = tests.n if full_cov else (int(block) if block else _auto_block(n, f.L.device, 3))
    means, variances, cov = [], [], None
    for a in range(0, tests.n, rows):
        b = min(a + rows, tests.n)
        k_b, th_b = tests.cross(a, b, nngp=plan.shares_kernel or variance, ntk=not plan.shares_kernel)
        m_b = k_b if plan.shares_kernel else th_b
        means.append(m_b @ f.alpha)
        if not variance:
            continue
        if plan.shares_kernel:
            v = torch.linalg.solve_triangular(f.L, m_b.T, upper=False)      # L⁻¹ K_Xx
            if full_cov:
                cov = tests.full(a, b) - v.T @ v
            else:
                variances.append(tests.diag(a, b) - (v * v).sum(0))
            continue
        z = cholesky_solve(m_b.T, f.L)                                      # M⁻¹ Θ_Xx
        kz = f.prior @ z
        if full_cov:
            cross = k_b @ z
            cov = tests.full(a, b) - cross - cross.T + z.T @ kz
        else:
            variances.append(tests.diag(a, b) - 2 * (k_b.T * z).sum(0) + (z * kz).sum(0))
    mean = torch.cat(means)
    var = None
    if variance:
        var = cov.diagonal().clone() if full_cov else torch.cat(variances)
    return mean, var, cov


# ----------------------------------------------------------------------------- eigendecomposition
@dataclasses.dataclass
class EigenFactor:
    lam: Tensor
    vec: Tensor
    vty: Tensor                # Vᵀ Y
    prior_rot: Tensor | None   # Vᵀ C V (NTK variance)
    # (w, V (W ∘ VᵀY) as an N × T·O matrix): the means' coefficients on the training kernel for
    # the last time weights, reused by later test sets at the same times
    mean_coef: tuple[Tensor, Tensor] | None = None


def _mean_coefficients(f: EigenFactor, w: Tensor, wy: Tensor) -> Tensor:
    if f.mean_coef is None or f.mean_coef[0].shape != w.shape or not torch.equal(f.mean_coef[0], w):
        n = f.lam.shape[0]
        coef = (f.vec @ wy.permute(1, 0, 2).reshape(n, -1))                 # V (W VᵀY): (N, T·O)
        f.mean_coef = (w.clone(), coef)
    return f.mean_coef[1]


def factor_eigh(plan: Plan) -> EigenFactor:
    mat, prior = plan.build()
    lam, vec = eigh_psd(mat, name=plan.name, overwrite=True)  # the plan's own copy
    del mat
    prior_rot = None
    if prior is not None:
        prior_rot = vec.T @ prior @ vec                                     # C in M's eigenbasis
        del prior
    return EigenFactor(lam, vec, vec.T @ plan.y, prior_rot)


def predict_eigen(f: EigenFactor, plan: Plan, tests, w: Tensor, g: Tensor | None,
                  variance: bool, full_cov: bool, block: int | None):
    """w: (T, N) weights of the mean; g: (T, N) variance weights when M = K."""
    n, n_t = f.lam.shape[0], w.shape[0]
    comp = None if (full_cov or not variance or plan.shares_kernel) else compress_times(w)
    per_row = 3 + n_t + (0 if comp is None else 2 * comp[1].shape[0])
    wy = w.unsqueeze(-1) * f.vty.unsqueeze(0)                               # (T, N, O) = W Vᵀ Y
    rows = tests.n if full_cov else (int(block) if block else _auto_block(n, f.vec.device, per_row))
    means, variances, covs = [], [], None
    # means alone: M_xX (V W VᵀY) costs b·N·T·O per block instead of b·N² for M_xX V, and the
    # N × T·O coefficients are computed once for all test sets asked at the same times
    coef = _mean_coefficients(f, w, wy) if not variance and n_t * wy.shape[-1] <= n else None
    for a in range(0, tests.n, rows):
        b = min(a + rows, tests.n)
        if coef is not None:
            m_b = tests.cross(a, b, nngp=plan.shares_kernel, ntk=not plan.shares_kernel)
            m_b = m_b[0] if plan.shares_kernel else m_b[1]
            means.append((m_b @ coef).reshape(b - a, n_t, -1).transpose(0, 1))  # (T, b, O)
            continue
        k_b, th_b = tests.cross(a, b, nngp=plan.shares_kernel or variance, ntk=not plan.shares_kernel)
        p = (k_b if plan.shares_kernel else th_b) @ f.vec                   # M_xX V
        q = p if plan.shares_kernel else (k_b @ f.vec if variance else None)  # K_xX V
        del k_b, th_b
        means.append(p @ wy)                                                # (T, b, O)
        if not variance:
            continue
        if plan.shares_kernel:
            if full_cov:
                covs = tests.full(a, b).unsqueeze(0) - torch.einsum("bn,tn,cn->tbc", p, g, p)
            else:
                variances.append(tests.diag(a, b).unsqueeze(0) - g @ (p * p).T)
            continue
        if comp is not None:
            variances.append(_compressed_variance(tests.diag(a, b), p, q, w, comp, f.prior_rot))
            continue
        pw = p.unsqueeze(0) * w.unsqueeze(1)                                # (T, b, N) = M_xX V W
        if full_cov:
            cross = pw @ q.T                                                # M_xX A K_Xx
            covs = tests.full(a, b).unsqueeze(0) - cross - cross.mT + (pw @ f.prior_rot) @ pw.mT
        else:
            variances.append(tests.diag(a, b).unsqueeze(0) - 2 * (pw * q.unsqueeze(0)).sum(-1)
                             + ((pw @ f.prior_rot) * pw).sum(-1))
        del pw
    mean = torch.cat(means, dim=1)
    var = None
    if variance:
        var = covs.diagonal(dim1=-2, dim2=-1).clone() if full_cov else torch.cat(variances, dim=1)
    return mean, var, covs


# ----------------------------------------------------------------------------- many times
TIME_RANK_RTOL = 1e-13


def compress_times(w: Tensor) -> tuple[Tensor, Tensor] | None:
    """W (T, N) ≈ C Z with C = U·S (T, r), Z (r, N) from the SVD of W, dropping singular values
    below ``TIME_RANK_RTOL`` × the largest (‖W − CZ‖₂ ≤ 1e-13 ‖W‖₂, round-off level).  The
    weights of nearby times are smooth functions of λ, so r is small (≈ 35 for 100 log-spaced
    times); None unless r ≤ T/2, where the compression pays."""
    n_t = w.shape[0]
    if n_t < 8 or not bool(torch.isfinite(w).all()):
        return None
    u, s, zt = torch.linalg.svd(w, full_matrices=False)
    r = int((s > TIME_RANK_RTOL * s[0]).sum()) if float(s[0]) > 0 else 0
    if r == 0 or 2 * r > n_t:
        return None
    return u[:, :r] * s[:r], zt[:r]


def _compressed_variance(diag: Tensor, p: Tensor, q: Tensor, w: Tensor, comp, prior_rot: Tensor) -> Tensor:
    """K_xx − 2 Σ_k w_tk p_k q_k + (p∘w_t)ᵀ R (p∘w_t) for every t, with the quadratic term
    through the rank-r factors of W: (p∘w_t) = Σ_i C_ti (p∘z_i), so it is C_t G C_tᵀ with
    G_ij = (p∘z_i)ᵀ R (p∘z_j): r·b·N² work instead of T·b·N²."""
    c, z = comp
    pz = p.unsqueeze(0) * z.unsqueeze(1)                                   # (r, b, N)
    g = torch.einsum("ibn,jbn->bij", pz @ prior_rot, pz)                   # (b, r, r)
    quad = torch.einsum("ti,bij,tj->tb", c, g, c)
    return diag.unsqueeze(0) - 2 * w @ (p * q).T + quad
