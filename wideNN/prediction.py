"""Exact inference with the infinite-width kernels: the NNGP posterior and the NTK-GP.

``posterior`` is a one-call front end to ``wideNN.predictor.Predictor`` (one factorization,
tiled test blocks; the formulas are in ``wideNN.predictor``).  Notation: X (N training
inputs), Y (N, O) targets, x test inputs; K the NNGP and Θ the NTK of the architecture;
σ² = ``noise_variance``; η = ``learning_rate``; training is gradient flow on
L = (1/2N) Σ‖f(x_i) − y_i‖², so with s = ηt/N and a training kernel M = V diag(λ) Vᵀ

    A_t = M⁻¹ (I − e^{−s M}) = V diag(f(λ)) Vᵀ,     f(λ) = (1 − e^{−sλ})/λ  (f(0) = s),

computed with ``expm1`` (``wideNN.linalg.flow_weights``); t = ∞ gives A = M⁻¹.

* ``kernel="nngp", t=None`` — Bayesian NNGP posterior:
  μ = K_xX (K + σ²I)⁻¹ Y,   Σ = K_xx − K_xX (K + σ²I)⁻¹ K_Xx.
* ``kernel="nngp", t`` — only the readout layer trained (sample-then-optimize), M = K + σ²I:
  μ = K_xX A_t Y,   Σ = K_xx − K_xX M⁻¹(I − e^{−2sM}) K_Xx.
* ``kernel="ntk", t`` — the ensemble of infinitely wide networks trained by gradient flow
  (Lee et al. 2019, eqs. 15–16), M = Θ + σ²I:
  μ = Θ_xX A_t Y,
  Σ = K_xx − Θ_xX A_t K_Xx − K_xX A_t Θ_Xx + Θ_xX A_t C A_t Θ_Xx,
  with C = K + σ²I (``noise_convention="both"``, the default: σ² is Gaussian label noise, and
  readout training at t = ∞ is then the Bayesian posterior above) or C = K (``"ntk"``: σ² only
  regularizes the solve, as neural-tangents' ``diag_reg``, which adds it to Θ alone; the means
  are the same).  ``t=None`` is t → ∞ (A = Θ⁻¹).

t=None uses a Cholesky factorization (with escalating jitter, ``wideNN.linalg.cholesky``);
finite t uses one eigendecomposition of M shared by every requested time.  The training
kernel is built, factored in place and freed; the test kernels are built in row blocks of
``test_block_size`` and multiplied immediately, so memory is one N×N matrix (two for the NTK
covariance) plus one block.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ._checks import check_float_dtype, check_inputs, check_variance
from ._factors import cholesky_solve as _cholesky_solve, gaussian_lml as _gaussian_log_likelihood
from ._posterior import Posterior
from ._predict_checks import check_number, check_targets as _check_targets
from .architecture import Architecture
from .dynamics import GradientFlow
from .linalg import DEFAULT_JITTERS, NotPSDError, cholesky_differentiable
from .predictor import Predictor, PredictorOptions

__all__ = ["Posterior", "posterior", "log_marginal_likelihood", "prior"]


def _check_arch(arch) -> None:
    if not isinstance(arch, Architecture) and not callable(getattr(arch, "kernels", None)):
        raise TypeError(f"arch must be a wideNN.Architecture, got {type(arch).__name__} "
                        f"(for a GPyTorch kernel use kernel.architecture, for any other kernel "
                        f"wn.Predictor)")
    for name in ("weight_variance", "bias_variance"):
        v = getattr(arch, name)
        if isinstance(v, Tensor) and v.numel() != 1:
            raise ValueError(f"arch.{name} must be a scalar here, got shape {tuple(v.shape)}")


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
    noise_convention: str = "both",
) -> Posterior:
    """Predictive distribution of the NNGP / NTK-GP at ``x_test``.

    X the N training inputs, Y their targets, x the test inputs, K the NNGP and Θ the NTK,
    σ² = ``noise_variance``, s = ηt/N with η = ``learning_rate``, and for a training kernel M
    A_t = M⁻¹(I − e^{−sM}) (A_∞ = M⁻¹):

    - ``kernel="nngp"``, ``t=None`` (Bayesian posterior):
      μ = K_xX (K + σ²I)⁻¹ Y,  Σ = K_xx − K_xX (K + σ²I)⁻¹ K_Xx.
    - ``kernel="nngp"``, time t (readout trained, M = K + σ²I):
      μ = K_xX A_t Y,  Σ = K_xx − K_xX M⁻¹(I − e^{−2sM}) K_Xx.
    - ``kernel="ntk"``, time t (every layer trained by gradient flow, M = Θ + σ²I; Lee et al. 2019):
      μ = Θ_xX A_t Y,  Σ = K_xx − Θ_xX A_t K_Xx − K_xX A_t Θ_Xx + Θ_xX A_t C A_t Θ_Xx,
      C = K + σ²I (``noise_convention="both"``) or K (``"ntk"``); ``t=None`` is t → ∞.

    Args:
        arch: an ``Architecture`` or a composed description (``wn.Serial(...)``); for any other
            kernel (a GPyTorch kernel, a function, precomputed matrices) use ``wn.Predictor``.
        x_train: (N, d), or (N, C, L) / (N, C, H, W) for a convolutional description;
            y_train: (N, O) or (N,); x_test: (N_test, …) shaped like x_train.
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
        noise_convention: ``"both"`` (default) or ``"ntk"``, where σ² enters the NTK covariance
            (module docstring).

    Returns a ``Posterior``: mean (N_test, O) [(N_test,) for 1-D y], variance (N_test,) or
    covariance (N_test, N_test); with T times a leading T dimension on each.  For many times
    or test sets from one factorization use ``wn.Predictor`` directly.

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
    _check_targets(y_train, x_train.shape[0])
    noise = check_number("noise_variance", noise_variance)
    dynamics = GradientFlow(learning_rate)   # a positive number (not a bool or a string)
    check_float_dtype(dtype)
    times = dynamics.times(t)
    opts = PredictorOptions(dtype=dtype, widths=widths, test_block_size=test_block_size,
                            kernel_block_size=kernel_block_size, jitters=jitters)
    at_infinity = times is None or (times.dim() == 0 and math.isinf(float(times)))

    def make(factorization: str) -> Predictor:
        return Predictor(arch, x_train, y_train, kernel, dynamics, noise, noise_convention=noise_convention,
                         factorization=factorization,
                         compute_variance=bool(compute_variance or full_covariance), options=opts)

    pred = _factored(make, at_infinity, bayesian=kernel == "nngp" and times is None)
    return pred.predict(x_test, t, full_covariance=full_covariance)


