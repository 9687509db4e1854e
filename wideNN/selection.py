"""Model selection by marginal likelihood (seed slides): fit σ_w², σ_b² and the noise σ² of
an architecture on the training set alone, by maximizing

    log p(Y | X) = −½ Σ_o y_oᵀ (K + σ²I)⁻¹ y_o − (O/2) log det(K + σ²I) − (N·O/2) log 2π

with a GPyTorch ``ExactGP`` (kernel ``NNGPKernel`` or ``NTKKernel``, Gaussian likelihood,
``ExactMarginalLogLikelihood``) and a torch optimizer.  The O outputs (columns of Y) are
independent GPs that share the hyperparameters (a batch GP over outputs, used for prediction);
for O > 1 the objective factors the shared K + σ²I once instead of once per output.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import gpytorch
import torch
from torch import Tensor

from ._checks import check_inputs, check_positive, check_variance
from .architecture import Architecture
from .gp_kernels import NNGPKernel, NTKKernel
from .prediction import log_marginal_likelihood

__all__ = ["FitResult", "fit_hyperparameters"]


@dataclasses.dataclass
class FitResult:
    """Outcome of ``fit_hyperparameters``.

    Attributes:
        architecture: the input architecture with the fitted variances.
        noise_variance: the fitted σ².
        history: one dict per step: ``step`` and, at the hyperparameters that step started
            from, ``log_marginal_likelihood`` (total, in nats), ``weight_variance``,
            ``bias_variance``, ``noise_variance``.
        model: the trained GPyTorch ``ExactGP`` (in eval mode).
    """

    architecture: Architecture
    noise_variance: float
    history: list[dict]
    model: gpytorch.models.ExactGP

    def __iter__(self):  # allows ``arch, noise, history = fit_hyperparameters(...)``
        return iter((self.architecture, self.noise_variance, self.history))


class _SharedKernelGP(gpytorch.models.ExactGP):
    """Zero-mean GP; with O outputs a batch of O GPs sharing one (non-batched) kernel."""

    def __init__(self, x: Tensor, y_batch: Tensor, likelihood, kernel):
        super().__init__(x, y_batch, likelihood)
        self.covar_module = kernel
        self.outputs = y_batch.shape[0] if y_batch.dim() == 2 else None

    def forward(self, z: Tensor):
        covar = self.covar_module(z)
        if self.outputs is None:
            mean = torch.zeros(z.shape[-2], dtype=z.dtype, device=z.device)
        else:
            mean = torch.zeros(self.outputs, z.shape[-2], dtype=z.dtype, device=z.device)
            covar = covar.expand(self.outputs, *covar.shape[-2:])
        return gpytorch.distributions.MultivariateNormal(mean, covar)


def fit_hyperparameters(
    arch: Architecture,
    x: Tensor,
    y: Tensor,
    *,
    kernel: str = "nngp",
    steps: int = 100,
    lr: float = 0.05,
    noise_variance: float = 1e-2,
    learn_noise: bool = True,
    learn: Sequence[str] = ("weight_variance", "bias_variance"),
    optimizer: str = "adam",
    min_noise: float = 1e-6,
    min_init: float = 1e-4,
    widths: Sequence[int] | int | None = None,
    dtype: torch.dtype = torch.float64,
    progress: bool = True,
) -> FitResult:
    """Maximize the log marginal likelihood of (x, y) over σ_w², σ_b² and σ².

    Args:
        arch: starting point; its depth, activation and parameterization stay fixed.
        x: (N, d) training inputs; y: (N,) or (N, O) targets.
        kernel: ``"nngp"`` (the Bayesian NNGP, as in the slides) or ``"ntk"``.
        steps, lr, optimizer: ``"adam"`` or ``"lbfgs"`` (torch.optim), on the raw
            (softplus-inverse) parameters.
        noise_variance: initial σ² (≥ ``min_noise``, the lower bound of its constraint).
        learn_noise: whether σ² is fitted; ``learn``: which variances are fitted.
        min_init: variances starting at 0 start at this value instead (σ² = 0 maps to a raw
            parameter of −∞, from which no gradient step can move).
        progress: show a tqdm progress bar with the current log marginal likelihood.

    Returns a ``FitResult`` (unpacks as ``arch, noise_variance, history``).
    """
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a wideNN.Architecture, got {type(arch).__name__}")
    if kernel not in ("nngp", "ntk"):
        raise ValueError(f"kernel must be 'nngp' or 'ntk', got {kernel!r}")
    check_inputs(x, None, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (N, features), got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.dim() not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be a tensor of shape ({x.shape[0]},) or ({x.shape[0]}, O), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if not torch.is_floating_point(y) or not bool(torch.isfinite(y).all()):
        raise ValueError("y must be a floating-point tensor without NaN or inf entries")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    lr = check_positive("lr", lr)
    check_variance("noise_variance", noise_variance)
    check_variance("min_noise", min_noise)
    check_variance("min_init", min_init)
    if isinstance(learn, str) or not isinstance(learn, (list, tuple, set, frozenset)):
        raise TypeError(f"learn must be a list of names ('weight_variance', 'bias_variance'), "
                        f"got {learn!r}")
    if not isinstance(learn_noise, bool):
        raise TypeError(f"learn_noise must be True or False, got {learn_noise!r}")
    if steps > 0 and not learn and not learn_noise:
        raise ValueError("nothing left to learn: learn=() and learn_noise=False fit no parameter; "
                         "name a variance in learn, set learn_noise=True, or use steps=0")
    unknown = set(learn) - {"weight_variance", "bias_variance"}
    if unknown:
        raise ValueError(f"learn may name 'weight_variance' and 'bias_variance', got {sorted(unknown)}")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")

    start = arch.replace(
        weight_variance=max(float(arch.weight_variance), min_init) if "weight_variance" in learn else float(arch.weight_variance),
        bias_variance=max(float(arch.bias_variance), min_init) if "bias_variance" in learn else float(arch.bias_variance))
    kern_cls = NNGPKernel if kernel == "nngp" else NTKKernel
    kern = kern_cls(start, widths=widths)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(min_noise))
    xd = x.to(dtype)
    yb = y.to(dtype=dtype, device=x.device)
    yb = yb.T.contiguous() if yb.dim() == 2 else yb
    model = _SharedKernelGP(xd, yb, likelihood, kern).to(dtype=dtype, device=x.device)
    # set after the cast: a float32 raw parameter would keep σ² rounded to float32
    likelihood.noise = torch.tensor(max(float(noise_variance), min_noise * (1 + 1e-6)), dtype=dtype,
                                    device=x.device)
    for name in ("weight_variance", "bias_variance"):
        getattr(kern, f"raw_{name}").requires_grad_(name in learn)
    likelihood.raw_noise.requires_grad_(learn_noise)
    params = [p for p in model.parameters() if p.requires_grad]
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    n = x.shape[0]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        # one iteration per step (for progress and history), but room for the line search:
        # torch's default max_eval = 1.25·max_iter would allow a single trial point, and a
        # first trial that overshoots then leaves the parameters where they were
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=25, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        if yb.dim() == 1:
            # ExactMarginalLogLikelihood divides by N; ×N it is the slides' log p(y | X)
            # (priors, if any, are included likewise)
            return mll(model(xd), yb) * n
        # O outputs share K + σ²I: one Cholesky serves them all, where GPyTorch's batch GP
        # would factor O identical copies.  Same value as the batch MLL (tests check it).
        current = start.replace(weight_variance=kern.weight_variance.reshape(()),
                                bias_variance=kern.bias_variance.reshape(()))
        value = log_marginal_likelihood(current, xd, yb.T, likelihood.noise.reshape(()),
                                        kernel=kernel, dtype=dtype, widths=widths)
        for _, module, prior, closure, _ in model.named_priors():
            value = value + prior.log_prob(closure(module)).sum()
        return value

    history: list[dict] = []
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"fit {kernel.upper()} hyperparameters", leave=False)
    # dense Cholesky throughout: CG/Lanczos estimates would make the fitted values noisy
    with gpytorch.settings.fast_computations(False, False, False), \
            gpytorch.settings.max_cholesky_size(10 ** 9):
        for step in range(steps):
            def closure():
                opt.zero_grad()
                loss = -objective()
                loss.backward()
                return loss
            record = {"step": step,
                      "weight_variance": float(kern.weight_variance.detach()),
                      "bias_variance": float(kern.bias_variance.detach()),
                      "noise_variance": float(likelihood.noise.detach())}
            # the loss an optimizer step returns is the one at the parameters it started from
            record["log_marginal_likelihood"] = -float(opt.step(closure).detach())
            if not all(math.isfinite(v) for v in record.values()):
                raise FloatingPointError(f"hyperparameter fit diverged at step {step}: {record}; "
                                         f"lower lr or raise noise_variance")
            history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lml=f"{record['log_marginal_likelihood']:.4g}",
                                w=f"{record['weight_variance']:.3g}",
                                b=f"{record['bias_variance']:.3g}",
                                noise=f"{record['noise_variance']:.2g}")
    if bar is not None:
        bar.close()
    model.eval()
    fitted = kern.architecture
    return FitResult(fitted, float(likelihood.noise.detach()), history, model)
