"""Kernel geometry: analytic NNGP/NTK vs angle for several depths, and samples from a deep NNGP prior.

Inputs lie on a circle in the first two coordinates of R^d, x(θ) = r (cos θ, sin θ, 0, …, 0),
with r = sqrt(d) when ``normalize_inputs`` (so x·x'/d = cos θ, the first layer sees
unit-variance inputs) and r = 1 otherwise. Because the kernels are rotation
invariant, K(x(0), x(θ)) / sqrt(K(x(0),x(0)) K(x(θ),x(θ))) is the whole story; deeper
ReLU networks give flatter curves (every pair of inputs looks alike).

Results (results.json, section ``results``):

* ``angles``: the angle grid (radians, 0..π);
* ``kernel/<activation>/depth=<L>``: ``nngp`` and ``ntk`` (normalized, on the grid),
  ``nngp_diag`` / ``ntk_diag`` (K(x,x), Θ(x,x)), and the flatness summaries
  ``nngp_at_half_pi``, ``nngp_at_pi``, ``ntk_at_half_pi``;
* ``prior/<activation>``: ``t`` (grid), ``samples`` (num_samples lists), ``jitter``
  (relative to the mean diagonal; added to factorize the NNGP covariance of the
  depth-``prior.depth`` network, starting from ``prior.jitter``).

Figures: ``kernel_vs_angle.png`` (NNGP top row, NTK bottom row, one column per
activation) and ``prior_samples.png``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

import wideNN as wn
from wideNN import linalg
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "activations": ["relu"],
    "depths": [1, 2, 4, 8, 16, 32],
    "weight_variance": 2.0,
    "bias_variance": 0.1,
    "input_dim": 2,
    "normalize_inputs": True,
    "num_angles": 91,
    "prior": {
        "depth": 10,
        "domain": "circle",  # "circle": x = r (cos t, sin t), t in [-π, π); "line": x = (t, 0, …), t in [-extent, extent]
        "extent": 3.0,
        "num_points": 200,
        "num_samples": 5,
        "jitter": 1e-10,
    },
}


def _circle(t: torch.Tensor, dim: int, radius: float) -> torch.Tensor:
    x = torch.zeros(t.numel(), dim, dtype=t.dtype, device=t.device)
    x[:, 0] = radius * torch.cos(t)
    x[:, 1] = radius * torch.sin(t)
    return x


def _arch(cfg: dict, depth: int, activation: str) -> "wn.Architecture":
    return wn.Architecture(depth=depth, activation=activation, weight_variance=cfg["weight_variance"],
                           bias_variance=cfg["bias_variance"], parameterization="ntk")


def run(cfg: dict, ctx) -> None:
    if cfg["input_dim"] < 2:
        raise ValueError("input_dim must be >= 2 (inputs lie on a circle in the first two coordinates)")
    opts = dict(dtype=ctx.dtype, device=ctx.device)
    dim = cfg["input_dim"]
    radius = math.sqrt(dim) if cfg["normalize_inputs"] else 1.0
    angles = torch.linspace(0.0, math.pi, cfg["num_angles"], **opts)
    x = _circle(angles, dim, radius)
    ctx.record("angles", angles)
    acts, depths = cfg["activations"], cfg["depths"]

    def kernel_curves(act: str, depth: int) -> dict:
        nngp, ntk = _arch(cfg, depth, act).kernels(x[:1], x)
        nngp, ntk = nngp[0], ntk[0]
        nngp_diag = _arch(cfg, depth, act).nngp(x, diag=True)
        # The NTK diagonal is constant on the circle (rotation invariance), so Θ(x0, x0) normalizes it.
        k_n = nngp / torch.sqrt(nngp_diag[0] * nngp_diag)
        t_n = ntk / ntk[0]
        grid = wp.to_numpy(angles)

        def at(v: torch.Tensor, a: float) -> float:
            return float(np.interp(a, grid, wp.to_numpy(v)))

        return {
            "nngp": k_n, "ntk": t_n,
            "nngp_diag": float(nngp_diag[0]), "ntk_diag": float(ntk[0]),
            "nngp_at_half_pi": at(k_n, math.pi / 2), "nngp_at_pi": at(k_n, math.pi),
            "ntk_at_half_pi": at(t_n, math.pi / 2),
        }

    curves: dict[tuple[str, int], dict] = {}
    for act, depth in ctx.progress([(a, d) for a in acts for d in depths], desc="kernels"):
        key = f"kernel/{act}/depth={depth}"
        curves[act, depth] = c = ctx.cached(key, lambda: kernel_curves(act, depth))
        ctx.add_row(key, {"activation": act, "depth": depth, "K(π/2)/K(0)": c["nngp_at_half_pi"],
                          "K(π)/K(0)": c["nngp_at_pi"], "Θ(π/2)/Θ(0)": c["ntk_at_half_pi"],
                          "K(x,x)": c["nngp_diag"]})

    p = cfg["prior"]
    if p["domain"] == "circle":
        # Half-open [-π, π): the endpoint would repeat the first input and make K singular.
        t = torch.linspace(-math.pi, math.pi, p["num_points"] + 1, **opts)[:-1]
        xp, t_label = _circle(t, dim, radius), "angle t  (x = r(cos t, sin t))"
    elif p["domain"] == "line":
        t = torch.linspace(-p["extent"], p["extent"], p["num_points"], **opts)
        xp = torch.zeros(t.numel(), dim, **opts)
        xp[:, 0] = t
        t_label = "t  (x = (t, 0, …))"
    else:
        raise ValueError(f"prior.domain must be 'circle' or 'line', got {p['domain']!r}")

    def prior_samples(act: str, offset: int) -> dict:
        # A deep kernel on a fine grid is numerically rank deficient: start at the
        # configured relative jitter and escalate through the library's defaults.
        jitters = [p["jitter"], *(j for j in linalg.DEFAULT_JITTERS if j > p["jitter"])]
        samples, eps = wn.prior(_arch(cfg, p["depth"], act), xp, dtype=xp.dtype).sample(
            p["num_samples"], generator=ctx.generator(offset), jitters=jitters, return_jitter=True,
            name=f"depth-{p['depth']} {act} NNGP prior covariance")
        return {"t": t, "samples": samples, "jitter": eps}

    priors = {act: ctx.cached(f"prior/{act}", lambda: prior_samples(act, i)) for i, act in enumerate(acts)}

    fig, axes = wp.figure(2, len(acts), squeeze=False)
    colors = wp.colors(len(depths))
    for j, act in enumerate(acts):
        for row, (name, sym) in enumerate([("nngp", "K"), ("ntk", "Θ")]):
            ax = axes[row, j]
            for depth, col in zip(depths, colors):
                ax.plot(wp.to_numpy(angles), curves[act, depth][name], color=col, label=f"L = {depth}")
            wp.angle_axis(ax)
            wp.finish(ax, xlabel="angle θ between inputs",
                      ylabel=f"{sym}(x, x') / {sym}(x, x)",
                      title=f"{name.upper()}, {act}, σ_w²={cfg['weight_variance']:g}, σ_b²={cfg['bias_variance']:g}",
                      legend=(j == len(acts) - 1 and row == 0),
                      legend_loc="outside" if len(depths) > 6 else "best")
    ctx.savefig(fig, "kernel_vs_angle.png")

    fig, axes = wp.figure(1, len(acts), squeeze=False)
    for j, act in enumerate(acts):
        ax = axes[0, j]
        for s in priors[act]["samples"]:
            ax.plot(priors[act]["t"], s, linewidth=1.2)
        wp.finish(ax, xlabel=t_label, ylabel="f(x)",
                  title=f"NNGP prior samples, {act}, depth {p['depth']}", legend=False)
    ctx.savefig(fig, "prior_samples.png")
