"""Exact inference with the infinite-width kernels: the NNGP posterior and the NTK-GP.

Notation: X (N training inputs), Y (N, O) targets, x test inputs; K the NNGP and Θ the NTK of
the architecture; K_xX = K(x, X) etc.; σ² = ``noise_variance`` is added to the diagonal of
the training kernel(s) (both K and Θ for ``kernel="ntk"``, as neural-tangents' ``diag_reg``);
η = ``learning_rate``; training is gradient flow on L = (1/2N) Σ‖f(x_i) − y_i‖², so with
s = ηt/N and a training kernel M = V diag(λ) Vᵀ the flow operator is

    A_t = M⁻¹ (I − e^{−s M}) = V diag(f(λ)) Vᵀ,     f(λ) = (1 − e^{−sλ})/λ  (f(0) = s),

computed with ``expm1`` (``wideNN.linalg.flow_weights``); t = ∞ gives A = M⁻¹.

* ``kernel="nngp", t=None`` — Bayesian NNGP posterior:
  μ = K_xX (K + σ²I)⁻¹ Y,   Σ = K_xx − K_xX (K + σ²I)⁻¹ K_Xx.
* ``kernel="nngp", t`` — only the readout layer trained (sample-then-optimize), M = K:
  μ = K_xX A_t Y,   Σ = K_xx − K_xX M⁻¹(I − e^{−2sM}) K_Xx.
* ``kernel="ntk", t`` — the ensemble of infinitely wide networks trained by gradient flow
  (Lee et al. 2019; seed slides eqs 15–16), M = Θ:
  μ = Θ_xX A_t Y,
  Σ = K_xx − Θ_xX A_t K_Xx − K_xX A_t Θ_Xx + Θ_xX A_t K A_t Θ_Xx.
  ``t=None`` is t → ∞ (A = Θ⁻¹).

t=None uses a Cholesky factorization (with escalating jitter, ``wideNN.linalg.cholesky``);
finite t uses one eigendecomposition of M shared by every requested time.  The training
kernel is built, factored in place and freed; the test kernels are built in row blocks of
``test_block_size`` and multiplied immediately, so memory is one N×N matrix (two for the NTK
covariance) plus one block.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from torch import Tensor

from ._checks import check_positive, check_float_dtype, check_inputs, check_int, check_variance
from .architecture import Architecture
from .linalg import DEFAULT_JITTERS, cholesky, cholesky_differentiable, eigh_psd, flow_weights

__all__ = ["Posterior", "posterior", "log_marginal_likelihood"]


@dataclasses.dataclass
class Posterior:
    """Predictive distribution at the test inputs (every output shares the covariance).

    Attributes:
        mean: (N_test, O), or (N_test,) when ``y_train`` was 1-D; with a 1-D tensor of T times
            a leading T dimension is added.
        variance: (N_test,) or (T, N_test); None when ``compute_variance=False``.
        covariance: (N_test, N_test) or (T, N_test, N_test) with ``full_covariance=True``.
        kernel, t, learning_rate, noise_variance: the request.
        jitter: relative jitter the Cholesky needed (0.0 for the eigendecomposition path).
        log_marginal_likelihood: log p(y_train | x_train) of the GP whose kernel was factored
            (K + σ²I, or Θ + σ²I for ``kernel="ntk"``), the same number as
            ``wn.log_marginal_likelihood`` but from the factor the posterior already has;
            set on the Cholesky path (t = None or ∞), None on the eigendecomposition path.
    """

    mean: Tensor
    variance: Tensor | None
    covariance: Tensor | None
    kernel: str
    t: Tensor | None
    learning_rate: float
    noise_variance: float
    jitter: float = 0.0
    log_marginal_likelihood: Tensor | None = None

    @property
    def std(self) -> Tensor:
        """√variance."""
        if self.variance is None:
            raise ValueError("the posterior was computed with compute_variance=False")
        return self.variance.clamp_min(0.0).sqrt()


# ----------------------------------------------------------------------------- validation
def _check_targets(y: Tensor, n: int, name: str = "y_train") -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if not torch.is_floating_point(y):
        raise TypeError(f"{name} must be a floating-point tensor (e.g. one-hot targets), got {y.dtype}")
    if y.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, outputs), got {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but x_train has {n}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} contains NaN or inf entries")
    return y if y.dim() == 2 else y.unsqueeze(-1)


def _check_arch(arch) -> None:
    if not isinstance(arch, Architecture) and not callable(getattr(arch, "kernels", None)):
        raise TypeError(f"arch must be a wideNN.Architecture, got {type(arch).__name__} "
                        f"(for a GPyTorch kernel use kernel.architecture)")
    for name in ("weight_variance", "bias_variance"):
        v = getattr(arch, name)
        if isinstance(v, Tensor) and v.numel() != 1:
            raise ValueError(f"arch.{name} must be a scalar here, got shape {tuple(v.shape)}")


def _check_times(t, device) -> Tensor | None:
    if t is None:
        return None
    tt = torch.as_tensor(t, dtype=torch.float64).to(device)
    if tt.dim() > 1:
        raise ValueError(f"t must be a number or a 1-D tensor of times, got shape {tuple(tt.shape)}")
    if bool(torch.isnan(tt).any()):
        raise ValueError(f"t contains NaN: {t}")
    if bool((tt < 0).any()):
        raise ValueError(f"training time t must be >= 0, got {t}")
    return tt


class _Tiled:
    """The architecture's kernel methods with a fixed tile size (None: automatic)."""

    def __init__(self, arch: Architecture, block_size: int | None):
        self.arch, self.kw = arch, {} if block_size is None else {"block_size": int(block_size)}

    def nngp(self, x1, x2=None, diag=False):
        return self.arch.nngp(x1, x2, diag=diag, **({} if diag else self.kw))

    def ntk(self, x1, x2=None, widths=None):
        return self.arch.ntk(x1, x2, **self.kw, **({} if widths is None else {"widths": widths}))

    def kernels(self, x1, x2=None, widths=None):
        return self.arch.kernels(x1, x2, **self.kw, **({} if widths is None else {"widths": widths}))


