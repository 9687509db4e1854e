"""Training finite networks under the time convention of docs/design.md.

Full-batch gradient descent on

    L(θ) = (1/2N) Σ_i ‖f(x_i; θ) − y_i‖²

at learning rate η is the Euler discretization of the gradient flow θ̇ = −η ∇L, under which the
training-set outputs obey ḟ = −(η/N) Θ̂ (f − y).  So ``train(net, x, y, steps=s,
learning_rate=η)`` is the finite-network counterpart of ``wn.posterior(..., t=s,
learning_rate=η)``, and full-batch GD is stable for a linear(ized) model iff
η < ``max_learning_rate`` = 2N / λ_max(Θ).

The loop itself (shared with ``Ensemble.train``) and ``TrainHistory`` live in ``wideNN._train_loop``;
the optimizers are ``torch.optim``'s (``wideNN._optim``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_inputs, merge_options
from ._optim import OptimizerOptions
from ._train_loop import (LoopHooks, LoopOptions, TrainHistory, _check_data, _check_hyper, eval_sets,
                          _check_positive_int, _chunked_eval, run_loop)

__all__ = ["TrainHistory", "TrainOptions", "train", "max_learning_rate"]


def _readout_parameters(model: nn.Module) -> list[Tensor]:
    """The readout (last layer) parameters: ``model.readout_parameters()`` if defined, the last
    Dense of a ``Network``, else the parameters of the last submodule that owns any."""
    from .networks import Network

    if hasattr(model, "readout_parameters"):
        return list(model.readout_parameters())
    if isinstance(model, Network):
        return list(model.dense_layers()[-1].parameters())
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise ValueError("the model has no parameters")
    return list(owners[-1].parameters(recurse=False))


def _select_parameters(model: nn.Module, trainable: Any) -> list[Tensor]:
    if isinstance(trainable, str):
        if trainable == "all":
            params = [p for p in model.parameters() if p.requires_grad]
        elif trainable == "readout":
            params = _readout_parameters(model)
        else:
            raise ValueError(f"trainable must be 'all', 'readout' or an iterable of parameters, got {trainable!r}")
    else:
        params = list(trainable)
        owned = {id(p) for p in model.parameters()}
        if any(id(p) not in owned for p in params):
            raise ValueError("trainable contains a tensor that is not a parameter of the model")
    if not params:
        raise ValueError("no trainable parameters selected")
    if any(not p.requires_grad for p in params):
        raise ValueError("a selected parameter has requires_grad=False")
    return params


def _default_ntk_fn(mode: str) -> Callable[[nn.Module, Tensor], Tensor]:
    from .empirical import empirical_ntk  # lazily: empirical imports torch.func machinery

    return lambda m, xs: empirical_ntk(m, xs, mode=mode)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The keyword options of :func:`train` (each may also be passed to ``train`` by name).

    Attributes:
        batch_size: minibatch size for ``"sgd"``/``"momentum"``/``"adam"`` (``None``: full batch).
        trainable: ``"all"``, ``"readout"`` (only the last layer: the NNGP-posterior sampler
            of Lee et al. 2019) or an explicit iterable of the model's parameters.
        momentum: μ of ``"momentum"`` (heavy ball, v ← μv + g, θ ← θ − ηv).
        betas: (β₁, β₂) of ``"adam"``.
        eps: ε of ``"adam"``.
        seed: seed of the minibatch order (reshuffled every epoch).
        eval_data: ``(x_test, y_test)`` or ``{name: (x, y)}``; records ``{name}_loss`` (and
            ``{name}_accuracy`` for ``"xent"``) every ``eval_every`` steps and at the end.
        metrics: callback ``model -> {name: value}`` recorded alongside.
        eval_every: steps between evaluations (default steps // 100).
        ntk_at: steps at which to snapshot the empirical NTK on ``ntk_x`` (default ``x``) with
            ``ntk_fn(model, ntk_x)`` (default ``wn.empirical_ntk(model, ·, mode=ntk_mode)``);
            ``history.ntk_drift()`` then gives ‖Θ̂_s − Θ̂_0‖_F/‖Θ̂_0‖_F.
        ntk_x: inputs of the NTK snapshots.
        ntk_fn: the NTK of a snapshot.
        ntk_mode: ``mode`` of the default ``ntk_fn``.
        progress: tqdm bar; ``None`` shows it for ≥ 200 steps when stderr is a terminal.
        check_every: how often to test the loss for NaN/inf (1 on CPU, 25 on CUDA).
        checkpoint: a file path: the loop's state (parameters and buffers, optimizer state,
            history) is saved there atomically every ``checkpoint_every`` steps, every few
            seconds of wall time (so frequent preemption still advances) and at the end, and a
            later call with the same model (class, parameters and buffers, frozen ones
            included), data and options resumes from it (results identical to an uninterrupted
            run); a file of another run is refused.  Metrics must then be numbers or tensors.
        checkpoint_every: steps between checkpoints.
    """

    batch_size: int | None = None
    trainable: str | Iterable[Tensor] = "all"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int | None = None
    eval_data: Mapping[str, tuple[Tensor, Tensor]] | tuple[Tensor, Tensor] | None = None
    metrics: Callable[[nn.Module], Mapping[str, Any]] | None = None
    eval_every: int | None = None
    ntk_at: Sequence[int] | None = None
    ntk_x: Tensor | None = None
    ntk_fn: Callable[[nn.Module, Tensor], Tensor] | None = None
    ntk_mode: str = "trace"
    progress: bool | None = None
    check_every: int | None = None
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 100


