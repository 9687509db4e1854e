"""A predictor that factors the training kernel once and answers many times and test sets.

Notation: X (N training examples), Y (N, O) targets, x test inputs; K the NNGP (the prior
covariance of the initial outputs f_0) and M the kernel that drives training.  A ``Regime``
fixes M: the NTK Θ when every layer is trained (``"ntk"``), the NNGP K when only the readout
is (``"nngp"``).  A ``wideNN.dynamics`` object gives the spectral weights w_t(λ) of M =
V diag(λ) Vᵀ (gradient flow by default: w = (1 − e^{−ηtλ/N})/λ), A_t = V diag(w_t) Vᵀ, and

    μ_t = M_xX A_t Y,
    Σ_t = K_xx − M_xX A_t K_Xx − K_xX A_t M_Xx + M_xX A_t C A_t M_Xx.

With σ² = ``noise_variance`` the training kernel is M + σ²I.  C, the covariance of the
training outputs in the last term, is K + σ²I under ``noise_convention="both"`` (the default:
σ² is independent Gaussian label noise, and for the readout regime at t = ∞ this is exactly the
Bayesian NNGP posterior μ = K_xX (K + σ²I)⁻¹ Y, Σ = K_xx − K_xX (K + σ²I)⁻¹ K_Xx) and K under
``"ntk"`` (σ² only regularizes the NTK solve, as neural-tangents' ``diag_reg``; the means
agree, the covariances differ by the σ² term).  When M = K (readout) the covariance reduces to
K_xx − K_xX V diag(2w − λw²) Vᵀ K_Xx, computed without cancellation.  t = ∞ is A = M⁻¹
(pseudo-inverse on the eigendecomposition path).

Factorizations (``factorization=``): ``"eigh"`` (one eigendecomposition, any t including ∞)
or ``"cholesky"`` (t = ∞ only, cheaper, with escalating jitter, and the log marginal likelihood
of Y under N(0, M + σ²I) for free).  The training kernel is built, factored in place and freed;
test kernels are built in row blocks of ``test_block_size`` and multiplied immediately, so
memory is one N×N factor (two when the NTK variance needs K as well) plus one block.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import torch
from torch import Tensor

from . import _factors as _f
from ._checks import check_inputs, check_int
from ._kernel_sources import ArchitectureSource, as_source
from ._posterior import Posterior
from ._predict_checks import (check_cross, check_examples, check_number, check_square_symmetric,
                              check_targets, check_tensor)
from .dynamics import Dynamics, GradientFlow
from .linalg import DEFAULT_JITTERS

__all__ = ["Regime", "REGIMES", "PredictorOptions", "QueryKernels", "Predictor"]


@dataclasses.dataclass(frozen=True)
class Regime:
    """Which kernel drives training: ``trained="ntk"`` (every layer: M = Θ, prior covariance K)
    or ``"nngp"`` (readout only, Lee et al. 2019's sample-then-optimize: M = K; at t = ∞ with
    noise σ² this is the exact Bayesian NNGP posterior)."""

    name: str
    trained: str

    @property
    def shares_kernel(self) -> bool:
        """Whether the trained kernel is the prior covariance itself (M = K)."""
        return self.trained == "nngp"


REGIMES = {"nngp": Regime("nngp", "nngp"), "ntk": Regime("ntk", "ntk")}
NOISE_CONVENTIONS = ("both", "ntk")
FACTORIZATIONS = ("eigh", "cholesky")


@dataclasses.dataclass(frozen=True)
class PredictorOptions:
    """Numerics: dtype of every computation, hidden widths (standard-parameterization NTK),
    test rows per block (None: ~128 MB / 2 GB of blocks), analytic-kernel tile size, and the
    relative jitters the Cholesky tries in turn."""

    dtype: torch.dtype = torch.float64
    widths: Sequence[int] | int | None = None
    test_block_size: int | None = None
    kernel_block_size: int | None = None
    jitters: Sequence[float] = DEFAULT_JITTERS


@dataclasses.dataclass
class QueryKernels:
    """Precomputed kernels of a test (query) set for a predictor built by ``Predictor.from_matrices``:
    test×train NNGP / NTK (M, N), and the test NNGP (M, M) or its diagonal (M,)."""

    nngp_test_train: Tensor | None = None
    ntk_test_train: Tensor | None = None
    nngp_test: Tensor | None = None
    nngp_test_diag: Tensor | None = None


# ----------------------------------------------------------------------------- data adapters
class _Inputs:
    """Training examples and a kernel source; test sets are input tensors."""

    def __init__(self, source, x: Tensor):
        self.source, self.x, self.n = source, x, x.shape[0]

    def train(self, nngp: bool, ntk: bool):
        return self.source.pair(self.x, None, nngp, ntk)

    def tests(self, x_test: Any, dtype) -> "_InputTests":
        if isinstance(x_test, QueryKernels):
            raise TypeError("this predictor was built from inputs: pass x_test as a tensor")
        check_examples(self.x, x_test)
        return _InputTests(self, x_test.to(dtype))


class _InputTests:
    def __init__(self, data: _Inputs, x: Tensor):
        self.data, self.x, self.n = data, x, x.shape[0]

    def cross(self, a, b, nngp, ntk):
        return self.data.source.pair(self.x[a:b], self.data.x, nngp, ntk)

    def diag(self, a, b):
        return self.data.source.nngp_diag(self.x[a:b])

    def full(self, a, b):
        return self.data.source.pair(self.x[a:b], None, True, False)[0]


class _Matrices:
    """Precomputed training kernels (copied before factoring in place)."""

    def __init__(self, nngp: Tensor | None, ntk: Tensor | None, n: int):
        self.k, self.th, self.n = nngp, ntk, n
        self.device = (nngp if nngp is not None else ntk).device

    def release(self) -> None:
        """Drop the training matrices once factored (the factor holds what is needed)."""
        self.k = self.th = None

    def train(self, nngp: bool, ntk: bool):
        for want, m, name in ((nngp, self.k, "nngp_train"), (ntk, self.th, "ntk_train")):
            if want and m is None:
                raise ValueError(f"this prediction needs {name}; pass it to Predictor.from_matrices")
        return (self.k.clone() if nngp else None), (self.th.clone() if ntk else None)

    def tests(self, t: Any, dtype) -> "_MatrixTests":
        if not isinstance(t, QueryKernels):
            raise TypeError(f"a predictor built from matrices takes its test set as QueryKernels, "
                            f"got {type(t).__name__}")
        return _MatrixTests(t, self.n, dtype, self.device)


class _MatrixTests:
    def __init__(self, t: QueryKernels, n_train: int, dtype, device):
        rows = None
        self.k = self.th = self.kxx = self.kdiag = None
        for attr, name in (("k", "nngp_test_train"), ("th", "ntk_test_train")):
            m = getattr(t, name)
            if m is not None:
                check_cross(name, m, n_train, rows)
                rows = m.shape[0]
                setattr(self, attr, m.to(dtype=dtype, device=device))
        if rows is None:
            raise ValueError("QueryKernels needs nngp_test_train or ntk_test_train")
        if t.nngp_test is not None:
            self.kxx = check_square_symmetric("nngp_test", t.nngp_test, rows).to(dtype=dtype, device=device)
        if t.nngp_test_diag is not None:
            d = check_tensor("nngp_test_diag", t.nngp_test_diag)
            if d.shape != (rows,):
                raise ValueError(f"nngp_test_diag must have shape ({rows},), got {tuple(d.shape)}")
            self.kdiag = d.to(dtype=dtype, device=device)
        self.n = rows

    def cross(self, a, b, nngp, ntk):
        for want, m, name in ((nngp, self.k, "nngp_test_train"), (ntk, self.th, "ntk_test_train")):
            if want and m is None:
                raise ValueError(f"this prediction needs QueryKernels.{name}")
        return (self.k[a:b] if nngp else None), (self.th[a:b] if ntk else None)

    def diag(self, a, b):
        if self.kdiag is not None:
            return self.kdiag[a:b]
        if self.kxx is None:
            raise ValueError("the variance needs QueryKernels.nngp_test or nngp_test_diag")
        return self.kxx.diagonal()[a:b]

    def full(self, a, b):
        if self.kxx is None:
            raise ValueError("the covariance needs QueryKernels.nngp_test (M, M)")
        return self.kxx[a:b, a:b]


# ----------------------------------------------------------------------------- the predictor
class Predictor:
    """Factors the training kernel once; ``predict`` answers any times and test sets.

    Args:
        kernels: an ``Architecture``; any object with ``.kernels(x1, x2=None, diag=False)`` →
            (nngp, ntk) (inputs of any shape, the first dim indexes examples); a GPyTorch kernel
            or a function ``fn(x1, x2)`` returning (nngp, ntk) or one matrix (then used as the
            trained kernel: K for ``kernel="nngp"``, Θ for ``"ntk"``, mean only).
        x_train: (N, ...); y_train: (N, O) or (N,).
        kernel: ``"ntk"`` / ``"nngp"`` or a ``Regime``.
        dynamics: a ``wideNN.dynamics`` object (default ``GradientFlow(1.0)``).
        noise_variance: σ² ≥ 0 added to the training kernel(s).
        noise_convention: ``"both"`` (default, σ² in M and in the prior covariance of the
            training outputs) or ``"ntk"`` (σ² in M only); see the module docstring.
        factorization: ``"eigh"`` (any t) or ``"cholesky"`` (t = ∞ only).
        compute_variance: False keeps only what the mean needs (no K for the NTK).
        options: ``PredictorOptions`` (dtype, widths, block sizes, jitters).
    """

    def __init__(self, kernels: Any, x_train: Tensor, y_train: Tensor, kernel: str | Regime = "ntk",
                 dynamics: Dynamics | None = None, noise_variance: float = 0.0, *,
                 noise_convention: str = "both", factorization: str = "eigh",
                 compute_variance: bool = True, options: PredictorOptions | None = None) -> None:
        opts = _check_options(options)
        regime = _regime(kernel)
        check_examples(x_train)
        source = as_source(kernels, regime.trained, widths=opts.widths, block_size=opts.kernel_block_size)
        if isinstance(source, ArchitectureSource):
            check_inputs(x_train, None, "x_train")  # an MLP takes (N, features): say so by name
        self._setup(_Inputs(source, x_train.to(opts.dtype)), y_train, regime, dynamics, noise_variance,
                    noise_convention, factorization, compute_variance, opts)

    @classmethod
    def from_matrices(cls, y_train: Tensor, *, nngp_train: Tensor | None = None,
                      ntk_train: Tensor | None = None, kernel: str | Regime = "ntk",
                      dynamics: Dynamics | None = None, noise_variance: float = 0.0,
                      num_examples: int | None = None, **kwargs) -> "Predictor":
        """A predictor from precomputed (N, N) training kernels (copied, not modified); test
        sets are then ``QueryKernels``.  ``num_examples`` is the N of the loss (1/2N) Σ‖f − y‖²
        when rows are (example, output) pairs of a full NTK (default: the number of rows).
        Other keywords as for the constructor."""
        opts = _check_options(kwargs.pop("options", None))
        regime = _regime(kernel)
        mats = {}
        for name, m in (("nngp_train", nngp_train), ("ntk_train", ntk_train)):
            if m is not None:
                n = next(iter(mats.values())).shape[0] if mats else None
                mats[name] = check_square_symmetric(name, m, n).to(opts.dtype)
        if not mats:
            raise ValueError("from_matrices needs nngp_train and/or ntk_train")
        n = next(iter(mats.values())).shape[0]
        convention = kwargs.pop("noise_convention", "both")
        factorization = kwargs.pop("factorization", "eigh")
        variance = kwargs.pop("compute_variance", True)
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
        self = cls.__new__(cls)
        self._setup(_Matrices(mats.get("nngp_train"), mats.get("ntk_train"), n), y_train, regime,
                    dynamics, noise_variance, convention, factorization, variance, opts)
        if num_examples is not None:
            self.n = check_int("num_examples", num_examples)
        return self

    def _setup(self, data, y_train, regime, dynamics, noise, convention, factorization, variance, opts):
        if dynamics is None:
            dynamics = GradientFlow(1.0)
        if not isinstance(dynamics, Dynamics):
            raise TypeError(f"dynamics must be a wideNN.dynamics object (GradientFlow, GradientDescent, "
                            f"Momentum), got {type(dynamics).__name__}")
        if convention not in NOISE_CONVENTIONS:
            raise ValueError(f"noise_convention must be one of {NOISE_CONVENTIONS}, got {convention!r}")
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization must be one of {FACTORIZATIONS}, got {factorization!r}")
        if not isinstance(variance, bool):
            raise TypeError(f"compute_variance must be a bool, got {variance!r}")
        self.squeeze_outputs = isinstance(y_train, Tensor) and y_train.dim() == 1
        device = data.x.device if isinstance(data, _Inputs) else data.device
        y = check_targets(y_train, data.n).to(dtype=opts.dtype, device=device)
        self.regime, self.dynamics, self.options, self.n = regime, dynamics, opts, data.n
        self.noise_variance = check_number("noise_variance", noise)
        self.noise_convention, self.factorization, self.compute_variance = convention, factorization, variance
        self._data = data
        name = f"{regime.trained.upper()} training kernel" + (" + noise" if self.noise_variance else "")
        self._plan = _f.Plan(regime.shares_kernel, self.noise_variance, convention == "both", variance,
                             y, name, opts.jitters, data)
        self._factor = (_f.factor_cholesky if factorization == "cholesky" else _f.factor_eigh)(self._plan)
        self._plan.data = None  # the factor is all that is needed from here on
        if isinstance(data, _Matrices):
            data.release()

    # -- answers ---------------------------------------------------------------------------
    def predict(self, x_test: Tensor | QueryKernels, t: Any = None, *, full_covariance: bool = False,
                compute_variance: bool | None = None) -> Posterior:
        """The predictive distribution at ``x_test`` (a tensor of inputs, or ``QueryKernels``) at
        time(s) ``t``: None (t = ∞), a number ≥ 0 or a 1-D tensor of T times (a leading T dim on
        every result).  Discrete dynamics count whole steps."""
        variance = self.compute_variance if compute_variance is None else compute_variance
        if not isinstance(variance, bool) or not isinstance(full_covariance, bool):
            raise TypeError("compute_variance and full_covariance must be bools")
        variance = variance or full_covariance
        if variance and not self.compute_variance:
            raise ValueError("this predictor was built with compute_variance=False (mean only)")
        times = self.dynamics.times(t)
        tests = self._data_tests(x_test)
        block = self.options.test_block_size
        if isinstance(self._factor, _f.CholeskyFactor):
            if times is not None and not bool(torch.isinf(times).all()):
                raise ValueError("a predictor with factorization='cholesky' answers t = None / inf only; "
                                 "build it with factorization='eigh' for finite times")
            mean, var, cov = _f.predict_cholesky(self._factor, self._plan, tests, variance, full_covariance, block)
            if times is not None and times.dim() == 1:
                mean, var, cov = (None if o is None else o.unsqueeze(0).expand(len(times), *o.shape).clone()
                                  for o in (mean, var, cov))
        else:
            tt = (torch.tensor(math.inf, dtype=torch.float64) if times is None else times).reshape(-1)
            lam = self._factor.lam
            w = self.dynamics.weights(lam, tt.to(lam.device), self.n)
            g = self.dynamics.variance_weights(lam, tt.to(lam.device), self.n) if (
                variance and self.regime.shares_kernel) else None
            mean, var, cov = _f.predict_eigen(self._factor, self._plan, tests, w, g, variance,
                                              full_covariance, block)
            if times is None or times.dim() == 0:
                mean, var, cov = (None if o is None else o[0] for o in (mean, var, cov))
        if self.squeeze_outputs:
            mean = mean.squeeze(-1)
        chol = isinstance(self._factor, _f.CholeskyFactor)
        return Posterior(mean=mean, variance=var, covariance=cov, kernel=self.regime.name, t=times,
                         learning_rate=getattr(self.dynamics, "learning_rate", float("nan")),
                         noise_variance=self.noise_variance,
                         jitter=self._factor.jitter if chol else 0.0,
                         log_marginal_likelihood=self._factor.log_marginal_likelihood if chol else None)

    def train_mean(self, t: Any = None) -> Tensor:
        """The predictive mean on the training examples themselves, from the eigendecomposition
        alone: M(X, X) V = V diag(λ − σ²), so μ_t(X) = V diag((λ − σ²) w_t) Vᵀ Y costs O(N²T)
        and needs no kernel evaluation.  Shapes as ``predict(...).mean``."""
        if not isinstance(self._factor, _f.EigenFactor):
            raise ValueError("train_mean needs factorization='eigh'")
        times = self.dynamics.times(t)
        tt = (torch.tensor(math.inf, dtype=torch.float64) if times is None else times).reshape(-1)
        f = self._factor
        w = self.dynamics.weights(f.lam, tt.to(f.lam.device), self.n)
        scale = (f.lam - self.noise_variance).clamp_min(0.0) * w           # (T, N)
        mean = f.vec @ (scale.unsqueeze(-1) * f.vty.unsqueeze(0))            # (T, N, O)
        if times is None or times.dim() == 0:
            mean = mean[0]
        return mean.squeeze(-1) if self.squeeze_outputs else mean

    def _data_tests(self, x_test):
        if self._data is None:
            raise RuntimeError("predictor has no training data")
        return self._data.tests(x_test, self.options.dtype)

    @property
    def log_marginal_likelihood(self) -> Tensor | None:
        """log N(Y | 0, M + σ²I) from the Cholesky factor (None for ``"eigh"``)."""
        return self._factor.log_marginal_likelihood if isinstance(self._factor, _f.CholeskyFactor) else None


def _regime(kernel: Any) -> Regime:
    if isinstance(kernel, Regime):
        return kernel
    if not isinstance(kernel, str) or kernel not in REGIMES:
        raise ValueError(f"kernel must be 'nngp' or 'ntk', got {kernel!r}")
    return REGIMES[kernel]


def _check_options(options: Any) -> PredictorOptions:
    from ._checks import check_float_dtype, check_jitters

    opts = PredictorOptions() if options is None else options
    if not isinstance(opts, PredictorOptions):
        raise TypeError(f"options must be a PredictorOptions, got {type(opts).__name__}")
    check_float_dtype(opts.dtype)
    if opts.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"dtype {opts.dtype} is too coarse for kernel solves; use float64 or float32")
    for name in ("test_block_size", "kernel_block_size"):
        if getattr(opts, name) is not None:
            check_int(name, getattr(opts, name))
    check_jitters("jitters", opts.jitters)
    return opts

