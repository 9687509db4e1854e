"""Posterior vs ensemble: wide networks trained by gradient descent against the NTK-GP.

A 1-D regression problem on the circle: inputs x(θ) = √2 (cos θ, sin θ) (so x·x/d = 1),
``n_train`` random angles with targets y = sin θ + ½ cos 3θ, and a grid of ``n_test`` angles.

1. *NN posterior vs GP posterior* (Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent"): an ensemble (``wn.Ensemble``) of
   ``ensemble_size`` networks of width ``width`` is trained by full-batch GD (MSE, rate
   η = ``lr_fraction`` · 2N/λ_max(Θ)); at each of ``times`` (GD steps) its mean ± std on the
   grid is compared with the NTK-GP at the same time, ``wn.posterior(kernel="ntk", t=times)``
   (Lee et al. 2019, eqs 15-16).  The ensemble's sample mean has a Monte-Carlo error of
   about std/√S, so agreement means discrepancies of a few times that, not zero.
2. *Linearized vs original dynamics*: for each of ``dynamics_widths`` one network and its
   linearization (``wn.linearize``) are trained side by side with the same GD; the training
   losses and the outputs at ``n_tracked`` test angles are recorded every ``eval_every`` steps.

Results (results.json, section ``results``):

* ``data``: ``train_angle``, ``y_train``, ``test_angle``; ``learning_rate``, ``max_learning_rate``;
* ``gp``: ``times``, ``mean`` and ``std`` (T × n_test);
* ``ensemble``: ``mean``, ``std`` (T × n_test), ``loss_steps`` and ``loss_mean`` (ensemble-mean
  training loss at every step), ``wall_s``;
* ``discrepancy``: per time, ``max_abs_over_gp_std`` = max_x |mean_ens − mean_GP| / std_GP,
  ``rms_over_gp_std`` = RMS(mean_ens − mean_GP) / RMS(std_GP), ``std_ratio`` = mean of
  std_ens / std_GP, and ``mc_z_max`` = max_x |mean_ens − mean_GP| / (std_GP/√S);
* ``summary``: the worst of each over time;
* ``dynamics/width=<n>``: ``steps``, ``loss`` and ``loss_lin`` (every step), ``eval_steps``,
  ``outputs`` and ``outputs_lin`` (eval step × tracked point), ``tracked_angle``,
  ``max_output_gap`` (max over steps and points of |f_t − f_t^lin|), ``final_loss``, ``final_loss_lin``.

Figures: ``posterior_vs_ensemble.png`` (mean ± std bands of ensemble and NTK-GP over θ at
three training times, training points marked) and ``dynamics.png`` (training loss vs step of
network and linearization, log-log; tracked test outputs vs step).
"""
from __future__ import annotations

import math
import time

import torch

import wideNN as wn
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "num_threads": 0,  # 0: leave torch's setting
    "n_train": 8,
    "n_test": 100,
    "depth": 2,
    "activation": "relu",
    "weight_variance": 2.0,
    "bias_variance": 0.1,
    "width": 512,
    "ensemble_size": 32,
    "times": [0, 3, 10, 30, 100, 300],
    "lr_fraction": 0.25,
    "dynamics_widths": [64, 512],
    "dynamics_steps": 300,
    "eval_every": 5,
    "n_tracked": 3,
}


def _circle(theta: torch.Tensor) -> torch.Tensor:
    return math.sqrt(2.0) * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)


def _target(theta: torch.Tensor) -> torch.Tensor:
    return (torch.sin(theta) + 0.5 * torch.cos(3 * theta)).unsqueeze(1)