def _evaluate_hook(model: nn.Module, o: TrainOptions, loss: str) -> Callable[[], dict] | None:
    """The loop's ``evaluate`` callback for ``eval_data`` and ``metrics`` (checked here)."""
    sets = eval_sets(o.eval_data, loss)
    if not sets and o.metrics is None:
        return None

    def evaluate() -> dict[str, Any]:
        res: dict[str, Any] = {}
        for name, (xe, ye) in sets.items():
            for k, v in _chunked_eval(model, xe, ye, loss).items():
                res[f"{name}_{k}"] = float(v)
        if o.metrics is not None:
            res.update(o.metrics(model))
        return res
    return evaluate


def _snapshot_hook(model: nn.Module, x: Tensor, o: TrainOptions) -> Callable[[], Tensor] | None:
    """The loop's ``snapshot`` callback (the empirical NTK on ``ntk_x``), or None."""
    if not o.ntk_at:
        return None
    xs = x if o.ntk_x is None else o.ntk_x
    check_inputs(xs, name1="ntk_x")
    if xs.shape[1:] != x.shape[1:] or xs.dtype != x.dtype:
        raise ValueError(f"ntk_x must hold examples like x ({tuple(x.shape[1:])}, {x.dtype}), got "
                         f"{tuple(xs.shape[1:])}, {xs.dtype}")
    fn = o.ntk_fn if o.ntk_fn is not None else _default_ntk_fn(o.ntk_mode)

    def snapshot() -> Tensor:
        with torch.enable_grad():
            return fn(model, xs).detach().clone()
    return snapshot