def _auto_block(n_train: int, x: Tensor, per_row: int) -> int:
    # elements of the N-wide row blocks kept alive at once (~128 MB on CPU, ~2 GB on CUDA)
    budget = (2 ** 28 if x.is_cuda else 2 ** 24) // max(1, per_row)
    return max(16, budget // max(1, n_train))


# ----------------------------------------------------------------------------- public API
def posterior(
    arch: Architecture,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    kernel: str = "ntk",
    t: float | Sequence[float] | Tensor | None = None,
    learning_rate: float = 1.0,
    noise_variance: float = 0.0,
    full_covariance: bool = False,
    *,
    compute_variance: bool = True,
    dtype: torch.dtype = torch.float64,
    widths: Sequence[int] | int | None = None,
    test_block_size: int | None = None,
    kernel_block_size: int | None = None,
    jitters: Sequence[float] = DEFAULT_JITTERS,
) -> Posterior:
    """Predictive distribution of the NNGP / NTK-GP at ``x_test`` (see the module docstring).

    Args:
        arch: the architecture (its depth, activation, variances, parameterization).
        x_train: (N, d); y_train: (N, O) or (N,); x_test: (N_test, d).
        kernel: ``"nngp"`` or ``"ntk"``.
        t: None (t → ∞ for "ntk", the Bayesian posterior for "nngp"), a time ≥ 0, or a 1-D
            tensor of T times (``inf`` allowed) sharing one eigendecomposition.
        learning_rate: η > 0 of the gradient flow (only the product ηt matters).
        noise_variance: σ² ≥ 0 added to the diagonal of the training kernel(s).
        full_covariance: return the (N_test, N_test) covariance instead of the variance.
        compute_variance: False skips the variance (mean only: one solve, no triangular solves).
        dtype: the dtype of every computation (float64 by default; the result has this dtype).
        widths: hidden widths, for the standard-parameterization NTK.
        test_block_size: rows of x_test handled at once (default: ~128 MB / 2 GB of blocks).
        kernel_block_size: tile size of the analytic kernel computation (default: its own).
        jitters: relative jitters the Cholesky tries in turn (t=None only).

    Returns a ``Posterior``: mean (N_test, O) [(N_test,) for 1-D y], variance (N_test,) or
    covariance (N_test, N_test); with T times a leading T dimension on each.

    Raises ValueError / TypeError for mismatched shapes, NaN targets, negative times or noise,
    and ``wideNN.linalg.NotPSDError`` (naming the jitters tried) when the training kernel
    cannot be factored.
    """
    _check_arch(arch)
    if kernel not in ("nngp", "ntk"):
        raise ValueError(f"kernel must be 'nngp' or 'ntk', got {kernel!r}")
    check_inputs(x_train, x_test, "x_train", "x_test")
    if isinstance(arch, Architecture) and (x_train.dim() != 2 or x_test.dim() != 2):
        raise ValueError(f"x_train and x_test must be 2-D (N, features), got shapes "
                         f"{tuple(x_train.shape)} and {tuple(x_test.shape)}")
    n = x_train.shape[0]
    if n == 0:
        raise ValueError("x_train is empty")
    squeeze_outputs = isinstance(y_train, Tensor) and y_train.dim() == 1
    y = _check_targets(y_train, n)
    check_variance("noise_variance", noise_variance)
    noise = float(noise_variance)
    eta = check_positive("learning_rate", learning_rate)
    times = _check_times(t, x_train.device)
    check_float_dtype(dtype)
    if test_block_size is not None:
        test_block_size = check_int("test_block_size", test_block_size)
    if kernel_block_size is not None:
        kernel_block_size = check_int("kernel_block_size", kernel_block_size)
    if full_covariance:
        compute_variance = True
    tiled = _Tiled(arch, kernel_block_size)

    x = x_train.to(dtype)
    xt = x_test.to(dtype)
    y = y.to(dtype=dtype, device=x.device)
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(v, Tensor) and v.requires_grad
        for v in (arch.weight_variance, arch.bias_variance, x_train, y_train, x_test))
    scalar_t = times is not None and times.dim() == 0
    if times is None or (scalar_t and math.isinf(float(times))):
        out = _solve_cholesky(tiled, kernel, x, y, xt, noise, compute_variance, full_covariance,
                              widths, test_block_size, jitters, needs_grad)
    else:
        s = (eta * times.to(dtype) / n).reshape(-1, 1)
        out = _solve_eigen(tiled, kernel, x, y, xt, noise, s, compute_variance, full_covariance,
                           widths, test_block_size)
        if scalar_t:
            out = tuple(None if o is None else o[0] for o in out[:3]) + (out[3],)
    mean, var, cov, jitter = out[:4]
    if squeeze_outputs:
        mean = mean.squeeze(-1)
    return Posterior(mean=mean, variance=var, covariance=cov, kernel=kernel, t=times,
                     learning_rate=eta, noise_variance=noise, jitter=jitter,
                     log_marginal_likelihood=out[4] if len(out) > 4 else None)


