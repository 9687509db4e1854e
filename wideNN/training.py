"""Training finite networks under the DESIGN.md time convention.

Full-batch gradient descent on

    L(θ) = (1/2N) Σ_i ‖f(x_i; θ) − y_i‖²

at learning rate η is the Euler discretization of the gradient flow θ̇ = −η ∇L, under which the
training-set outputs obey ḟ = −(η/N) Θ̂ (f − y).  So ``train(net, x, y, steps=s,
learning_rate=η)`` is the finite-network counterpart of ``wn.posterior(..., t=s,
learning_rate=η)``, and full-batch GD is stable for a linear(ized) model iff
η < ``max_learning_rate`` = 2N / λ_max(Θ).
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_inputs, check_int, check_positive
from ._optim import LOSSES, OPTIMIZERS, Optimizer, loss_values

__all__ = ["TrainHistory", "train", "max_learning_rate"]

# Evaluation and final-loss forwards run under no_grad in chunks of this many rows so that
# they never need more memory than training itself on large sets.
_EVAL_CHUNK = 4096


@dataclasses.dataclass
class TrainHistory:
    """What ``train`` / ``Ensemble.train`` record.

    Attributes:
        loss: (steps_done + 1,) tensor for one model, (steps_done + 1, size) for an ensemble.
            ``loss[s]`` is the training loss at the parameters θ_s *before* update s (for
            minibatch training: the loss of the batch used at step s); the last entry is the
            full-training-set loss at the final parameters.  Nothing is smoothed or clipped,
            so a spike (the catapult regime above ``max_learning_rate``) stays visible.
        steps: number of updates actually applied (< requested if training diverged).
        metric_steps / metrics: the steps at which ``eval_data`` / ``metrics`` were evaluated
            and, per metric name, one value per such step.
        ntk_steps / ntk: the steps of the requested empirical-NTK snapshots and the kernels.
        diverged: True if training stopped on a non-finite loss; ``message`` says where.
    """

    loss: Tensor
    steps: int
    learning_rate: float
    optimizer: str
    loss_name: str
    batch_size: int | None = None
    metric_steps: list[int] = dataclasses.field(default_factory=list)
    metrics: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    ntk_steps: list[int] = dataclasses.field(default_factory=list)
    ntk: list[Tensor] = dataclasses.field(default_factory=list)
    diverged: bool = False
    message: str = ""

    @property
    def final_loss(self) -> Tensor:
        """Loss at the final parameters (a scalar, or (size,) for an ensemble)."""
        return self.loss[-1]

    @property
    def peak_step(self) -> Tensor:
        """Step of the largest recorded loss (per member for an ensemble)."""
        return self.loss.argmax(dim=0)

    @property
    def spike(self) -> Tensor:
        """max_s loss[s] / loss[0]: ≫ 1 flags a catapult (or a divergence)."""
        return self.loss.max(dim=0).values / self.loss[0]

    def ntk_drift(self) -> Tensor:
        """‖Θ̂_s − Θ̂_{s₀}‖_F / ‖Θ̂_{s₀}‖_F for each snapshot s, relative to the first one s₀."""
        if not self.ntk:
            raise ValueError("no NTK snapshots were recorded; pass ntk_at=[...] to train()")
        ref = self.ntk[0]
        return torch.stack([torch.linalg.norm((k - ref).flatten()) for k in self.ntk]) / torch.linalg.norm(ref.flatten())

    def __repr__(self) -> str:
        fin = self.loss[-1]
        fin_s = f"{float(fin):.4g}" if fin.dim() == 0 else f"mean {float(fin.mean()):.4g}"
        return (f"TrainHistory(steps={self.steps}, optimizer={self.optimizer!r}, "
                f"learning_rate={self.learning_rate:g}, loss={self.loss_name!r}, "
                f"initial={float(self.loss[0].mean()):.4g}, final={fin_s}, diverged={self.diverged})")


# ----------------------------------------------------------------------------- validation
def _check_positive_int(name: str, v: Any, allow_zero: bool = False) -> int:
    return check_int(name, v, minimum=0 if allow_zero else 1)


def _check_hyper(steps: Any, learning_rate: Any, optimizer: str, loss: str) -> tuple[int, float]:
    steps = _check_positive_int("steps", steps, allow_zero=True)
    lr = check_positive("learning_rate", learning_rate)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return steps, lr


def _check_data(x: Tensor, y: Any, loss: str, name_x: str = "x", name_y: str = "y") -> None:
    check_inputs(x, name1=name_x)
    if x.dim() != 2:
        raise ValueError(f"{name_x} must have shape (N, features), got {tuple(x.shape)}")
    if not isinstance(y, Tensor):
        raise TypeError(f"{name_y} must be a torch.Tensor, got {type(y).__name__}")
    if y.device != x.device:
        raise ValueError(f"{name_y} is on {y.device} but {name_x} is on {x.device}")
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"{name_y} has {y.shape[0] if y.dim() else 0} rows but {name_x} has {x.shape[0]}")
    if loss == "mse":
        if not torch.is_floating_point(y):
            raise TypeError(f"{name_y} must be a floating-point tensor for loss='mse', got {y.dtype}")
        if y.dim() != 2:
            raise ValueError(f"{name_y} must have shape (N, outputs) for loss='mse', got {tuple(y.shape)}; "
                             f"for one output use {name_y}.unsqueeze(-1)")
    else:
        if torch.is_floating_point(y):
            if y.dim() != 2:
                raise ValueError(f"{name_y} must be class indices (N,) or probabilities (N, classes) "
                                 f"for loss='xent', got shape {tuple(y.shape)}")
        elif y.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            if y.dim() != 1:
                raise ValueError(f"integer class labels {name_y} must have shape (N,), got {tuple(y.shape)}")
            if y.numel() and int(y.min()) < 0:
                raise ValueError(f"class labels {name_y} must be non-negative, got min {int(y.min())}")
        else:
            raise TypeError(f"{name_y} must be integer labels or float probabilities, got {y.dtype}")
    if torch.is_floating_point(y) and not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name_y} contains NaN or inf entries")


def _check_output(out: Tensor, y: Tensor, loss: str, what: str = "model output", lead: int = 0) -> None:
    core = out.shape[lead:]
    if len(core) != 2:
        raise ValueError(f"{what} must have shape (N, outputs), got {tuple(core)}")
    if loss == "mse" or torch.is_floating_point(y):
        if tuple(core) != tuple(y.shape):
            raise ValueError(f"targets y have shape {tuple(y.shape)} but the {what} has shape "
                             f"{tuple(core)}; they must match")
    elif int(y.max()) >= core[-1]:
        raise ValueError(f"class label {int(y.max())} out of range for {core[-1]} outputs")


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


# ----------------------------------------------------------------------------- the loop
def _batches(n: int, batch_size: int | None, seed: int | None, device: torch.device):
    """Row-index batches, forever: full batch, or reshuffled minibatches every epoch."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(int(seed))
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, batch_size):
            yield perm[i:i + batch_size]


