"""``Posterior``: a Gaussian predictive distribution at test inputs, with sampling and scores."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor

from .linalg import DEFAULT_JITTERS, cholesky
from .metrics import gaussian_log_likelihood

__all__ = ["Posterior"]


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

    def log_likelihood(self, y: Tensor, noise_variance: float = 0.0, reduction: str = "mean") -> Tensor:
        """Gaussian test log-likelihood Σ or mean of log N(y | μ, v + σ²) over test points (and
        outputs, which share v), in nats; ``y`` has the shape of ``mean`` without a time dim,
        ``noise_variance`` σ² is the observation noise of the test targets.  With T times the
        result has a leading T dim (``reduction="none"``: the elementwise values)."""
        if self.variance is None:
            raise ValueError("log_likelihood needs the variance: predict with compute_variance=True")
        from ._predict_checks import check_number, check_tensor

        check_tensor("y", y)  # a finite float32/float64 tensor, not meta
        noise = check_number("noise_variance", noise_variance)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        one_output = self.mean.dim() == self.variance.dim()
        if y.shape != self.mean.shape[-y.dim():] or y.dim() != (1 if one_output else 2):
            raise ValueError(f"y has shape {tuple(y.shape)} but the predictive mean is "
                             f"{tuple(self.mean.shape)} (times first)")
        var = self.variance + noise
        ll = gaussian_log_likelihood(y, self.mean, var if one_output else var.unsqueeze(-1), reduction="none")
        if reduction == "none":
            return ll
        dims = tuple(range(ll.dim() - y.dim(), ll.dim()))
        return ll.mean(dims) if reduction == "mean" else ll.sum(dims)

    def sample(self, num_samples: int = 1, *, generator: torch.Generator | None = None,
               jitters: Sequence[float] = DEFAULT_JITTERS, return_jitter: bool = False,
               name: str = "predictive covariance"):
        """Draws f ~ N(mean, covariance) jointly over the test points, each output independent:
        f = μ + L z with L Lᵀ = Σ + εI (Cholesky with the smallest working relative jitter ε
        from ``jitters``; ``name`` appears in its error).  Returns (num_samples, *mean.shape),
        and ε with ``return_jitter``.
        A posterior at t = 0 (or ``wn.prior``) gives samples of the prior."""
        from ._checks import check_int, fits_in_memory

        num_samples = check_int("num_samples", num_samples)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                            f"(for a seed use torch.Generator().manual_seed(seed))")
        if self.covariance is None:
            raise ValueError("sampling needs the joint covariance: predict with full_covariance=True")
        mean = self.mean if self.mean.dim() == self.covariance.dim() else self.mean.unsqueeze(-1)
        L, jitter = cholesky(self.covariance, jitters, name=name)
        # z has the samples last, so one output's draws are L z for z of shape (N_test, S)
        with fits_in_memory(f"num_samples={num_samples} draws of {mean.numel()} values"):
            z = torch.randn(*mean.shape, num_samples, generator=generator, dtype=mean.dtype,
                            device=mean.device if generator is None else generator.device).to(mean.device)
        m, o = mean.shape[-2:]
        lz = (L @ z.reshape(*z.shape[:-3], m, o * num_samples)).reshape(z.shape)
        out = (mean.unsqueeze(-1) + lz).movedim(-1, 0).reshape(num_samples, *self.mean.shape)
        return (out, jitter) if return_jitter else out
