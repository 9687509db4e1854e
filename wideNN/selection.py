"""Model selection by marginal likelihood (Lee et al. 2018, "Deep Neural Networks as Gaussian Processes"): fit σ_w², σ_b² and the noise σ² of
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
import os
from typing import Any, Sequence

import gpytorch
import torch
from torch import Tensor

from . import _checkpoint
from ._checks import check_finite, check_float_dtype, check_inputs, check_int, check_positive, check_variance, merge_options
from .architecture import Architecture
from .gp_kernels import NNGPKernel, NTKKernel
from .prediction import log_marginal_likelihood

__all__ = ["FitOptions", "FitResult", "fit_hyperparameters"]


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


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """The keyword options of :func:`fit_hyperparameters` (each may also be passed by name).

    Attributes:
        kernel: ``"nngp"`` (the Bayesian NNGP of Lee et al. 2018) or ``"ntk"``.
        steps: number of optimizer steps.
        lr: learning rate of the optimizer.
        noise_variance: initial σ² (≥ ``min_noise``, the lower bound of its constraint).
        learn_noise: whether σ² is fitted.
        learn: which variances are fitted (``"weight_variance"``, ``"bias_variance"``).
        optimizer: ``"adam"`` or ``"lbfgs"`` (``torch.optim``), on the raw (softplus-inverse)
            parameters.
        min_noise: lower bound of σ².
        min_init: variances starting at 0 start at this value instead (σ² = 0 maps to a raw
            parameter of −∞, from which no gradient step can move).
        widths: hidden widths (the standard-parameterization NTK needs them).
        dtype: dtype of the fit (default float64).
        progress: show a tqdm progress bar with the current log marginal likelihood.
        checkpoint: a file path: the fit's state (parameters, optimizer state, history) is
            saved there every ``checkpoint_every`` steps, every few seconds of wall time and at the end, and a later call with
            the same architecture, data and options resumes from it (results identical to an
            uninterrupted fit); a file of another fit is refused.
        checkpoint_every: steps between checkpoints.
    """

    kernel: str = "nngp"
    steps: int = 100
    lr: float = 0.05
    noise_variance: float = 1e-2
    learn_noise: bool = True
    learn: Sequence[str] = ("weight_variance", "bias_variance")
    optimizer: str = "adam"
    min_noise: float = 1e-6
    min_init: float = 1e-4
    widths: Sequence[int] | int | None = None
    dtype: torch.dtype = torch.float64
    progress: bool = True
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        check_float_dtype(self.dtype)
        if self.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(f"dtype {self.dtype} is too coarse for a marginal likelihood; use "
                            f"torch.float64 (or torch.float32)")
        if self.kernel not in ("nngp", "ntk"):
            raise ValueError(f"kernel must be 'nngp' or 'ntk', got {self.kernel!r}")
        check_int("steps", self.steps, minimum=0)
        check_int("checkpoint_every", self.checkpoint_every)
        object.__setattr__(self, "lr", check_positive("lr", self.lr))  # bool / str: TypeError
        if not isinstance(self.learn_noise, bool):
            raise TypeError(f"learn_noise must be True or False, got {self.learn_noise!r}")
        for name in ("noise_variance", "min_noise", "min_init"):
            if isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a number, got bool")
            check_variance(name, getattr(self, name), scalar=True)
        if isinstance(self.learn, str) or not all(isinstance(v, str) for v in self.learn):
            raise TypeError(f"learn must be a sequence of names, got {self.learn!r}")
        unknown = set(self.learn) - {"weight_variance", "bias_variance"}
        if unknown:
            raise ValueError(f"learn may name 'weight_variance' and 'bias_variance', got {sorted(unknown)}")
        if not self.learn and not self.learn_noise and self.steps > 0:
            raise ValueError("nothing to fit: learn is empty and learn_noise is False")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")


def _check_data(arch: Architecture, x: Tensor, y: Tensor) -> None:
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a wideNN.Architecture, got {type(arch).__name__}")
    check_inputs(x, None, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (N, features), got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.dim() not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be a tensor of shape ({x.shape[0]},) or ({x.shape[0]}, O), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if not torch.is_floating_point(y):
        raise ValueError("y must be a floating-point tensor without NaN or inf entries")
    check_finite("y", y)


@dataclasses.dataclass
class _Problem:
    """The GP being fitted: model, kernel, likelihood, data in the fit's dtype, objective."""

    model: _SharedKernelGP
    kern: NNGPKernel | NTKKernel
    likelihood: gpytorch.likelihoods.GaussianLikelihood
    start: Architecture
    x: Tensor
    y: Tensor  # (N,) or (O, N)
    o: FitOptions

    def state(self) -> dict:
        return {"weight_variance": float(self.kern.weight_variance.detach()),
                "bias_variance": float(self.kern.bias_variance.detach()),
                "noise_variance": float(self.likelihood.noise.detach())}

    def objective(self) -> Tensor:
        """log p(Y | X) at the current hyperparameters, plus the log priors if any."""
        if self.y.dim() == 1:
            # ExactMarginalLogLikelihood divides by N; ×N it is log p(y | X)
            mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.model)
            return mll(self.model(self.x), self.y) * self.x.shape[0]
        # O outputs share K + σ²I: one Cholesky serves them all, where GPyTorch's batch GP
        # would factor O identical copies.  Same value as the batch MLL (tests check it).
        current = self.start.replace(weight_variance=self.kern.weight_variance.reshape(()),
                                     bias_variance=self.kern.bias_variance.reshape(()))
        value = log_marginal_likelihood(current, self.x, self.y.T, self.likelihood.noise.reshape(()),
                                        kernel=self.o.kernel, dtype=self.o.dtype, widths=self.o.widths)
        for _, module, prior, closure, _ in self.model.named_priors():
            value = value + prior.log_prob(closure(module)).sum()
        return value


