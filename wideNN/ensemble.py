"""Vectorized ensembles of independent finite networks.

``Ensemble(arch, width, in_features, out_features, size, seed)`` holds ``size`` networks,
member i being exactly ``arch.build(in_features, width, out_features, seed=seed + i)``, with
their parameters stacked along a leading dimension (``torch.func.stack_module_state``) and
evaluated with ``torch.func.vmap``: one batched forward/backward for all members.
A composed description (convolutions, pooling, residual blocks) works the same way with
``in_shape=(C, H, W)`` (or ``(C, L)``): member i is ``arch.build(in_shape=in_shape,
width=width, out_features=out_features, seed=seed + i)`` and inputs are (N, *in_shape).

Why: the distribution over random initializations of a trained network is the object the
infinite-width theory predicts.  Trained with full-batch GD to time t, a wide ensemble's
mean/variance approach ``wn.posterior(arch, ..., kernel="ntk", t=t)``; trained readout-only,
``kernel="nngp", t=t`` (sample-then-optimize, Lee et al. 2019).

``Ensemble.train(..., checkpoint=path)`` is resumable like ``wn.train``: killed and called again
on an ensemble built the same way, it continues from its last checkpoint and ends bitwise where
an uninterrupted run would.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ._checks import check_inputs, check_int, check_seed
from ._optim import OptimizerOptions
from ._train_loop import (LoopHooks, LoopOptions, TrainHistory, _check_data, _check_hyper, eval_sets,
                          _check_positive_int, _chunked_eval, run_loop)
from .architecture import Architecture
from .training import _default_ntk_fn, _readout_parameters

__all__ = ["Ensemble"]


class Ensemble(nn.Module):
    """``size`` independent networks of one architecture, stacked and vmapped.

    Seeding rule: member i is ``arch.build(in_features, width, out_features, seed=seed + i,
    dtype=dtype, device=device)`` for an MLP ``Architecture``, and ``arch.build(in_shape=in_shape,
    width=width, out_features=out_features, seed=seed + i, dtype=dtype, device=device)`` for a
    composed description (or an ``Architecture`` given ``in_shape``), so any member can be
    reproduced (and trained) alone.  Give exactly one of ``in_features`` (an int: inputs
    (N, d)) and ``in_shape`` (the per-example shape: (d,), (C, L) or (C, H, W)).

    Calling the ensemble on x (N, *in_shape), shared by all members, or (size, N, *in_shape),
    one batch per member, returns the per-member outputs (size, N, O).  Stacked parameters
    have shape (size, *shape of the member's parameter).
    """

    def __init__(self, arch, width: int | Sequence[int], in_features: int | None = None,
                 out_features: int | None = None, size: int | None = None, seed: int = 0, *,
                 in_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if out_features is None or size is None:
            raise TypeError("Ensemble needs out_features= and size=")
        size = _check_positive_int("size", size)
        seed = check_seed("seed", seed)
        check_seed("seed + size - 1", seed + size - 1)  # member i is built with seed + i
        self.arch, self.size, self.seed = arch, size, int(seed)
        self.in_shape = _input_shape(in_features, in_shape)
        self.in_features = self.in_shape[0] if len(self.in_shape) == 1 else None
        self.width, self.out_features = width, out_features
        self.dtype = dtype
        first = self._build(seed, device)
        _check_fits(first, size, device)
        members = [first] + [self._build(seed + i, device) for i in range(1, size)]
        params, buffers = stack_module_state(members)
        self._names = list(params)
        # nn.Module attribute names may not contain dots
        self._pnames = {k: k.replace(".", "__") for k in params}
        for k, v in params.items():
            self.register_parameter(self._pnames[k], nn.Parameter(v.detach()))
        self._bnames = {k: "buf__" + k.replace(".", "__") for k in buffers}
        for k, v in buffers.items():
            self.register_buffer(self._bnames[k], v)
        # the structure evaluated functionally; its own tensors live on "meta" and are never used
        self._base = [copy.deepcopy(members[0]).to("meta")]
        # the readout is whatever wn.train(..., trainable="readout") trains on one member
        ids = {id(p) for p in _readout_parameters(members[0])}
        self._readout_names = [k for k, p in members[0].named_parameters() if id(p) in ids]

    def _build(self, seed: int, device) -> nn.Module:
        """Member with this seed: the MLP shorthand keeps its positional ``build`` (so members
        equal ``arch.build(in_features, ...)`` exactly); composed descriptions take ``in_shape``."""
        if isinstance(self.arch, Architecture) and self.in_features is not None:
            return self.arch.build(self.in_features, self.width, self.out_features, seed=seed,
                                   dtype=self.dtype, device=device)
        if not callable(getattr(self.arch, "build", None)):
            raise TypeError(f"arch must be a wideNN.Architecture or a composed description with "
                            f".build(in_shape=..., width=..., out_features=...), got {type(self.arch).__name__}")
        return self.arch.build(in_shape=self.in_shape, width=self.width, out_features=self.out_features,
                               seed=seed, dtype=self.dtype, device=device)

    def _check_x(self, x: Tensor, name: str = "x", per_member: bool = True) -> None:
        """x is (N, *in_shape), or (size, N, *in_shape) when ``per_member``."""
        check_inputs(x, name1=name)
        k = len(self.in_shape)
        if tuple(x.shape[1:]) == self.in_shape:
            return
        if per_member and x.dim() == k + 2 and tuple(x.shape[2:]) == self.in_shape:
            if x.shape[0] != self.size:
                raise ValueError(f"per-member inputs must have shape ({self.size}, N, "
                                 f"{', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
            return
        if k == 1 and x.dim() in (2, 3):
            raise ValueError(f"{name} has {x.shape[-1]} features but the ensemble expects {self.in_features}")
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, self.in_shape))})"
                         f"{' or per member (size, N, ...)' if per_member else ''}; got {tuple(x.shape)}")

    # -- parameters --------------------------------------------------------------------
    def stacked_parameters(self) -> dict[str, Tensor]:
        """name (as in a member) → stacked parameter (size, …)."""
        return {k: getattr(self, self._pnames[k]) for k in self._names}

    def _stacked_buffers(self) -> dict[str, Tensor]:
        return {k: getattr(self, b) for k, b in self._bnames.items()}

    def readout_parameters(self) -> list[Tensor]:
        """The stacked parameters of every member's readout layer (the last layer with parameters)."""
        p = self.stacked_parameters()
        return [p[k] for k in self._readout_names]

    def member(self, i: int) -> nn.Module:
        """A standalone copy of member i with its current parameters."""
        if not -self.size <= i < self.size:
            raise IndexError(f"member index {i} out of range for an ensemble of {self.size}")
        p = self.stacked_parameters()
        net = self._build(self.seed + (i % self.size), p[self._names[0]].device)
        with torch.no_grad():
            for k, v in net.named_parameters():
                v.copy_(p[k][i])
        return net

    # -- evaluation --------------------------------------------------------------------
    def _call(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        base = self._base[0]
        buffers = self._stacked_buffers()

        def one(p, b, xi):
            return functional_call(base, (p, b), (xi,))

        in_x = 0 if x.dim() == len(self.in_shape) + 2 else None
        return vmap(one, in_dims=(0, 0, in_x))(params, buffers, x)

    def forward(self, x: Tensor) -> Tensor:
        """Per-member outputs (size, N, O) for x (N, *in_shape) or (size, N, *in_shape)."""
        self._check_x(x)
        return self._call(self.stacked_parameters(), x)

    @torch.no_grad()
    def mean(self, x: Tensor) -> Tensor:
        """Ensemble mean (1/S) Σ_i f_i(x), shape (N, O)."""
        return self(x).mean(0)

    @torch.no_grad()
    def variance(self, x: Tensor) -> Tensor:
        """Unbiased ensemble variance (1/(S−1)) Σ_i (f_i(x) − mean)², shape (N, O)
        (for a single member: zeros)."""
        out = self(x)
        if self.size == 1:
            return torch.zeros_like(out[0])
        return out.var(0, correction=1)

    @torch.no_grad()
    def covariance(self, x: Tensor) -> Tensor:
        """Unbiased ensemble covariance across inputs, per output: (O, N, N)."""
        out = self(x)  # (S, N, O)
        c = out - out.mean(0)
        return torch.einsum("sno,smo->onm", c, c) / max(self.size - 1, 1)

    # -- training ----------------------------------------------------------------------
    def train(self, x: Tensor | bool = True, y: Tensor | None = None, steps: int = 1000,
              learning_rate: float = 1.0, optimizer: str = "gd", loss: str = "mse", *,
              batch_size: int | None = None, trainable: str = "all", momentum: float = 0.9,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, seed: int | None = None,
              eval_data: dict[str, tuple[Tensor, Tensor]] | tuple[Tensor, Tensor] | None = None,
              metrics: Callable[["Ensemble"], dict[str, Any]] | None = None,
              eval_every: int | None = None, ntk_at: Sequence[int] | None = None,
              ntk_x: Tensor | None = None, ntk_mode: str = "trace", progress: bool | None = None,
              check_every: int | None = None, checkpoint: str | os.PathLike | None = None,
              checkpoint_every: int = 100) -> TrainHistory | "Ensemble":
        """Train every member, all at once, exactly as ``wn.train`` would train it alone.

        Each member minimizes its own L_i = (1/2N) Σ_n ‖f_i(x_n) − y_n‖² (or cross-entropy);
        the sum Σ_i L_i is differentiated once through the vmapped forward, which gives every
        member its own gradient, and the elementwise optimizers update each member as if alone
        (minibatches, if any, are the same for all members).  Returns a ``TrainHistory``
        whose ``loss`` is (steps_done + 1, size); evaluation metrics are per member (size,).

        ``trainable="readout"`` trains only the readout layers (NNGP-posterior sampling).
        ``ntk_at``: steps at which to snapshot every member's empirical NTK on ``ntk_x``
        (default ``x``; ``wn.empirical_ntk(member, ·, mode=ntk_mode)``): ``history.ntk[j]`` is
        (size, N, N, …) and ``history.ntk_drift()`` is (snapshots, size), one drift per member.
        ``checkpoint``: a file path; as in ``wn.train``, the state (stacked parameters and
        buffers, optimizer state, step, history) is written there atomically every
        ``checkpoint_every`` steps, every few seconds of wall time and at the end, and a later call on an ensemble built the
        same way, with the same data and options, resumes from it with a result bitwise equal
        to an uninterrupted run (same device and thread settings); a file of another run
        (other architecture, seeds, data or options) is refused with a ``ValueError``.
        Without data, ``ens.train()`` / ``ens.train(False)`` is ``nn.Module.train`` (mode flag).
        """
        if isinstance(x, bool):  # nn.Module.train(mode) compatibility
            return super().train(x)
        if y is None:
            raise ValueError("Ensemble.train(x, y, ...) needs targets y")
        steps, lr = _check_hyper(steps, learning_rate, optimizer, loss)
        _check_data(x, y, loss)
        self._check_x(x, per_member=False)
        p0 = self.stacked_parameters()[self._names[0]]
        if p0.device != x.device:
            raise ValueError(f"x is on {x.device} but the ensemble's parameters are on {p0.device}")
        if p0.dtype != x.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the ensemble's parameters have dtype {p0.dtype}")
        if batch_size is not None:
            batch_size = _check_positive_int("batch_size", batch_size)
        if trainable == "all":
            params = list(self.stacked_parameters().values())
        elif trainable == "readout":
            params = self.readout_parameters()
        else:
            raise ValueError(f"trainable must be 'all' or 'readout', got {trainable!r}")

        def fwd(xb: Tensor) -> Tensor:  # validated above; skip per-step checks (host syncs)
            return self._call(self.stacked_parameters(), xb)

        opt = OptimizerOptions(optimizer, lr, momentum, tuple(betas), eps)
        loop = LoopOptions(steps, opt, loss, batch_size, seed, eval_every, tuple(ntk_at or ()), progress,
                           check_every, checkpoint, checkpoint_every)
        state = [*self.stacked_parameters().values(), *self._stacked_buffers().values()]
        hooks = LoopHooks(fwd, 1, self._evaluate_hook(eval_data, metrics, loss),
                          self._snapshot_hook(x if ntk_x is None else ntk_x, ntk_mode) if ntk_at else None,
                          identity=(repr(self), state) if checkpoint is not None else (),
                          buffers=tuple(self._stacked_buffers().values()))
        return run_loop(params, x, y, loop, hooks)

    def _evaluate_hook(self, eval_data: Any, metrics: Callable | None, loss: str) -> Callable[[], dict] | None:
        """The loop's ``evaluate``: per-member losses (accuracies) on ``eval_data``, and ``metrics``."""
        sets = eval_sets(eval_data, loss)
        for name, (xe, _) in sets.items():
            self._check_x(xe, f"eval_data[{name!r}] x", per_member=False)
        if not sets and metrics is None:
            return None

        def evaluate() -> dict[str, Any]:
            res: dict[str, Any] = {}
            for name, (xe, ye) in sets.items():
                for k, v in _chunked_eval(self, xe, ye, loss).items():
                    res[f"{name}_{k}"] = v.detach().cpu()
            if metrics is not None:
                res.update(metrics(self))
            return res
        return evaluate

    def _snapshot_hook(self, xs: Tensor, ntk_mode: str) -> Callable[[], Tensor]:
        """The loop's ``snapshot``: every member's empirical NTK on ``xs``, stacked."""
        self._check_x(xs, "ntk_x", per_member=False)
        ntk = _default_ntk_fn(ntk_mode)

        def snapshot() -> Tensor:
            # one member at a time: an NTK snapshot is rare and its memory is per member
            with torch.enable_grad():
                return torch.stack([ntk(self.member(i), xs).detach() for i in range(self.size)])
        return snapshot

    def extra_repr(self) -> str:
        return (f"size={self.size}, seed={self.seed}, arch={self.arch!r}, width={self.width}, "
                f"in_shape={self.in_shape}, out_features={self.out_features}")


def _check_fits(member: nn.Module, size: int, device) -> None:
    """ValueError naming ``size`` when the stacked parameters alone would exceed the device's
    memory (physical RAM on the CPU), before ``size`` members are built one by one."""
    per = sum(t.numel() * t.element_size() for t in (*member.parameters(), *member.buffers()))
    dev = torch.device("cpu") if device is None else torch.device(device)
    try:
        total = (torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else
                 os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return
    if per * size > total:
        raise ValueError(f"size={size} members of {per} bytes of parameters each need "
                         f"{per * size / 2 ** 30:.3g} GiB, more than the {total / 2 ** 30:.3g} GiB "
                         f"of memory on {dev}")


def _input_shape(in_features: Any, in_shape: Any) -> tuple[int, ...]:
    """The per-example input shape from exactly one of ``in_features`` / ``in_shape``."""
    if (in_features is None) == (in_shape is None):
        raise TypeError("give exactly one of in_features= (inputs (N, d)) and in_shape= "
                        "(the per-example shape, e.g. (C, H, W))")
    if in_features is not None:
        return (check_int("in_features", in_features),)
    if isinstance(in_shape, (int, Tensor)) or not isinstance(in_shape, Sequence) or not in_shape:
        raise TypeError(f"in_shape must be a non-empty tuple of positive ints such as (3, 32, 32), got {in_shape!r}")
    return tuple(check_int(f"in_shape[{i}]", v) for i, v in enumerate(in_shape))
