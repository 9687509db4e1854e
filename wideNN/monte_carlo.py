"""Monte Carlo estimates of the NNGP and NTK from an ensemble of random finite networks.

For S networks f^{(s)} drawn independently (seeds seed, seed + 1, …) with O outputs,

    K̂(x, x') = (1/S) Σ_s (1/O) Σ_o f_o^{(s)}(x) f_o^{(s)}(x'),
    Θ̂(x, x') = (1/S) Σ_s (1/O) Σ_o ∇_θ f_o^{(s)}(x) · ∇_θ f_o^{(s)}(x'),

the output covariance and the mean empirical NTK (trace over outputs, as ``empirical_ntk(mode=
"trace")``).  They converge to the analytic kernels as width and S grow (for one hidden layer
their expectation is exactly the analytic kernel at any width).  Each entry comes with the
standard error std_s / √S of the mean over the S independent networks.  Networks are built
``batch_size`` at a time, their parameters stacked (``torch.func.stack_module_state``) and
evaluated with ``vmap`` over ``functional_call`` (Jacobians by ``jacrev``).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, stack_module_state, vmap

from ._checks import check_int, check_seed
from ._predict_checks import check_examples

__all__ = ["MonteCarloKernels", "monte_carlo_kernels"]


@dataclasses.dataclass
class MonteCarloKernels:
    """Estimates (N, M) and their standard errors; None for a kernel not asked for."""

    nngp: Tensor | None
    ntk: Tensor | None
    nngp_se: Tensor | None
    ntk_se: Tensor | None
    n_samples: int


class _Moments:
    """Running sum and sum of squares of per-network estimates (float64)."""

    def __init__(self) -> None:
        self.s = self.s2 = None
        self.count = 0

    def add(self, batch: Tensor) -> None:
        b = batch.to(torch.float64)
        self.s = b.sum(0) if self.s is None else self.s + b.sum(0)
        sq = b.square().sum(0)
        self.s2 = sq if self.s2 is None else self.s2 + sq
        self.count += b.shape[0]

    def result(self) -> tuple[Tensor, Tensor]:
        n = self.count
        mean = self.s / n
        var = (self.s2 - n * mean.square()).clamp_min(0.0) / max(n - 1, 1)
        return mean, (var / n).sqrt()


def _builder(build: Any, build_kwargs: dict) -> Callable[[int], nn.Module]:
    if hasattr(build, "build") and callable(build.build):
        return lambda seed: build.build(**build_kwargs, seed=seed)
    if callable(build):
        if build_kwargs:
            return lambda seed: build(seed, **build_kwargs)
        return build
    raise TypeError(f"build must be a callable seed -> nn.Module or an object with .build(...), "
                    f"got {type(build).__name__}")


def monte_carlo_kernels(build: Any, x1: Tensor, x2: Tensor | None = None, *, n_samples: int = 64,
                        batch_size: int = 16, seed: int = 0, compute: tuple[str, ...] = ("nngp", "ntk"),
                        **build_kwargs) -> MonteCarloKernels:
    """Monte Carlo NNGP and NTK of random networks:
    K̂(x, x') = (1/S) Σ_s (1/O) Σ_o f_o^{(s)}(x) f_o^{(s)}(x'),
    Θ̂(x, x') = (1/S) Σ_s (1/O) Σ_o ∇_θ f_o^{(s)}(x) · ∇_θ f_o^{(s)}(x'),
    each entry with the standard error std_s / √S over the S independent networks.

    Args:
        build: a callable ``seed -> nn.Module`` (``build(seed, **build_kwargs)``), or any object
            with ``.build(**build_kwargs, seed=seed)`` (an ``Architecture``, a composed layer
            description), e.g. ``monte_carlo_kernels(arch, x, in_features=3, width=512,
            out_features=1)``.
        x1: (N, ...) inputs; x2: (M, ...) or None (x1 with itself).
        n_samples: S networks; batch_size: networks vmapped at once (memory ∝ batch·N·O·P for
            the NTK's Jacobians).
        seed: network s uses seed + s.
        compute: which kernels: ``("nngp", "ntk")``, ``("nngp",)`` or ``("ntk",)``.

    Returns ``MonteCarloKernels`` with the estimates and their standard errors, in float64.
    """
    n_samples = check_int("n_samples", n_samples, minimum=2)
    batch_size = check_int("batch_size", batch_size)
    seed = check_seed("seed", seed)
    if not compute or any(c not in ("nngp", "ntk") for c in compute):
        raise ValueError(f"compute must name 'nngp' and/or 'ntk', got {compute!r}")
    check_examples(x1, x2)
    make = _builder(build, build_kwargs)
    moments = {c: _Moments() for c in compute}
    for start in range(0, n_samples, batch_size):
        models = [make(seed + s) for s in range(start, min(start + batch_size, n_samples))]
        if not all(isinstance(m, nn.Module) for m in models):
            raise TypeError("build must return torch.nn.Module instances")
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        del models

        def f(p, b, x):
            return functional_call(base, (p, b), (x,)).reshape(x.shape[0], -1)

        # the networks' own dtype and device (inputs are converted, the moments are float64)
        ref = next(iter(params.values()))
        x1, x2 = (None if v is None else v.to(dtype=ref.dtype, device=ref.device) for v in (x1, x2))

        if "nngp" in moments:
            with torch.no_grad():
                o1 = vmap(f, (0, 0, None))(params, buffers, x1)
                o2 = o1 if x2 is None else vmap(f, (0, 0, None))(params, buffers, x2)
            moments["nngp"].add(torch.einsum("bno,bmo->bnm", o1, o2) / o1.shape[-1])
        if "ntk" in moments:
            moments["ntk"].add(_batch_ntk(f, params, buffers, x1, x2))
    out = {c: moments[c].result() if c in moments else (None, None) for c in ("nngp", "ntk")}
    return MonteCarloKernels(nngp=out["nngp"][0], ntk=out["ntk"][0], nngp_se=out["nngp"][1],
                             ntk_se=out["ntk"][1], n_samples=n_samples)


def _batch_ntk(f, params, buffers, x1: Tensor, x2: Tensor | None) -> Tensor:
    """(B, N, M): (1/O) Σ_o J_o(x1) · J_o(x2) for each stacked network."""
    params = {k: v.detach() for k, v in params.items()}
    jac = vmap(jacrev(f), (0, 0, None))
    j1 = jac(params, buffers, x1)
    j2 = j1 if x2 is None else jac(params, buffers, x2)
    total = None
    for k in j1:
        a = j1[k].flatten(3)                      # (B, N, O, P_k)
        b = j2[k].flatten(3)
        part = torch.einsum("bnop,bmop->bnm", a, b)
        total = part if total is None else total + part
    return total / a.shape[2]
