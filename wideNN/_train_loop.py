"""The training loop shared by ``wn.train`` and ``Ensemble.train``, and what it records.

``_fit`` runs the optimizer over a parameter list for a given forward function, records the
loss at every step (``TrainHistory``), evaluation metrics and NTK snapshots on request, and
stops at the first non-finite loss.  The validation helpers here are shared by both callers,
so a network and an ensemble reject the same bad inputs with the same messages.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ._checks import check_inputs, check_int, check_positive, check_seed
from ._optim import LOSSES, OPTIMIZERS, Optimizer, loss_values

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
        """‖Θ̂_s − Θ̂_{s₀}‖_F / ‖Θ̂_{s₀}‖_F for each snapshot s, relative to the first one s₀:
        shape (snapshots,), or (snapshots, size) for an ensemble (one drift per member)."""
        if not self.ntk:
            raise ValueError("no NTK snapshots were recorded; pass ntk_at=[...] to train()")
        lead = 1 if self.loss.dim() == 2 else 0  # an ensemble's snapshots are stacked per member

        def norm(k: Tensor) -> Tensor:
            return torch.linalg.norm(k.flatten(lead), dim=-1)

        ref = self.ntk[0]
        return torch.stack([norm(k - ref) for k in self.ntk]) / norm(ref)

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


# ----------------------------------------------------------------------------- the loop
def _batches(n: int, batch_size: int | None, seed: int | None, device: torch.device):
    """Row-index batches, forever: full batch, or reshuffled minibatches every epoch."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(check_seed("seed", seed))
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
    if isinstance(ntk_at, (str, bytes)) or not hasattr(ntk_at, "__iter__"):
        raise TypeError(f"ntk_at must be a list of step numbers, got {ntk_at!r:.60}")
    ntk_set = set(check_int(f"ntk_at[{i}]", s, minimum=None) for i, s in enumerate(ntk_at))
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
