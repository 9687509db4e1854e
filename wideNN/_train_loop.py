"""The training loop shared by ``wn.train`` and ``Ensemble.train``, and what it records.

``run_loop(params, x, y, LoopOptions, LoopHooks)`` runs a ``torch.optim`` optimizer over a
parameter list for a given forward function, records the loss at every step
(``TrainHistory``), evaluation metrics and NTK snapshots on request, stops at the first
non-finite loss, and with ``checkpoint`` set saves its state every ``checkpoint_every`` steps
(and every few seconds of wall time, ``wideNN._checkpoint.Schedule``) so that an interrupted call resumes where it was (with bit-identical results on the same
device and thread settings).  The validation helpers here are shared by both callers, so a
network and an ensemble reject the same bad inputs with the same messages.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ._checks import apply_model, check_inputs, check_int, check_positive, check_seed, fits_in_memory
from . import _checkpoint
from ._optim import LOSSES, OPTIMIZERS, OptimizerOptions, apply_step, loss_values

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


def eval_sets(eval_data: Any, loss: str) -> dict[str, tuple[Tensor, Tensor]]:
    """``eval_data`` (None, a pair (x, y) or a dict name → pair) as a dict name → (x, y), each pair
    checked like the training data; a single pair is named "test"."""
    if eval_data is None:
        return {}
    if isinstance(eval_data, tuple):
        eval_data = {"test": eval_data}
    if not isinstance(eval_data, Mapping):
        raise TypeError(f"eval_data must be a pair (x, y) or a dict of pairs, got {type(eval_data).__name__}")
    sets: dict[str, tuple[Tensor, Tensor]] = {}
    for name, pair in eval_data.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"eval_data[{name!r}] must be a pair (x, y)")
        _check_data(pair[0], pair[1], loss, f"eval_data[{name!r}] x", f"eval_data[{name!r}] y")
        sets[name] = (pair[0], pair[1])
    return sets


def _check_data(x: Tensor, y: Any, loss: str, name_x: str = "x", name_y: str = "y") -> None:
    check_inputs(x, name1=name_x)
    # (N, features), or channel-first (N, C, L) / (N, C, H, W) for convolutional models: the
    # model itself decides what a single example looks like
    if x.shape[0] == 0:
        raise ValueError(f"{name_x} is an empty batch (shape {tuple(x.shape)})")
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


def _probe(forward: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The first forward of a run, with a shape error that names the inputs."""
    return apply_model(forward, x, f"the model cannot be applied to inputs of shape {tuple(x.shape)} "
                                   f"(per example {tuple(x.shape[1:])})")


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
            out = forward(xb) if i else _probe(forward, xb)
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


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """What the loop does: steps, update rule, loss, batches, recording and checkpoints."""

    steps: int
    optimizer: OptimizerOptions
    loss: str = "mse"
    batch_size: int | None = None
    seed: int | None = None
    eval_every: int | None = None
    ntk_at: tuple[int, ...] = ()
    progress: bool | None = None
    check_every: int | None = None
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 100


@dataclasses.dataclass(frozen=True)
class LoopHooks:
    """How the loop sees the model: ``forward(x_batch)`` returns outputs with ``lead`` leading
    model dims; ``evaluate()`` returns metrics; ``snapshot()`` returns an empirical NTK;
    ``identity`` enters a checkpoint's fingerprint; ``buffers`` are saved and restored with it."""

    forward: Callable[[Tensor], Tensor]
    lead: int = 0
    evaluate: Callable[[], Mapping[str, Any]] | None = None
    snapshot: Callable[[], Tensor] | None = None
    # checkpoints: what else identifies the run (the model's description, its frozen parameters
    # and buffers at the start), and the buffers a checkpoint saves and restores with ``params``
    identity: tuple = ()
    buffers: tuple[Tensor, ...] = ()