def _factored(make, at_infinity: bool, bayesian: bool) -> Predictor:
    """The predictor from ``make(factorization)``: eigh for finite times, Cholesky at t = ∞.

    The t → ∞ limit of gradient flow is the pseudo-inverse (eigenvalues at round-off level get
    weight 0 at every t, ``wideNN.linalg.flow_weights``).  A training kernel that is singular to
    working precision (duplicated inputs with conflicting targets and no noise) would need a
    Cholesky jitter, which moves the mean by ~jitter-sized amounts away from every large finite
    t; such a kernel goes through the eigendecomposition instead.  The Bayesian NNGP posterior
    (kernel="nngp", t=None) keeps the documented escalating jitter.
    """
    if not at_infinity:
        return make("eigh")
    if bayesian:
        return make("cholesky")
    try:
        pred = make("cholesky")
        if pred._factor.jitter == 0.0:
            return pred
    except NotPSDError:
        pass
    return make("eigh")



def prior(kernels, x: Tensor, kernel: str = "nngp", *, dtype: torch.dtype = torch.float64) -> Posterior:
    """The prior N(0, K(x, x)) of the network outputs at ``x`` as a ``Posterior`` with the full
    covariance (``kernel="ntk"``: N(0, Θ)), e.g. ``wn.prior(arch, x).sample(5)``.  ``kernels``
    is anything a ``wn.Predictor`` accepts."""
    from ._kernel_sources import as_source
    from ._predict_checks import check_tensor

    if kernel not in ("nngp", "ntk"):
        raise ValueError(f"kernel must be 'nngp' or 'ntk', got {kernel!r}")
    check_float_dtype(dtype)
    xd = check_tensor("x", x).to(dtype)
    k, th = as_source(kernels, kernel).pair(xd, None, kernel == "nngp", kernel == "ntk")
    cov = k if kernel == "nngp" else th
    return Posterior(mean=torch.zeros(x.shape[0], dtype=dtype, device=x.device), variance=cov.diagonal().clone(),
                     covariance=cov, kernel=kernel, t=torch.tensor(0.0, dtype=torch.float64),
                     learning_rate=float("nan"), noise_variance=0.0)


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
    """log p(Y | X, θ) of a GP with the architecture's kernel (model selection by the evidence, Lee et al. 2018):

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
    check_variance("noise_variance", noise_variance, scalar=True)
    xd = x.to(dtype)
    mat = arch.nngp(xd) if kernel == "nngp" else arch.ntk(xd, widths=widths)
    nz = noise_variance.to(dtype) if isinstance(noise_variance, Tensor) else float(noise_variance)
    if isinstance(nz, Tensor) or nz:
        mat = mat + nz * torch.eye(x.shape[0], dtype=dtype, device=x.device)
    L, _ = cholesky_differentiable(mat, jitters, name=f"{kernel.upper()} training kernel + noise")
    return _gaussian_log_likelihood(yy, L, _cholesky_solve(yy, L))

