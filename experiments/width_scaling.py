"""Width scaling: how fast finite-width kernels and training approach the infinite-width limit.

For a digits subset X (``n_points`` examples, ``center_norm`` preprocessing so x·x/d = 1) and
several independent networks at each width n (``seeds_per_width`` for the kernels at
initialization, the first ``train_seeds`` of them also trained), this measures

* ‖Θ̂₀ − Θ‖_F / ‖Θ‖_F: empirical NTK at initialization (``wn.empirical_ntk``, trace mode =
  mean over outputs) against the analytic NTK;
* ‖K̂ − K‖_F / ‖K‖_F: the empirical NNGP *of the readout's input*,
  K̂ = σ_b² + σ_w²·``wn.empirical_nngp``(hidden features), i.e. the output covariance of the
  network conditional on its (finite, random) hidden layers, against the analytic NNGP.
  This is the kernel with the Θ(n^{-1/2}) fluctuations; the output outer product f(x)f(x')ᵀ of
  one draw is a rank-O sample whose error does not shrink with width (recorded as
  ``nngp_draw_error`` to show exactly that);
* after ``train_steps`` of full-batch GD (MSE, η = ``lr_fraction`` · 2N/λ_max(Θ)) on the
  one-hot targets, the kernel drift ‖Θ̂_t − Θ̂₀‖_F/‖Θ̂₀‖_F (``TrainHistory.ntk_drift``) and the
  gap to the linearized network trained the same way, RMS of f_t − f_t^lin on the training
  and on held-out points (Lee et al. 2019: both O(n^{-1/2}) at worst).

Power laws c·n^slope are fitted to the seed means on log-log axes.  The theory slope of the
kernel errors at initialization is −1/2 (a mean of n i.i.d. terms; this is *the* width-scaling
slope the issue's acceptance window [−0.7, −0.3] is about).  The kernel drift is expected to be
steeper, ≈ −1: Lee et al. (2019) prove only the O(n^{-1/2}) upper bound, but in the NTK
parameterization every parameter moves by O(n^{-1/2}) and each neuron's contribution to
Θ̂ changes linearly in its readout weight, whose sign is random, so the n contributions add
incoherently: (1/n)·√n·n^{-1/2} = O(1/n) (the 1/n rate of dΘ/dt in Dyer & Gur-Ari 2019).
Measured (depth 2, 32 digits, 3 seeds, 2026-11-22): −0.88 over widths 64–1024 (the small
config); with ``train_widths`` up to 4096, −0.955 overall and −1.03 over 512–4096, while the
init errors stay at −0.48 / −0.47 (``benchmarks/RESULTS.md``).

Results (results.json, section ``results``):

* ``kernels/width=<n>/seed=<s>``: ``ntk_error``, ``nngp_error``, ``nngp_draw_error``;
* ``training/width=<n>/seed=<s>``: ``drift``, ``lin_error_train``, ``lin_error_test``,
  ``lin_change`` (RMS of f_t^lin − f_0 on the training set, the size of the movement the gap
  is measured against), ``final_loss``, ``final_loss_lin``, ``diverged``;
* ``width=<n>``: per quantity ``{"mean", "median", "per_seed"}``;
* ``slopes``: fitted exponents of the seed means (``ntk_error``, ``nngp_error``, ``drift``,
  ``lin_error_train``, ``lin_error_test``; NaN → null when fewer than two widths), and
  ``drift_wide``, the drift slope over the wider half of ``train_widths``;
* ``learning_rate``, ``max_learning_rate``.

Figures: ``kernel_error_vs_width.png`` (both kernel errors with fitted slopes and per-seed
points; the single-draw output NNGP for contrast), ``drift_vs_width.png`` (kernel drift, and
the network-vs-linearization gap, each with its fitted slope).
"""
from __future__ import annotations

import functools
import statistics

import torch
from torch import nn

import wideNN as wn
from wideNN import data as wd
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "num_threads": 0,  # 0: leave torch's setting; tiny problems run fastest on 1 thread on a busy CPU
    "n_points": 32,
    "n_test": 32,
    "depth": 2,
    "activation": "relu",
    "weight_variance": 2.0,
    "bias_variance": 0.1,
    "widths": [64, 128, 256, 512, 1024, 2048],
    "train_widths": [],  # widths for the training measurements; empty: the same as ``widths``
    "seeds_per_width": 8,  # networks per width for the kernel errors (cheap)
    "train_seeds": 3,  # of those, how many are also trained (the first ones)
    "train_steps": 100,
    "lr_fraction": 0.5,
}