class _Loop:
    """One run of the loop; the state a checkpoint holds is ``params`` (and the hooks'
    ``buffers``), the optimizer's state, the loss buffer and the history recorded so far.  The
    loop's own randomness, the minibatch order, comes from a generator seeded with ``seed`` and
    is replayed up to the checkpoint's step on resume, so no RNG state is saved (a model that
    draws random numbers itself, e.g. dropout in training mode, resumes with other draws)."""

    def __init__(self, params: list[Tensor], x: Tensor, y: Tensor, o: LoopOptions, h: LoopHooks) -> None:
        n = x.shape[0]
        if o.optimizer.name == "gd" and o.batch_size is not None and o.batch_size < n:
            raise ValueError(f"optimizer='gd' is full-batch; for minibatches of {o.batch_size} use optimizer='sgd'")
        # a host sync per step is free on the CPU but stalls a GPU queue
        check = o.check_every if o.check_every is not None else (1 if x.device.type == "cpu" else 25)
        self.check_every = _check_positive_int("check_every", check)
        if isinstance(o.ntk_at, (str, bytes)) or not hasattr(o.ntk_at, "__iter__"):
            raise TypeError(f"ntk_at must be a list of step numbers, got {o.ntk_at!r:.60}")
        self.ntk_set = set(check_int(f"ntk_at[{i}]", s, minimum=None) for i, s in enumerate(o.ntk_at))
        if any(s < 0 or s > o.steps for s in self.ntk_set):
            raise ValueError(f"ntk_at must contain steps in [0, {o.steps}], got {sorted(self.ntk_set)}")
        every = o.eval_every if o.eval_every is not None else max(1, o.steps // 100)
        self.eval_every = _check_positive_int("eval_every", every)
        self.ckpt_every = _check_positive_int("checkpoint_every", o.checkpoint_every)
        self.ckpt = _checkpoint.check_path(o.checkpoint)
        self.params, self.x, self.y, self.o, self.h = params, x, y, o, h
        self.opt = o.optimizer.build(params)
        self.hist = TrainHistory(loss=torch.empty(0), steps=0, learning_rate=o.optimizer.learning_rate,
                                 optimizer=o.optimizer.name, loss_name=o.loss, batch_size=o.batch_size)
        self.buf: Tensor | None = None
        self.checked = 0  # losses [0, checked) are known finite
        self.start = 0
        self.key = ""
        if self.ckpt is not None:
            self.key = _checkpoint.fingerprint(
                "train", x, y, params, o.steps, o.optimizer, o.loss, o.batch_size, o.seed,
                self.eval_every, sorted(self.ntk_set), self.check_every, h.identity)
            self._restore(_checkpoint.load(self.ckpt, self.key))
        self.schedule = _checkpoint.Schedule(self.ckpt_every, self.start)

    # -- checkpoints
    def _save(self, s: int) -> None:
        hist = self.hist
        self.schedule.write(self.ckpt, self.key, {
            "step": s, "checked": self.checked,
            "params": [p.detach().cpu() for p in self.params],
            "buffers": [b.detach().cpu() for b in self.h.buffers],
            "optimizer": self.opt.state_dict(),
            "loss": None if self.buf is None else self.buf[:s + (s == self.o.steps)].cpu(),
            "metric_steps": list(hist.metric_steps), "metrics": dict(hist.metrics),
            "ntk_steps": list(hist.ntk_steps), "ntk": [k.cpu() for k in hist.ntk]})

    def _restore(self, state: dict | None) -> None:
        if state is None:
            return
        with torch.no_grad():
            for p, v in zip([*self.params, *self.h.buffers], [*state["params"], *state["buffers"]]):
                p.copy_(v)
        self.opt.load_state_dict(state["optimizer"])
        self.start, self.checked = int(state["step"]), int(state["checked"])
        if state["loss"] is not None:
            saved = state["loss"].to(self.x.device)
            self.buf = torch.empty((self.o.steps + 1, *saved.shape[1:]), dtype=saved.dtype, device=saved.device)
            self.buf[:saved.shape[0]] = saved
        dev = self.x.device
        self.hist.metric_steps, self.hist.metrics = state["metric_steps"], state["metrics"]
        self.hist.ntk_steps, self.hist.ntk = state["ntk_steps"], [k.to(dev) for k in state["ntk"]]

    # -- recording
    def record_eval(self, s: int) -> None:
        if self.h.evaluate is None:
            return
        self.hist.metric_steps.append(s)
        for k, v in self.h.evaluate().items():
            self.hist.metrics.setdefault(k, []).append(v)

    def record_ntk(self, s: int) -> None:
        if self.h.snapshot is not None and s in self.ntk_set:
            self.hist.ntk_steps.append(s)
            self.hist.ntk.append(self.h.snapshot())

    def first_bad(self, upto: int) -> int | None:
        seg = self.buf[self.checked:upto]
        ok = torch.isfinite(seg.reshape(seg.shape[0], -1)).all(dim=1)
        if bool(ok.all()):
            return None
        return self.checked + int((~ok).nonzero()[0, 0])

    # -- the steps
    def step(self, s: int, xb: Tensor, yb: Tensor) -> Tensor:
        """Record loss[s] at the current parameters, then apply update s."""
        out = _probe(self.h.forward, xb) if s == 0 else self.h.forward(xb)
        if s == 0:
            _check_output(out, yb, self.o.loss, lead=self.h.lead)
        lv = loss_values(out, yb, self.o.loss)
        if self.buf is None:
            with fits_in_memory(f"the loss history of steps={self.o.steps}"):
                self.buf = torch.empty((self.o.steps + 1, *lv.shape), dtype=lv.dtype, device=lv.device)
        self.buf[s] = lv.detach()
        return lv

    def run(self) -> tuple[int, int | None]:
        """Steps ``start .. steps-1``; returns (updates applied, first bad step or None)."""
        o, steps = self.o, self.o.steps
        batches = _batches(self.x.shape[0], o.batch_size, o.seed, self.x.device)
        for _ in range(self.start):  # the batch order of the steps already done
            next(batches)
        bar = _progress(steps, o.progress)
        bar.update(self.start)
        done = self.start
        try:
            for s in range(self.start, steps):
                if self.ckpt is not None and self.schedule.due(s):
                    self._save(s)
                self.record_ntk(s)
                if s % self.eval_every == 0:
                    self.record_eval(s)
                idx = next(batches)
                xb, yb = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
                lv = self.step(s, xb, yb)
                if (s + 1) % self.check_every == 0 or s == steps - 1:
                    bad = self.first_bad(s + 1)
                    if bad is not None:
                        return done, bad
                    self.checked = s + 1
                apply_step(self.opt, self.params, torch.autograd.grad(lv.sum(), self.params))
                done = s + 1
                if not bar.disable and s % max(1, steps // 100) == 0:
                    bar.set_postfix(loss=f"{float(lv.detach().mean()):.4g}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        return done, None

    def diverged(self, applied: int, bad: int) -> TrainHistory:
        """The history of a run whose loss became non-finite at step ``bad``."""
        hist, buf, lr, name = self.hist, self.buf, self.o.optimizer.learning_rate, self.o.optimizer.name
        hist.loss, hist.steps, hist.diverged = buf[:bad + 1].cpu(), bad, True
        kind = "NaN" if bool(torch.isnan(buf[bad]).any()) else "inf"
        where = ""
        if self.h.lead:
            members = (~torch.isfinite(buf[bad].reshape(-1))).nonzero().flatten().tolist()
            where = f" for ensemble member(s) {members[:10]}{'…' if len(members) > 10 else ''}"
        if applied > bad:
            # with check_every > 1 (the CUDA default) the updates after the first bad loss, up
            # to the check, were applied too: report the first bad step and say so
            state = (f"The loss is checked every {self.check_every} steps (check_every), so "
                     f"{applied - bad} more update(s) were applied after step {bad} and the parameters "
                     f"may be non-finite; pass check_every=1 to stop at the first bad step.")
        else:
            state = "The parameters are left as they were at that step."
        hist.message = (f"training stopped: the loss became {kind}{where} at step {bad} "
                        f"(learning_rate={lr:g}, optimizer={name!r}); the learning rate "
                        f"is probably above the stable range (see wideNN.max_learning_rate). " + state)
        warnings.warn(hist.message, RuntimeWarning, stacklevel=4)
        return hist

    def finish(self, done: int) -> TrainHistory:
        """The final full-set loss, the last NTK snapshot and evaluation; the final checkpoint."""
        steps, hist = self.o.steps, self.hist
        final = _chunked_loss(self.h.forward, self.x, self.y, self.o.loss)
        if self.buf is None:  # steps == 0
            self.buf = torch.empty((1, *final.shape), dtype=final.dtype, device=final.device)
        self.buf[steps] = final
        hist.loss, hist.steps = self.buf.cpu(), done
        if not bool(torch.isfinite(final).all()):
            hist.diverged = True
            hist.message = (f"training ended with a non-finite loss after {done} steps "
                            f"(learning_rate={self.o.optimizer.learning_rate:g})")
            warnings.warn(hist.message, RuntimeWarning, stacklevel=4)
            return hist
        if self.start < steps or steps == 0:
            self.record_ntk(steps)
            if self.h.evaluate is not None and (not hist.metric_steps or hist.metric_steps[-1] != steps):
                self.record_eval(steps)
            if self.ckpt is not None:
                self._save(steps)
        return hist


def run_loop(params: list[Tensor], x: Tensor, y: Tensor, options: LoopOptions, hooks: LoopHooks) -> TrainHistory:
    """Train ``params`` on (x, y): the loop shared by ``train`` and ``Ensemble.train``.

    The summed per-model loss is differentiated with respect to ``params`` (so stacked ensemble
    members get their own gradients).  With ``options.checkpoint`` the loop resumes from that
    file when it holds a checkpoint of the same run, and writes one every ``checkpoint_every``
    steps and at the end.
    """
    loop = _Loop(params, x, y, options, hooks)
    done, bad = loop.run()
    if bad is not None:
        return loop.diverged(done, bad)
    return loop.finish(done)