def _chunked_loss(forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss: str) -> Tensor:
    n = x.shape[0]
    total = None
    with torch.no_grad():
        for i in range(0, n, _EVAL_CHUNK):
            xb, yb = x[i:i + _EVAL_CHUNK], y[i:i + _EVAL_CHUNK]
            out = forward(xb)
            if i == 0:  # also reached with steps=0 and for eval_data, which no step checks
                _check_output(out, yb, loss, what="model output on these inputs", lead=out.dim() - 2)
            part = loss_values(out, yb, loss) * xb.shape[0]
            total = part if total is None else total + part
    return total / n


def _chunked_eval(forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {"loss": _chunked_loss(forward, x, y, loss)}
    if loss == "xent":
        correct = None
        with torch.no_grad():
            for i in range(0, x.shape[0], _EVAL_CHUNK):
                pred = forward(x[i:i + _EVAL_CHUNK]).argmax(-1)
                yb = y[i:i + _EVAL_CHUNK]
                lab = yb.argmax(-1) if torch.is_floating_point(yb) else yb
                c = (pred == lab).sum(-1)
                correct = c if correct is None else correct + c
        out["accuracy"] = correct.to(torch.float64) / x.shape[0]
    return out


def _progress(steps: int, progress: bool | None):
    from tqdm.auto import tqdm

    if progress is None:
        progress = steps >= 200 and sys.stderr.isatty()
    return tqdm(total=steps, disable=not progress, desc="train", leave=False)


def _fit(params: list[Tensor], forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *,
         steps: int, learning_rate: float, optimizer: str, loss: str, batch_size: int | None,
         seed: int | None, momentum: float, betas: tuple[float, float], eps: float,
         lead: int, evaluate: Callable[[], Mapping[str, Any]] | None, eval_every: int | None,
         snapshot: Callable[[], Tensor] | None, ntk_at: Sequence[int],
         progress: bool | None, check_every: int | None) -> TrainHistory:
    """The loop shared by ``train`` and ``Ensemble.train``: ``forward(x_batch)`` returns
    outputs with ``lead`` leading model dims; the summed per-model loss is differentiated
    with respect to ``params`` (so stacked ensemble members get their own gradients)."""
    n = x.shape[0]
    if optimizer == "gd" and batch_size is not None and batch_size < n:
        raise ValueError(f"optimizer='gd' is full-batch; for minibatches of {batch_size} use optimizer='sgd'")
    opt = Optimizer(optimizer, learning_rate, momentum=momentum, betas=betas, eps=eps)
    if check_every is None:
        # a host sync per step is free on the CPU but stalls a GPU queue
        check_every = 1 if x.device.type == "cpu" else 25
    check_every = _check_positive_int("check_every", check_every)
    ntk_set = set(int(s) for s in ntk_at)
    if any(s < 0 or s > steps for s in ntk_set):
        raise ValueError(f"ntk_at must contain steps in [0, {steps}], got {sorted(ntk_set)}")
    if eval_every is None:
        eval_every = max(1, steps // 100)
    eval_every = _check_positive_int("eval_every", eval_every)

    hist = TrainHistory(loss=torch.empty(0), steps=0, learning_rate=learning_rate,
                        optimizer=optimizer, loss_name=loss, batch_size=batch_size)
    buf: Tensor | None = None
    batches = _batches(n, batch_size, seed, x.device)
    checked = 0  # losses [0, checked) are known finite

    def record_eval(s: int) -> None:
        if evaluate is None:
            return
        hist.metric_steps.append(s)
        for k, v in evaluate().items():
            hist.metrics.setdefault(k, []).append(v)

    def record_ntk(s: int) -> None:
        if snapshot is not None and s in ntk_set:
            hist.ntk_steps.append(s)
            hist.ntk.append(snapshot())

    def first_bad(upto: int) -> int | None:
        seg = buf[checked:upto]
        ok = torch.isfinite(seg.reshape(seg.shape[0], -1)).all(dim=1)
        if bool(ok.all()):
            return None
        return checked + int((~ok).nonzero()[0, 0])

    bar = _progress(steps, progress)
    done = 0
    bad: int | None = None
    try:
        for s in range(steps):
            record_ntk(s)
            if s % eval_every == 0:
                record_eval(s)
            idx = next(batches)
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            out = forward(xb)
            if s == 0:
                _check_output(out, yb, loss, lead=lead)
            lv = loss_values(out, yb, loss)
            if buf is None:
                buf = torch.empty((steps + 1, *lv.shape), dtype=lv.dtype, device=lv.device)
            buf[s] = lv.detach()
            if (s + 1) % check_every == 0 or s == steps - 1:
                bad = first_bad(s + 1)
                if bad is not None:
                    break
                checked = s + 1
            grads = torch.autograd.grad(lv.sum(), params)
            opt.step(params, grads)
            done = s + 1
            if not bar.disable and s % max(1, steps // 100) == 0:
                bar.set_postfix(loss=f"{float(lv.detach().mean()):.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()

    if bad is not None:
        # with check_every > 1 (the CUDA default) the updates after the first bad loss, up to
        # the check, were applied too: report the first bad step and say so
        applied, done = done, bad
        hist.loss = buf[:bad + 1].cpu()
        hist.steps = bad
        hist.diverged = True
        kind = "NaN" if bool(torch.isnan(buf[bad]).any()) else "inf"
        where = ""
        if lead:
            members = (~torch.isfinite(buf[bad].reshape(-1))).nonzero().flatten().tolist()
            where = f" for ensemble member(s) {members[:10]}{'…' if len(members) > 10 else ''}"
        if applied > bad:
            state = (f"The loss is checked every {check_every} steps (check_every), so "
                     f"{applied - bad} more update(s) were applied after step {bad} and the parameters "
                     f"may be non-finite; pass check_every=1 to stop at the first bad step.")
        else:
            state = "The parameters are left as they were at that step."
        hist.message = (f"training stopped: the loss became {kind}{where} at step {bad} "
                        f"(learning_rate={learning_rate:g}, optimizer={optimizer!r}); the learning rate "
                        f"is probably above the stable range (see wideNN.max_learning_rate). " + state)
        warnings.warn(hist.message, RuntimeWarning, stacklevel=3)
        return hist

    final = _chunked_loss(forward, x, y, loss)
    if buf is None:  # steps == 0
        buf = torch.empty((1, *final.shape), dtype=final.dtype, device=final.device)
    buf[steps] = final
    hist.loss = buf.cpu()
    hist.steps = done
    if not bool(torch.isfinite(final).all()):
        hist.diverged = True
        hist.message = f"training ended with a non-finite loss after {done} steps (learning_rate={learning_rate:g})"
        warnings.warn(hist.message, RuntimeWarning, stacklevel=3)
        return hist
    record_ntk(steps)
    if evaluate is not None and (not hist.metric_steps or hist.metric_steps[-1] != steps):
        record_eval(steps)
    return hist


# ----------------------------------------------------------------------------- NTK snapshots
def _reference_ntk(model: nn.Module, x: Tensor, mode: str = "trace") -> Tensor:
    """Empirical NTK Θ̂ = J Jᵀ of ``model`` on x, column by column: Θ̂ e_k = J (Jᵀ e_k) with one
    VJP and one JVP each, so memory stays O(#params) (never the N·O × P Jacobian).

    Returns "full" (N, N, O, O), "diagonal" (N, N, O) or "trace" (N, N, mean over outputs).
    """
    from torch.func import functional_call, jvp, vjp

    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p):
        return functional_call(model, p, (x,))

    with torch.enable_grad():
        out, pull = vjp(f, params)
        n, o = out.shape
        cols = []
        for k in range(n * o):
            e = torch.zeros(n * o, dtype=out.dtype, device=out.device)
            e[k] = 1.0
            (jt,) = pull(e.reshape(n, o))
            cols.append(jvp(f, (params,), (jt,))[1].detach().reshape(n * o))
    full = torch.stack(cols, dim=1).reshape(n, o, n, o).permute(0, 2, 1, 3)
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    if mode == "diagonal":
        return diag
    if mode == "trace":
        return diag.mean(-1)
    raise ValueError(f"mode must be 'trace', 'diagonal' or 'full', got {mode!r}")


def _default_ntk_fn(mode: str) -> Callable[[nn.Module, Tensor], Tensor]:
    try:  # imported lazily: wideNN.empirical may not exist in every checkout
        from .empirical import empirical_ntk
    except ImportError:
        return lambda m, xs: _reference_ntk(m, xs, mode)
    return lambda m, xs: empirical_ntk(m, xs, mode=mode)


# ----------------------------------------------------------------------------- public API
def train(model: nn.Module, x: Tensor, y: Tensor, steps: int = 1000, learning_rate: float = 1.0,
          optimizer: str = "gd", loss: str = "mse", *, batch_size: int | None = None,
          trainable: str | Iterable[Tensor] = "all", momentum: float = 0.9,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, seed: int | None = None,
          eval_data: Mapping[str, tuple[Tensor, Tensor]] | tuple[Tensor, Tensor] | None = None,
          metrics: Callable[[nn.Module], Mapping[str, Any]] | None = None,
          eval_every: int | None = None, ntk_at: Sequence[int] | None = None,
          ntk_x: Tensor | None = None, ntk_fn: Callable[[nn.Module, Tensor], Tensor] | None = None,
          ntk_mode: str = "trace", progress: bool | None = None,
          check_every: int | None = None) -> TrainHistory:
    """Train ``model`` in place and return its ``TrainHistory``.

    Loss (``loss="mse"``): L(θ) = (1/2N) Σ_i ‖f(x_i; θ) − y_i‖², so full-batch GD
    θ_{s+1} = θ_s − η ∇L(θ_s) for s steps approximates gradient flow to time t = s with
    f_t(X) = y + e^{−ηtΘ/N}(f_0(X) − y) in the linear regime — the convention of
    ``wn.posterior(..., t, learning_rate=η)``.  ``loss="xent"``: mean softmax cross-entropy,
    with integer labels (N,) or target probabilities (N, O).

    Args:
        model: any ``nn.Module`` mapping (N, d) to (N, O) (a ``Network``, ``wn.linearize(net)``, …).
        x, y: training inputs (N, d) and targets (N, O) (``"xent"``: also labels (N,)).
        steps: number of updates (0 only evaluates).
        learning_rate: η > 0.
        optimizer: ``"gd"`` (full batch), ``"sgd"`` (minibatches of ``batch_size``, reshuffled
            every epoch from ``seed``), ``"momentum"`` (heavy ball, v ← μv + g, θ ← θ − ηv) or
            ``"adam"``; all accept ``batch_size`` except ``"gd"``.
        trainable: ``"all"``, ``"readout"`` (only the last layer: the NNGP-posterior sampler
            of Lee et al.) or an explicit iterable of the model's parameters.
        eval_data: ``(x_test, y_test)`` or ``{name: (x, y)}``; records ``{name}_loss`` (and
            ``{name}_accuracy`` for ``"xent"``) every ``eval_every`` steps and at the end.
        metrics: callback ``model -> {name: value}`` recorded alongside.
        ntk_at: steps at which to snapshot the empirical NTK on ``ntk_x`` (default ``x``) with
            ``ntk_fn(model, ntk_x)`` (default ``wn.empirical_ntk(model, ·, mode=ntk_mode)``);
            ``history.ntk_drift()`` then gives ‖Θ̂_s − Θ̂_0‖_F/‖Θ̂_0‖_F.
        progress: tqdm bar; ``None`` shows it for ≥ 200 steps when stderr is a terminal.
        check_every: how often to test the loss for NaN/inf (1 on CPU, 25 on CUDA).

    Training stops early, with a ``RuntimeWarning`` and ``history.diverged = True``, when the
    loss becomes non-finite; a loss that grows and comes back down is recorded as is.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    steps, lr = _check_hyper(steps, learning_rate, optimizer, loss)
    _check_data(x, y, loss)
    if batch_size is not None:
        batch_size = _check_positive_int("batch_size", batch_size)
    params = _select_parameters(model, trainable)
    p0 = params[0]
    if p0.device != x.device:
        raise ValueError(f"x is on {x.device} but the model's parameters are on {p0.device}")
    if p0.dtype != x.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model's parameters have dtype {p0.dtype}")

    sets: dict[str, tuple[Tensor, Tensor]] = {}
    if eval_data is not None:
        if isinstance(eval_data, tuple):
            eval_data = {"test": eval_data}
        for name, pair in eval_data.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"eval_data[{name!r}] must be a pair (x, y)")
            _check_data(pair[0], pair[1], loss, f"eval_data[{name!r}] x", f"eval_data[{name!r}] y")
            sets[name] = (pair[0], pair[1])

    evaluate = None
    if sets or metrics is not None:
        def _evaluate() -> dict[str, Any]:
            res: dict[str, Any] = {}
            for name, (xe, ye) in sets.items():
                for k, v in _chunked_eval(model, xe, ye, loss).items():
                    res[f"{name}_{k}"] = float(v)
            if metrics is not None:
                res.update(metrics(model))
            return res
        evaluate = _evaluate

    snapshot = None
    if ntk_at:
        xs = x if ntk_x is None else ntk_x
        check_inputs(xs, name1="ntk_x")
        fn = ntk_fn if ntk_fn is not None else _default_ntk_fn(ntk_mode)

        def _snapshot() -> Tensor:
            with torch.enable_grad():
                return fn(model, xs).detach().clone()
        snapshot = _snapshot

    return _fit(params, model, x, y, steps=steps, learning_rate=lr, optimizer=optimizer, loss=loss,
                batch_size=batch_size, seed=seed, momentum=momentum, betas=betas, eps=eps, lead=0,
                evaluate=evaluate, eval_every=eval_every, snapshot=snapshot, ntk_at=ntk_at or (),
                progress=progress, check_every=check_every)


def max_learning_rate(kernel: Any, x: Tensor | None = None, *,
                      widths: Sequence[int] | int | None = None) -> float:
    """The largest stable full-batch GD learning rate under L = (1/2N) Σ‖f − y‖²:

        η_max = 2N / λ_max(Θ)

    (GD on a linear model multiplies the training residual by I − ηΘ/N each step).

    ``kernel`` is one of:
      - an ``Architecture``: Θ is its analytic NTK ``arch.ntk(x, widths=widths)``;
      - an ``nn.Module``: Θ is its empirical NTK on x (all outputs, ``mode="full"``);
      - a kernel matrix (N, N), or a full NTK (N, N, O, O), on the training set.

    Above η_max the linearized model diverges; a finite network may instead "catapult": the
    loss spikes, the kernel shrinks, and training converges (visible in ``train``'s history).
    """
    from .architecture import Architecture

    if isinstance(kernel, Architecture):
        if x is None:
            raise ValueError("max_learning_rate(arch, x) needs the training inputs x")
        check_inputs(x, name1="x")
        theta = kernel.ntk(x, widths=widths)
    elif isinstance(kernel, nn.Module):
        if x is None:
            raise ValueError("max_learning_rate(model, x) needs the training inputs x")
        check_inputs(x, name1="x")
        theta = _default_ntk_fn("full")(kernel, x).detach()
    elif isinstance(kernel, Tensor):
        theta = kernel
    else:
        raise TypeError(f"kernel must be an Architecture, an nn.Module or a kernel matrix, got {type(kernel).__name__}")
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
    if not torch.is_floating_point(mat) or not bool(torch.isfinite(mat).all()):
        raise ValueError("the kernel matrix must be floating point and finite")
    mat = mat.detach().to(torch.float64)
    lam = float(torch.linalg.eigvalsh(0.5 * (mat + mat.T))[-1])
    if not lam > 0:
        raise ValueError(f"the kernel has no positive eigenvalue (λ_max = {lam:g})")
    return 2.0 * n / lam