def run(cfg: dict, ctx) -> None:
    # (the harness applies cfg["num_threads"])
    opts = dict(dtype=ctx.dtype, device=ctx.device)
    times = sorted(set(cfg["times"]))
    if not times or times[0] < 0:
        raise ValueError(f"times must be non-negative GD step counts, got {cfg['times']}")
    theta = (torch.rand(cfg["n_train"], generator=ctx.generator(0, "cpu"), dtype=torch.float64)
             * 2 * math.pi - math.pi).sort().values.to(**opts)
    grid = torch.linspace(-math.pi, math.pi, cfg["n_test"] + 1, **opts)[:-1]
    x, y, xt = _circle(theta), _target(theta), _circle(grid)
    arch = wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                           weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"],
                           parameterization="ntk")
    eta_max = wn.max_learning_rate(arch, x)
    eta = cfg["lr_fraction"] * eta_max
    ctx.record("data", {"train_angle": theta, "y_train": y[:, 0], "test_angle": grid})
    ctx.record("max_learning_rate", eta_max)
    ctx.record("learning_rate", eta)
    size = cfg["ensemble_size"]

    def gp() -> dict:
        post = wn.posterior(arch, x, y, xt, kernel="ntk", t=torch.tensor(times, dtype=torch.float64),
                            learning_rate=eta)
        return {"times": times, "mean": post.mean[..., 0], "std": post.std}

    def ensemble() -> dict:
        t0 = time.perf_counter()
        ens = wn.Ensemble(arch, cfg["width"], in_features=2, out_features=1, size=size,
                          seed=ctx.seed, **opts)
        means, stds, losses = [], [], []
        done = 0
        # GD keeps no state between calls, so training in segments up to each time is one run;
        # each segment keeps its own checkpoint, so a rerun replays the finished ones at once
        for t in ctx.progress(times, desc="ensemble"):
            if t > done:
                h = ens.train(x, y, steps=t - done, learning_rate=eta, progress=False,
                              checkpoint=ctx.checkpoint_path("ensemble", part=f"t={t}"))
                losses.append(h.loss[:-1].mean(1))
                done = t
            with torch.no_grad():
                out = ens(xt)[..., 0]
            means.append(out.mean(0))
            stds.append(out.std(0))
        with torch.no_grad():
            final = wn.mse_loss(ens(x), y).mean()
        # the histories' losses are on the CPU (TrainHistory.loss); the final loss is on ctx.device
        final = final.reshape(1).cpu()
        loss = torch.cat([*losses, final.to(losses[0].dtype)]) if losses else final
        return {"mean": torch.stack(means), "std": torch.stack(stds), "loss_steps": list(range(done + 1)),
                "loss_mean": loss, "wall_s": time.perf_counter() - t0}

    g = ctx.cached("gp", gp)
    e = ctx.cached("ensemble", ensemble)
    ctx.log(f"ensemble of {size} x width {cfg['width']}, {times[-1]} steps: {e['wall_s']:.1f} s")

    gm, gs = torch.tensor(g["mean"]), torch.tensor(g["std"])
    em, es = torch.tensor(e["mean"]), torch.tensor(e["std"])
    disc = []
    for i, t in enumerate(times):
        diff = (em[i] - gm[i]).abs()
        row = {"t": t,
               "max_abs_over_gp_std": float((diff / gs[i]).max()),
               "rms_over_gp_std": float(diff.pow(2).mean().sqrt() / gs[i].pow(2).mean().sqrt()),
               "std_ratio": float((es[i] / gs[i]).mean()),
               "mc_z_max": float((diff / (gs[i] / math.sqrt(size))).max())}
        disc.append(row)
        ctx.add_row(f"t={t}", row)
    ctx.record("discrepancy", disc)
    summary = ctx.record("summary", {
        "max_abs_over_gp_std": max(r["max_abs_over_gp_std"] for r in disc),
        "rms_over_gp_std": max(r["rms_over_gp_std"] for r in disc),
        "std_ratio_min": min(r["std_ratio"] for r in disc),
        "std_ratio_max": max(r["std_ratio"] for r in disc),
        "mc_z_max": max(r["mc_z_max"] for r in disc),
        "ensemble_size": size,
    })
    ctx.log("worst over time: " + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))

    n_tr = min(cfg["n_tracked"], cfg["n_test"])
    # tracked points spread over the circle, away from the grid's ends
    tracked = [int((k + 0.5) * cfg["n_test"] / n_tr) for k in range(n_tr)]

    def dynamics(width: int) -> dict:
        net = arch.build(2, width, 1, seed=ctx.seed + 10_000 + width, **opts)
        lin = wn.linearize(net)
        xs = xt[tracked]

        def track(model) -> dict:
            with torch.no_grad():
                return {"out": model(xs)[:, 0].detach().cpu()}

        steps = cfg["dynamics_steps"]
        key = f"dynamics/width={width}"  # a killed training resumes from its checkpoint
        h = wn.train(net, x, y, steps=steps, learning_rate=eta, metrics=track, eval_every=cfg["eval_every"],
                     progress=False, checkpoint=ctx.checkpoint_path(key, part="net"))
        h_lin = wn.train(lin, x, y, steps=steps, learning_rate=eta, metrics=track, eval_every=cfg["eval_every"],
                         progress=False, checkpoint=ctx.checkpoint_path(key, part="lin"))
        out, out_lin = torch.stack(h.metrics["out"]), torch.stack(h_lin.metrics["out"])
        return {"steps": h.steps, "loss": h.loss, "loss_lin": h_lin.loss, "eval_steps": h.metric_steps,
                "outputs": out, "outputs_lin": out_lin, "tracked_angle": grid[tracked],
                "max_output_gap": float((out - out_lin).abs().max()),
                "final_loss": float(h.final_loss), "final_loss_lin": float(h_lin.final_loss),
                "diverged": h.diverged or h_lin.diverged}

    dyn = {w: ctx.cached(f"dynamics/width={w}", lambda: dynamics(w)) for w in cfg["dynamics_widths"]}
    for w, d in dyn.items():
        ctx.log(f"width {w}: max |f_t − f_t^lin| at tracked points {d['max_output_gap']:.3g}, "
                f"final loss net {d['final_loss']:.3g} / lin {d['final_loss_lin']:.3g}")

    # ---- figures
    th_tr, th = wp.to_numpy(theta), wp.to_numpy(grid)
    show = sorted({0, len(times) // 2, len(times) - 1})
    fig, axes = wp.figure(1, len(show), size=(4.3 * len(show), 3.6), squeeze=False)
    for j, i in enumerate(show):
        ax = axes[0, j]
        wp.band(ax, th, gm[i], gs[i], label="NTK-GP mean ± std", color="tab:blue", n_std=1.0)
        # the ensemble's band as outlines over the GP's shaded one: both stay readable
        wp.band(ax, th, em[i], es[i], label=f"ensemble of {size} (width {cfg['width']}) mean ± std",
                color="tab:orange", linestyle="--", outline=True)
        ax.plot(th_tr, wp.to_numpy(y[:, 0]), color="k", marker="o", markersize=5, linestyle="none",
                label="training data")
        wp.finish(ax, xlabel="angle θ", ylabel="f(x(θ))", title=f"after t = {times[i]} GD steps",
                  legend=(j == 0), legend_loc="lower left")
    fig.suptitle(f"Trained ensemble vs NTK-GP ({cfg['activation']}, depth {cfg['depth']}, "
                 f"η = {cfg['lr_fraction']:g}·η_max)")
    ctx.savefig(fig, "posterior_vs_ensemble.png")

    fig, axes = wp.figure(1, 2, size=(10.5, 4.0))
    cols = wp.colors(max(len(dyn), 2), "tab10")
    for (w, d), col in zip(dyn.items(), cols):
        steps = list(range(1, len(d["loss"]) + 1))  # shifted by one so step 0 shows on log axes
        axes[0].plot(steps, d["loss"], color=col, label=f"network, width {w}")
        axes[0].plot(steps, d["loss_lin"], color=col, linestyle="--", label=f"linearized, width {w}")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    wp.finish(axes[0], xlabel="GD step + 1", ylabel="training loss (1/2N)Σ(f − y)²",
              title="Original vs linearized training")
    w_wide, d_wide = list(dyn.items())[-1]
    pcols = wp.colors(max(n_tr, 2), "tab10")
    for k in range(n_tr):
        outs = [r[k] for r in d_wide["outputs"]]
        outs_lin = [r[k] for r in d_wide["outputs_lin"]]
        lab = f"θ = {wp.signed_zero_free(d_wide['tracked_angle'][k])}"
        axes[1].plot(d_wide["eval_steps"], outs, color=pcols[k], label=f"network, {lab}")
        axes[1].plot(d_wide["eval_steps"], outs_lin, color=pcols[k], linestyle="--", label=f"linearized, {lab}")
    wp.finish(axes[1], xlabel="GD step", ylabel="test output f_t(x)",
              title=f"Test outputs over training, width {w_wide}", legend_loc="outside")
    ctx.savefig(fig, "dynamics.png")