# ----------------------------------------------------------------------------- public API
def train(model: nn.Module, x: Tensor, y: Tensor, steps: int = 1000, learning_rate: float = 1.0,
          optimizer: str = "gd", loss: str = "mse", *, options: TrainOptions | None = None,
          **keywords: Any) -> TrainHistory:
    """Train ``model`` in place and return its ``TrainHistory``.

    Loss (``loss="mse"``): L(θ) = (1/2N) Σ_i ‖f(x_i; θ) − y_i‖², so full-batch GD
    θ_{s+1} = θ_s − η ∇L(θ_s) for s steps approximates gradient flow to time t = s with
    f_t(X) = y + e^{−ηtΘ/N}(f_0(X) − y) in the linear regime — the convention of
    ``wn.posterior(..., t, learning_rate=η)``.  ``loss="xent"``: mean softmax cross-entropy,
    with integer labels (N,) or target probabilities (N, O).

    Args:
        model: any ``nn.Module`` mapping a batch of N inputs to (N, O) (a ``Network``, a CNN
            from a composed description's ``.build``, ``wn.linearize(net)``, …).
        x: training inputs (N, d), or channel-first (N, C, L) / (N, C, H, W) for
            convolutional models.
        y: targets (N, O) (``"xent"``: also labels (N,)).
        steps: number of updates (0 only evaluates).
        learning_rate: η > 0.
        optimizer: ``"gd"`` (full batch), ``"sgd"`` (minibatches of ``batch_size``, reshuffled
            every epoch from ``seed``), ``"momentum"`` (heavy ball, v ← μv + g, θ ← θ − ηv) or
            ``"adam"`` (``torch.optim`` implements each); all accept ``batch_size`` except ``"gd"``.
        loss: ``"mse"`` or ``"xent"``.
        options: a :class:`TrainOptions`; any of its fields may instead be passed by name
            (``train(net, x, y, batch_size=8, seed=0, eval_data=(xt, yt))``).
        **keywords (Any): fields of :class:`TrainOptions` (``batch_size``, ``trainable``,
            ``momentum``, ``betas``, ``eps``, ``seed``, ``eval_data``, ``metrics``,
            ``eval_every``, ``ntk_at``, ``ntk_x``, ``ntk_fn``, ``ntk_mode``, ``progress``,
            ``check_every``, ``checkpoint``, ``checkpoint_every``).

    Training stops early, with a ``RuntimeWarning`` and ``history.diverged = True``, when the
    loss becomes non-finite; a loss that grows and comes back down is recorded as is.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    o = merge_options(options, keywords, TrainOptions)
    steps, lr = _check_hyper(steps, learning_rate, optimizer, loss)
    _check_data(x, y, loss)
    batch_size = None if o.batch_size is None else _check_positive_int("batch_size", o.batch_size)
    params = _select_parameters(model, o.trainable)
    p0 = params[0]
    if p0.device != x.device:
        raise ValueError(f"x is on {x.device} but the model's parameters are on {p0.device}")
    if p0.dtype != x.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model's parameters have dtype {p0.dtype}")
    loop = LoopOptions(steps, OptimizerOptions(optimizer, lr, o.momentum, o.betas, o.eps), loss,
                       batch_size, o.seed, o.eval_every, tuple(o.ntk_at or ()), o.progress,
                       o.check_every, o.checkpoint, o.checkpoint_every)
    hooks = LoopHooks(model, 0, _evaluate_hook(model, o, loss), _snapshot_hook(model, x, o),
                      identity=_identity(model) if o.checkpoint is not None else (),
                      buffers=tuple(model.buffers()))
    return run_loop(params, x, y, loop, hooks)


def _identity(model: nn.Module) -> tuple:
    """What identifies a model's run besides its trained parameters (for a checkpoint's
    fingerprint): its class and every tensor of its state, frozen parameters and buffers included."""
    return (type(model).__qualname__, [t for t in model.state_dict().values() if isinstance(t, Tensor)])


def max_learning_rate(kernel: Any, x: Tensor | None = None, *,
                      widths: Sequence[int] | int | None = None) -> float:
    """The largest stable full-batch GD learning rate under L = (1/2N) Σ‖f − y‖²:

        η_max = 2N / λ_max(Θ)

    (GD on a linear model multiplies the training residual by I − ηΘ/N each step).

    ``kernel`` is one of:
      - an ``Architecture`` or a composed description (anything with an analytic ``.ntk``):
        Θ is its analytic NTK ``arch.ntk(x)`` (``widths`` passed on when given: the
        standard-parameterization MLP needs them); x may be (N, d) or (N, C, H, W);
      - an ``nn.Module``: Θ is its empirical NTK on x (all outputs, ``mode="full"``);
      - a kernel matrix (N, N), or a full NTK (N, N, O, O), on the training set.

    Above η_max the linearized model diverges; a finite network may instead "catapult": the
    loss spikes, the kernel shrinks, and training converges (visible in ``train``'s history).
    """
    if isinstance(kernel, nn.Module):
        if x is None:
            raise ValueError("max_learning_rate(model, x) needs the training inputs x")
        check_inputs(x, name1="x")
        theta = _default_ntk_fn("full")(kernel, x).detach()
    elif not isinstance(kernel, Tensor) and callable(getattr(kernel, "ntk", None)):
        if x is None:
            raise ValueError("max_learning_rate(arch, x) needs the training inputs x")
        check_inputs(x, name1="x")
        theta = kernel.ntk(x) if widths is None else kernel.ntk(x, widths=widths)
    elif isinstance(kernel, Tensor):
        theta = kernel
    else:
        raise TypeError(f"kernel must be an Architecture (or a composed description with .ntk), "
                        f"an nn.Module or a kernel matrix, got {type(kernel).__name__}")
    if theta.numel() == 0:
        raise ValueError(f"the kernel matrix is empty (shape {tuple(theta.shape)})")
    if theta.dim() == 4:
        n, m, o, o2 = theta.shape
        if n != m or o != o2:
            raise ValueError(f"a full NTK must have shape (N, N, O, O), got {tuple(theta.shape)}")
        mat = theta.permute(0, 2, 1, 3).reshape(n * o, n * o)
    elif theta.dim() == 2:
        n = theta.shape[0]
        if theta.shape[1] != n:
            raise ValueError(f"the kernel matrix must be square, got {tuple(theta.shape)}")
        mat = theta
    else:
        raise ValueError(f"the kernel must be (N, N) or (N, N, O, O), got shape {tuple(theta.shape)}")
    if mat.is_meta:
        raise ValueError("the kernel matrix is a meta tensor (no data)")
    if not torch.is_floating_point(mat) or not bool(torch.isfinite(mat).all()):
        raise ValueError("the kernel matrix must be floating point and finite")
    tol = 100 * mat.shape[-1] * torch.finfo(mat.dtype).eps
    mat = mat.detach().to(torch.float64)
    scale = float(mat.abs().max())
    asym = float((mat - mat.T).abs().max())
    if asym > tol * scale:
        raise ValueError(f"the kernel matrix is not symmetric (max |Θ − Θᵀ| = {asym:.3g} vs max |Θ| = "
                         f"{scale:.3g}): an NTK is symmetric positive semi-definite")
    lams = torch.linalg.eigvalsh(0.5 * (mat + mat.T))
    lam = float(lams[-1])
    if not lam > 0:
        raise ValueError(f"the kernel has no positive eigenvalue (λ_max = {lam:g})")
    if float(lams[0]) < -tol * lam:
        raise ValueError(f"the kernel matrix is indefinite (smallest eigenvalue {float(lams[0]):.3g}, "
                         f"largest {lam:.3g}): an NTK is positive semi-definite, and the GD "
                         f"stability bound 2N/λ_max assumes it")
    return 2.0 * n / lam