def _problem(arch: Architecture, x: Tensor, y: Tensor, o: FitOptions) -> _Problem:
    learn = set(o.learn)
    start = arch.replace(**{name: max(float(getattr(arch, name)), o.min_init) if name in learn
                            else float(getattr(arch, name)) for name in ("weight_variance", "bias_variance")})
    kern = (NNGPKernel if o.kernel == "nngp" else NTKKernel)(start, widths=o.widths)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(o.min_noise))
    xd = x.to(o.dtype)
    yb = y.to(dtype=o.dtype, device=x.device)
    yb = yb.T.contiguous() if yb.dim() == 2 else yb
    model = _SharedKernelGP(xd, yb, likelihood, kern).to(dtype=o.dtype, device=x.device)
    # set after the cast: a float32 raw parameter would keep σ² rounded to float32
    likelihood.noise = torch.tensor(max(float(o.noise_variance), o.min_noise * (1 + 1e-6)),
                                    dtype=o.dtype, device=x.device)
    for name in ("weight_variance", "bias_variance"):
        getattr(kern, f"raw_{name}").requires_grad_(name in learn)
    likelihood.raw_noise.requires_grad_(o.learn_noise)
    return _Problem(model, kern, likelihood, start, xd, yb, o)


def _optimizer(params: list[Tensor], o: FitOptions) -> torch.optim.Optimizer:
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr)
    # one iteration per step (for progress and history), but room for the line search:
    # torch's default max_eval = 1.25·max_iter would allow a single trial point, and a
    # first trial that overshoots then leaves the parameters where they were
    return torch.optim.LBFGS(params, lr=o.lr, max_iter=1, max_eval=25, line_search_fn="strong_wolfe")