def log_marginal_likelihood(
    arch: Architecture,
    x: Tensor,
    y: Tensor,
    noise_variance: float | Tensor = 0.0,
    kernel: str = "nngp",
    *,
    dtype: torch.dtype = torch.float64,
    widths: Sequence[int] | int | None = None,
    jitters: Sequence[float] = DEFAULT_JITTERS,
) -> Tensor:
    """log p(Y | X, θ) of a GP with the architecture's kernel (seed slides, model selection):

        log p = −½ Σ_o y_oᵀ (K + σ²I)⁻¹ y_o − (O/2) log det(K + σ²I) − (N·O/2) log 2π,

    summed over the O independent outputs (columns of y; a 1-D y is one output), in nats.
    Differentiable in tensor-valued ``arch.weight_variance``, ``arch.bias_variance`` and
    ``noise_variance``.  ``kernel="ntk"`` uses Θ in place of K.  (GPyTorch's
    ``ExactMarginalLogLikelihood`` returns this divided by N for one output.)
    """
    _check_arch(arch)
    if kernel not in ("nngp", "ntk"):
        raise ValueError(f"kernel must be 'nngp' or 'ntk', got {kernel!r}")
    check_inputs(x, None, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (N, features), got shape {tuple(x.shape)}")
    yy = _check_targets(y, x.shape[0], "y").to(dtype=dtype, device=x.device)
    check_variance("noise_variance", noise_variance)
    xd = x.to(dtype)
    mat = arch.nngp(xd) if kernel == "nngp" else arch.ntk(xd, widths=widths)
    nz = noise_variance.to(dtype) if isinstance(noise_variance, Tensor) else float(noise_variance)
    if isinstance(nz, Tensor) or nz:
        mat = mat + nz * torch.eye(x.shape[0], dtype=dtype, device=x.device)
    L, _ = cholesky_differentiable(mat, jitters, name=f"{kernel.upper()} training kernel + noise")
    return _gaussian_log_likelihood(yy, L, _cholesky_solve(yy, L))


def _gaussian_log_likelihood(y: Tensor, L: Tensor, alpha: Tensor) -> Tensor:
    """−½ Σ y·α − (O/2) log det(L Lᵀ) − (N·O/2) log 2π for α = (L Lᵀ)⁻¹ y, y of shape (N, O)."""
    n, o = y.shape
    logdet = 2.0 * L.diagonal().log().sum()
    return -0.5 * (y * alpha).sum() - 0.5 * o * logdet - 0.5 * n * o * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- Cholesky path
def _cholesky_solve(b: Tensor, L: Tensor) -> Tensor:
    """(L Lᵀ)⁻¹ b by two triangular solves.  ``torch.cholesky_solve`` copies L into a fresh
    column-major buffer on every call (measured: +1 N×N matrix), which for N = 50k is 20 GB
    more than the factor itself; ``solve_triangular`` works on L's memory in either layout."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, b, upper=False), upper=True)


def _train_kernel_builder(arch, which, x, noise, widths):
    def build() -> Tensor:
        mat = arch.nngp(x) if which == "nngp" else arch.ntk(x, widths=widths)
        if noise:
            mat.diagonal().add_(noise)
        return mat
    return build


def _solve_cholesky(arch, kernel, x, y, xt, noise, compute_variance, full_cov, widths,
                    block, jitters, needs_grad):
    n = x.shape[0]
    k_train = None
    first: list[Tensor] = []
    if kernel == "ntk" and compute_variance and not needs_grad:
        # one recursion gives both; Θ is then factored in place (rebuilt only for a retry)
        k_train, theta = arch.kernels(x, widths=widths)
        if noise:
            k_train.diagonal().add_(noise)
            theta.diagonal().add_(noise)
        first.append(theta)
        del theta
    elif kernel == "ntk" and compute_variance:
        k_train = arch.nngp(x)
        if noise:
            k_train = k_train + noise * torch.eye(n, dtype=x.dtype, device=x.device)
    name = f"{kernel.upper()} training kernel" + (" + noise" if noise else "")
    if needs_grad:
        mat = arch.nngp(x) if kernel == "nngp" else arch.ntk(x, widths=widths)
        if noise:
            mat = mat + noise * torch.eye(n, dtype=x.dtype, device=x.device)
        L, jitter = cholesky_differentiable(mat, jitters, name=name)
        del mat
    else:
        rebuild = _train_kernel_builder(arch, kernel, x, noise, widths)
        L, jitter = cholesky(lambda: first.pop() if first else rebuild(), jitters, overwrite=True, name=name)
    alpha = _cholesky_solve(y, L)

    rows = xt.shape[0] if full_cov else (int(block) if block else _auto_block(n, xt, 3))
    means, variances, cov = [], [], None
    for start in range(0, xt.shape[0], rows):
        xb = xt[start:start + rows]
        if kernel == "nngp":
            kb = arch.nngp(xb, x)
            means.append(kb @ alpha)
            if not compute_variance:
                continue
            v = torch.linalg.solve_triangular(L, kb.T, upper=False)       # L⁻¹ K_Xx
            if full_cov:
                cov = arch.nngp(xb) - v.T @ v
            else:
                variances.append(arch.nngp(xb, diag=True) - (v * v).sum(0))
        else:
            kb, thb = arch.kernels(xb, x, widths=widths) if compute_variance else (
                None, arch.ntk(xb, x, widths=widths))
            means.append(thb @ alpha)
            if not compute_variance:
                continue
            z = _cholesky_solve(thb.T, L)                                 # Θ⁻¹ Θ_Xx
            kz = k_train @ z
            if full_cov:
                cross = kb @ z
                cov = arch.nngp(xb) - cross - cross.T + z.T @ kz
            else:
                variances.append(arch.nngp(xb, diag=True) - 2 * (kb.T * z).sum(0) + (z * kz).sum(0))
    mean = torch.cat(means)
    var = None
    if compute_variance:
        var = cov.diagonal().clone() if full_cov else torch.cat(variances)
    return mean, var, cov, jitter, _gaussian_log_likelihood(y, L, alpha)


# ----------------------------------------------------------------------------- eigen path
def _solve_eigen(arch, kernel, x, y, xt, noise, s, compute_variance, full_cov, widths, block):
    n = x.shape[0]
    name = f"{kernel.upper()} training kernel" + (" + noise" if noise else "")
    if kernel == "nngp":
        mat = arch.nngp(x)
        k_rot = None
    else:
        k_train, mat = arch.kernels(x, widths=widths)
        if not compute_variance:
            del k_train
    if noise:
        mat = mat + noise * torch.eye(n, dtype=x.dtype, device=x.device)
    lam, vec = eigh_psd(mat, name=name)
    del mat
    f = flow_weights(lam, s)                              # (T, N)
    vty = vec.T @ y                                       # (N, O)
    if kernel == "ntk" and compute_variance:
        if noise:
            k_train = k_train + noise * torch.eye(n, dtype=x.dtype, device=x.device)
        k_rot = vec.T @ k_train @ vec                     # K in Θ's eigenbasis
        del k_train
    if kernel == "nngp" and compute_variance:
        # M = K: Σ reduces to K_xx − P diag(g) Pᵀ with g = (1 − e^{−2sλ})/λ, no cancellation
        g = flow_weights(lam, 2 * s)

    n_t = s.shape[0]
    rows = xt.shape[0] if full_cov else (int(block) if block else _auto_block(n, xt, 3 + n_t))
    means, variances, covs = [], [], None
    for start in range(0, xt.shape[0], rows):
        xb = xt[start:start + rows]
        if kernel == "nngp":
            p = arch.nngp(xb, x) @ vec                    # K_xX V
            q = p
        else:
            if compute_variance:
                kb, thb = arch.kernels(xb, x, widths=widths)
                q = kb @ vec                              # K_xX V
                del kb
            else:
                thb = arch.ntk(xb, x, widths=widths)
            p = thb @ vec                                 # Θ_xX V
            del thb
        means.append(torch.einsum("bn,tn,no->tbo", p, f, vty))
        if not compute_variance:
            continue
        if kernel == "nngp":
            if full_cov:
                covs = arch.nngp(xb).unsqueeze(0) - torch.einsum("bn,tn,cn->tbc", p, g, p)
            else:
                variances.append(arch.nngp(xb, diag=True).unsqueeze(0) - torch.einsum("bn,tn->tb", p * p, g))
        else:
            pf = p.unsqueeze(0) * f.unsqueeze(1)          # (T, b, N) = Θ_xX V F
            if full_cov:
                cross = pf @ q.T                          # Θ_xX A K_Xx
                covs = (arch.nngp(xb).unsqueeze(0) - cross - cross.mT + (pf @ k_rot) @ pf.mT)
            else:
                variances.append(arch.nngp(xb, diag=True).unsqueeze(0)
                                 - 2 * (pf * q.unsqueeze(0)).sum(-1)
                                 + ((pf @ k_rot) * pf).sum(-1))
            del pf
    mean = torch.cat(means, dim=1)
    var = None
    if compute_variance:
        var = covs.diagonal(dim1=-2, dim2=-1).clone() if full_cov else torch.cat(variances, dim=1)
    return mean, var, covs, 0.0