KERNEL_KEYS = ("ntk_error", "nngp_error", "nngp_draw_error")
TRAIN_KEYS = ("drift", "lin_error_train", "lin_error_test", "lin_change")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _rms(a: torch.Tensor) -> float:
    return float(a.pow(2).mean().sqrt())


def _summary(values: list) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "median": None, "per_seed": values}
    return {"mean": statistics.fmean(vals), "median": statistics.median(vals), "per_seed": values}


def run(cfg: dict, ctx) -> None:
    # (the harness applies cfg["num_threads"])
    opts = dict(dtype=ctx.dtype, device=ctx.device)
    split = wd.train_test_split_digits(cfg["n_points"], cfg["n_test"], seed=ctx.seed)
    x = wd.preprocess(split.x_train, "center_norm").to(**opts)
    x_test = wd.preprocess(split.x_test, "center_norm").to(**opts)
    y = split.y_train.to(**opts)
    d, o = x.shape[1], y.shape[1]
    arch = wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                           weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"],
                           parameterization="ntk")
    nngp, ntk = arch.kernels(x)
    eta_max = wn.max_learning_rate(ntk, x)
    eta = cfg["lr_fraction"] * eta_max
    ctx.record("max_learning_rate", eta_max)
    ctx.record("learning_rate", eta)
    widths = cfg["widths"]
    train_widths = cfg["train_widths"] or widths
    seeds = range(cfg["seeds_per_width"])
    train_seeds = range(min(cfg["train_seeds"], cfg["seeds_per_width"]))

    def build(width: int, s: int) -> nn.Module:
        # seeds are spread by width so no two networks share an initialization stream
        return arch.build(d, width, o, seed=ctx.seed + 1000 * s + width, **opts)

    def kernel_errors(width: int, s: int) -> dict:
        net = build(width, s)
        features = nn.Sequential(*list(net)[:-1])  # everything before the readout Dense
        k_hat = cfg["bias_variance"] + cfg["weight_variance"] * wn.empirical_nngp(features, x)
        return {"ntk_error": _rel(wn.empirical_ntk(net, x), ntk),
                "nngp_error": _rel(k_hat, nngp),
                "nngp_draw_error": _rel(wn.empirical_nngp(net, x), nngp)}

    def training(width: int, s: int) -> dict:
        net = build(width, s)
        lin = wn.linearize(net)
        steps = cfg["train_steps"]
        with torch.no_grad():
            f0 = net(x)
        key = f"training/width={width}/seed={s}"  # its cell's key; killed training resumes
        h = wn.train(net, x, y, steps=steps, learning_rate=eta, ntk_at=[0, steps], progress=False,
                     checkpoint=ctx.checkpoint_path(key, part="net"))
        h_lin = wn.train(lin, x, y, steps=steps, learning_rate=eta, progress=False,
                         checkpoint=ctx.checkpoint_path(key, part="lin"))
        diverged = h.diverged or h_lin.diverged
        with torch.no_grad():
            gap_train, gap_test = net(x) - lin(x), net(x_test) - lin(x_test)
            change = lin(x) - f0
        return {"drift": float(h.ntk_drift()[-1]) if not h.diverged else float("nan"),
                "lin_error_train": _rms(gap_train), "lin_error_test": _rms(gap_test),
                "lin_change": _rms(change), "final_loss": float(h.final_loss),
                "final_loss_lin": float(h_lin.final_loss), "diverged": diverged}

    jobs = [("kernels", w, s) for w in widths for s in seeds] + \
           [("training", w, s) for w in train_widths for s in train_seeds]
    # independent cells: under torchrun they are split over the ranks
    cells = {f"{kind}/width={w}/seed={s}": functools.partial(kernel_errors if kind == "kernels" else training, w, s)
             for kind, w, s in jobs}
    done = ctx.grid(cells, desc="width scaling")
    per: dict[tuple[str, int, int], dict] = {(kind, w, s): done[f"{kind}/width={w}/seed={s}"]
                                             for kind, w, s in jobs}

    summaries: dict[int, dict] = {}
    for w in sorted(set(widths) | set(train_widths)):
        summ = {}
        if w in widths:
            summ.update({k: _summary([per["kernels", w, s][k] for s in seeds]) for k in KERNEL_KEYS})
        if w in train_widths:
            summ.update({k: _summary([per["training", w, s][k] for s in train_seeds]) for k in TRAIN_KEYS})
            summ["diverged_seeds"] = sum(bool(per["training", w, s]["diverged"]) for s in train_seeds)
        summaries[w] = ctx.record(f"width={w}", summ)
        row = {"width": w, **{k: summ[k]["mean"] for k in (*KERNEL_KEYS[:2], "drift", "lin_error_train")
                              if k in summ}}
        ctx.add_row(f"width={w}", row)

    def series(key: str, ws: list) -> tuple[list, list]:
        return ws, [summaries[w][key]["mean"] for w in ws]

    slopes = {k: wp.power_law_fit(*series(k, widths))[0] for k in ("ntk_error", "nngp_error")}
    slopes.update({k: wp.power_law_fit(*series(k, train_widths))[0]
                   for k in ("drift", "lin_error_train", "lin_error_test")})
    # the local drift slope over the wider half of the widths: it steepens towards −1
    wide = sorted(train_widths)[max(0, (len(train_widths) - 1) // 2):]
    slopes["drift_wide"] = wp.power_law_fit(*series("drift", wide))[0] if len(wide) >= 2 else float("nan")
    slopes = ctx.record("slopes", slopes)
    ctx.log("fitted slopes: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a"
                                          for k, v in slopes.items()))

    desc = (f"{cfg['activation']}, depth {cfg['depth']}, σ_w²={cfg['weight_variance']:g}, "
            f"σ_b²={cfg['bias_variance']:g}, {cfg['n_points']} digits")
    colors = wp.colors(3, "tab10")
    fig, ax = wp.figure(size=(6.5, 4.8))
    for key, label, col in [("ntk_error", "NTK ‖Θ̂₀ − Θ‖/‖Θ‖", colors[0]),
                            ("nngp_error", "NNGP ‖K̂ − K‖/‖K‖ (readout input)", colors[1])]:
        for s in seeds:
            ax.plot(widths, [per["kernels", w, s][key] for w in widths], linestyle="none", marker=".",
                    color=col, alpha=0.35)
        wp.loglog_fit(ax, *series(key, widths), label=f"{label}, mean of {len(seeds)}", color=col)
    wp.loglog_fit(ax, *series("nngp_draw_error", widths), fit=False, color="0.5", marker="s",
                  label="f(x)f(x')ᵀ of one draw (no limit)")
    ref = summaries[widths[0]]["ntk_error"]["mean"]
    ax.plot(widths, [ref * (w / widths[0]) ** -0.5 for w in widths], color="k", linestyle=":",
            linewidth=1.0, label="∝ n^(−1/2)")
    wp.finish(ax, xlabel="width n", ylabel="relative Frobenius error", legend_loc="lower left",
              title=f"Empirical vs analytic kernels at init\n{desc}")
    ctx.savefig(fig, "kernel_error_vs_width.png")

    fig, axes = wp.figure(1, 2, size=(10.5, 4.0))
    for s in train_seeds:
        axes[0].plot(train_widths, [per["training", w, s]["drift"] for w in train_widths],
                     linestyle="none", marker=".", color=colors[0], alpha=0.35)
    wp.loglog_fit(axes[0], *series("drift", train_widths), color=colors[0],
                  label=f"‖Θ̂_t − Θ̂₀‖/‖Θ̂₀‖, mean of {len(train_seeds)}")
    d0 = summaries[train_widths[0]]["drift"]["mean"]
    if d0 is not None and d0 > 0:
        for power, style in ((-0.5, ":"), (-1.0, "-.")):
            axes[0].plot(train_widths, [d0 * (w / train_widths[0]) ** power for w in train_widths],
                         color="k", linestyle=style, linewidth=1.0,
                         label=f"∝ n^({power:g}) ({'upper bound' if power == -0.5 else 'expected'})")
    wp.finish(axes[0], xlabel="width n", ylabel="relative NTK change",
              title=f"Kernel drift after {cfg['train_steps']} GD steps (η = {cfg['lr_fraction']:g}·η_max)")
    wp.loglog_fit(axes[1], *series("lin_error_train", train_widths), color=colors[1],
                  label="RMS f_t − f_t^lin, train points")
    wp.loglog_fit(axes[1], *series("lin_error_test", train_widths), color=colors[2],
                  label="RMS f_t − f_t^lin, test points")
    wp.loglog_fit(axes[1], *series("lin_change", train_widths), fit=False, color="0.5", marker="s",
                  label="RMS f_t^lin − f_0 (scale of the motion)")
    wp.finish(axes[1], xlabel="width n", ylabel="RMS output difference", legend_loc="lower left",
              title="Network vs its linearization after training")
    ctx.savefig(fig, "drift_vs_width.png")