def _steps(prob: _Problem, opt: torch.optim.Optimizer, history: list[dict], save) -> None:
    """Optimizer steps ``len(history) .. steps-1``; ``save(step)`` may checkpoint before each."""
    o = prob.o
    bar = None
    if o.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=o.steps, initial=len(history), desc=f"fit {o.kernel.upper()} hyperparameters", leave=False)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = -prob.objective()
        loss.backward()
        return loss

    try:
        for step in range(len(history), o.steps):
            save(step)
            record = {"step": step, **prob.state()}
            # the loss an optimizer step returns is the one at the parameters it started from
            record["log_marginal_likelihood"] = -float(opt.step(closure).detach())
            if not all(math.isfinite(v) for v in record.values()):
                raise FloatingPointError(f"hyperparameter fit diverged at step {step}: {record}; "
                                         f"lower lr or raise noise_variance")
            history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lml=f"{record['log_marginal_likelihood']:.4g}", w=f"{record['weight_variance']:.3g}",
                                b=f"{record['bias_variance']:.3g}", noise=f"{record['noise_variance']:.2g}")
    finally:
        if bar is not None:
            bar.close()


def fit_hyperparameters(arch: Architecture, x: Tensor, y: Tensor, *, options: FitOptions | None = None,
                        **keywords: Any) -> FitResult:
    """Maximize the log marginal likelihood of (x, y) over σ_w², σ_b² and σ²:

        log p(Y | X) = −½ Σ_o y_oᵀ (K + σ²I)⁻¹ y_o − (O/2) log det(K + σ²I) − (N·O/2) log 2π,

    K the architecture's NNGP (or NTK) on x, O the number of outputs (columns of y), which
    share the hyperparameters.  Maximized with a torch optimizer on GPyTorch's raw parameters.

    Args:
        arch: starting point; its depth, activation and parameterization stay fixed.
        x: (N, d) training inputs.
        y: (N,) or (N, O) targets.
        options: a :class:`FitOptions`; any of its fields may instead be passed by name
            (``fit_hyperparameters(arch, x, y, kernel="ntk", steps=50, lr=0.1)``).
        **keywords (Any): fields of :class:`FitOptions` (``kernel``, ``steps``, ``lr``,
            ``noise_variance``, ``learn_noise``, ``learn``, ``optimizer``, ``min_noise``,
            ``min_init``, ``widths``, ``dtype``, ``progress``, ``checkpoint``,
            ``checkpoint_every``).

    Returns a ``FitResult`` (unpacks as ``arch, noise_variance, history``).
    """
    o = merge_options(options, keywords, FitOptions)
    _check_data(arch, x, y)
    prob = _problem(arch, x, y, o)
    opt = _optimizer([p for p in prob.model.parameters() if p.requires_grad], o)
    history: list[dict] = []
    save = _resume(prob, opt, history, arch, x, y)
    prob.model.train()
    # dense Cholesky throughout: CG/Lanczos estimates would make the fitted values noisy
    with gpytorch.settings.fast_computations(False, False, False), \
            gpytorch.settings.max_cholesky_size(10 ** 9):
        _steps(prob, opt, history, save)
    save(o.steps, final=True)
    prob.model.eval()
    return FitResult(prob.kern.architecture, float(prob.likelihood.noise.detach()), history, prob.model)


def _resume(prob: _Problem, opt: torch.optim.Optimizer, history: list[dict], arch: Architecture,
            x: Tensor, y: Tensor):
    """Restore a checkpoint of this fit into (prob, opt, history); return the saving callback."""
    o = prob.o
    path = _checkpoint.check_path(o.checkpoint)
    if path is None:
        return lambda step, final=False: None
    fields = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)
              if f.name not in ("progress", "checkpoint", "checkpoint_every")}
    key = _checkpoint.fingerprint("fit_hyperparameters", repr(arch), x, y, sorted(fields.items()))
    state = _checkpoint.load(path, key)
    if state is not None:
        prob.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history.extend(state["history"])
    schedule = _checkpoint.Schedule(o.checkpoint_every, len(history))

    def save(step: int, final: bool = False) -> None:
        if final or schedule.due(step):
            schedule.write(path, key, {"model": prob.model.state_dict(), "optimizer": opt.state_dict(),
                                       "history": list(history)})
    return save
