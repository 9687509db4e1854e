"""Quickstart: NNGP and NTK-GP posteriors vs trained finite networks of growing width on the bundled digits.

The bundled UCI digits (8x8 images, offline) are split class-balanced
(``train_test_split_digits``), each image centred and scaled to norm √64
(``preprocess(..., "center_norm")``), and the targets are the one-hot 0.9/−0.1 encoding.
One ``Architecture`` (NTK parameterization) then gives

* ``nngp``: the exact Bayesian NNGP posterior mean (t = ∞, ``noise_variance``);
* ``ntk_gp``: the mean of infinitely many networks trained by gradient flow to t = ∞;
* ``ntk_gp_t``: the same at the training time of the finite networks (t = ``steps``
  at learning rate η, the time convention of docs/design.md), the fair comparison for them;
* ``nn``: ``seeds`` finite networks per width, trained with full-batch GD on the MSE
  L = (1/2N) Σ‖f − y‖² for ``steps`` steps at η = ``lr_fraction`` · ``max_learning_rate``
  (computed from the analytic NTK, so every width uses the same η and the same t);
* ``ensemble``: the mean output of those ``seeds`` networks.

A single trained network is the NTK-GP's mean *plus* a random function left over from its
initialization, which does not shrink with width; only averaging networks removes it. So
expect ``nn`` to sit below the GP lines at every width and ``ensemble`` to sit closer.  The
NTK-GP at time t predicts both: a network drawn at random has expected test MSE
MSE(mean) + mean variance, an average of S networks MSE(mean) + mean variance / S (the
variance of the trained networks' outputs over initializations, Lee et al. 2019), and
these are the lines the networks' MSEs approach as the width grows.

Results (results.json):

* ``rows``: one per model and width/seed, ``{model, width, seed, test_accuracy, test_mse,
  train_loss}`` plus ``diverged`` for networks. ``width``/``seed`` are ``null`` for the GPs
  (infinite width) and ``seed`` is ``null`` for the ensemble mean. ``test_mse`` is the mean
  over test points and outputs of (f − y)²; ``train_loss`` is (1/2N) Σ‖f − y‖² on the
  training set (the training objective).
* ``results``: ``gp`` (``nngp_accuracy``, ``ntk_gp_accuracy``, ``ntk_gp_t_accuracy``,
  the MSEs, ``t``, ``jitter``), ``gp_variance`` (``ntk_gp_t_variance``: the NTK-GP
  variance at t averaged over test points; ``expected_nn_mse`` and ``expected_ensemble_mse``
  as above), ``learning_rate``, ``max_learning_rate``,
  ``data`` (sizes), ``nn/width=W`` (per-seed accuracies, MSEs, losses, ensemble numbers),
  ``ntk_error/width=W``: ‖Θ̂ − Θ‖_F / ‖Θ‖_F between the empirical NTK of a freshly
  initialized network (seed 0; ``empirical_ntk``, trace mode) and the analytic NTK on the
  first ``ntk_points`` training inputs (expected to fall like width^-1/2).

Figures: ``accuracy_vs_width.png`` (test accuracy of each network, their mean, the ensemble
mean, and the three GPs as horizontal lines; right panel: test MSE the same way, with the
NTK-GP's expected MSE of one network and of the ensemble mean) and
``ntk_error_vs_width.png`` (the empirical-vs-analytic NTK error with its fitted slope).
"""
from __future__ import annotations

import torch

import wideNN as wn
from wideNN import data as wd
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",          # GP computations and NTK comparison
    "network_dtype": "float32",  # finite-network training
    "n_train": 500,
    "n_test": 500,
    "split_seed": 0,
    "preprocessing": "center_norm",
    "depth": 1,
    "activation": "relu",
    "weight_variance": 1.0,
    "bias_variance": 0.1,
    "widths": [64, 256, 1024],
    "seeds": 3,
    "steps": 1000,
    "lr_fraction": 0.7,
    "noise_variance": 0.0,
    "ntk_points": 100,
}

GP_LABELS = {"nngp": "NNGP mean (Bayes)", "ntk_gp": "NTK-GP mean, t = ∞", "ntk_gp_t": "NTK-GP mean, t = steps"}


def _mse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred - y) ** 2).mean())


def _loss(pred: torch.Tensor, y: torch.Tensor) -> float:
    # the training objective's convention: (1/2N) Σ_i ‖f(x_i) − y_i‖²
    return float(wn.mse_loss(pred, y))


def run(cfg: dict, ctx) -> None:
    opts = dict(dtype=ctx.dtype, device=ctx.device)
    net_dtype = {"float32": torch.float32, "float64": torch.float64}.get(cfg["network_dtype"])
    if net_dtype is None:
        raise ValueError(f"network_dtype must be 'float32' or 'float64', got {cfg['network_dtype']!r}")
    if cfg["seeds"] < 1 or not cfg["widths"]:
        raise ValueError("need seeds >= 1 and at least one width")

    split = wd.train_test_split_digits(cfg["n_train"], cfg["n_test"], seed=cfg["split_seed"], dtype=ctx.dtype)
    x_tr = wd.preprocess(split.x_train, cfg["preprocessing"]).to(**opts)
    x_te = wd.preprocess(split.x_test, cfg["preprocessing"]).to(**opts)
    y_tr, y_te = split.y_train.to(**opts), split.y_test.to(**opts)
    lab_tr, lab_te = split.labels_train.to(ctx.device), split.labels_test.to(ctx.device)
    n, d, o = x_tr.shape[0], x_tr.shape[1], y_tr.shape[1]
    ctx.record("data", {"dataset": "digits", "n_train": n, "n_test": x_te.shape[0], "in_features": d})

    arch = wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                           weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"],
                           parameterization="ntk")
    lr_max = ctx.cached("max_learning_rate", lambda: wn.max_learning_rate(arch, x_tr))
    lr = ctx.cached("learning_rate", lambda: cfg["lr_fraction"] * lr_max)
    steps = cfg["steps"]
    ctx.log(f"{arch!r}; GD at η = {lr:.4g} ({cfg['lr_fraction']:g} × max {lr_max:.4g}) for {steps} steps")

    x_all = torch.cat([x_tr, x_te])  # train and test predictions from one solve

    def gp() -> dict:
        out = {"t": steps}
        bayes = wn.posterior(arch, x_tr, y_tr, x_all, kernel="nngp",
                             noise_variance=cfg["noise_variance"], compute_variance=False, dtype=ctx.dtype)
        flow = wn.posterior(arch, x_tr, y_tr, x_all, kernel="ntk", t=torch.tensor([float(steps), float("inf")]),
                            learning_rate=lr, noise_variance=cfg["noise_variance"], compute_variance=False,
                            dtype=ctx.dtype)
        out["jitter"] = bayes.jitter
        for name, mean in (("nngp", bayes.mean), ("ntk_gp_t", flow.mean[0]), ("ntk_gp", flow.mean[1])):
            out[f"{name}_accuracy"] = wd.accuracy(mean[n:], lab_te)
            out[f"{name}_mse"] = _mse(mean[n:], y_te)
            out[f"{name}_train_loss"] = _loss(mean[:n], y_tr)
            out[f"{name}_train_accuracy"] = wd.accuracy(mean[:n], lab_tr)
        return out

    g = ctx.cached("gp", gp)

    def gp_variance() -> dict:
        post = wn.posterior(arch, x_tr, y_tr, x_te, kernel="ntk", t=float(steps), learning_rate=lr,
                            noise_variance=cfg["noise_variance"], compute_variance=True, dtype=ctx.dtype)
        var = float(post.variance.mean())
        return {"ntk_gp_t_variance": var, "expected_nn_mse": g["ntk_gp_t_mse"] + var,
                "expected_ensemble_mse": g["ntk_gp_t_mse"] + var / cfg["seeds"]}

    gv = ctx.cached("gp_variance", gp_variance)
    ctx.log(f"NTK-GP at t = {steps}: test MSE of the mean {g['ntk_gp_t_mse']:.4g}, expected for one "
            f"network {gv['expected_nn_mse']:.4g}, for the mean of {cfg['seeds']} {gv['expected_ensemble_mse']:.4g}")
    for name in GP_LABELS:
        ctx.add_row(name, {"model": name, "width": None, "seed": None, "test_accuracy": g[f"{name}_accuracy"],
                           "test_mse": g[f"{name}_mse"], "train_loss": g[f"{name}_train_loss"]})

    def finite(width: int) -> dict:
        # member i is arch.build(..., seed=ctx.seed + i): all seeds trained in one vmapped pass
        ens = wn.Ensemble(arch, width, d, o, size=cfg["seeds"], seed=ctx.seed, dtype=net_dtype, device=ctx.device)
        hist = ens.train(x_tr.to(net_dtype), y_tr.to(net_dtype), steps=steps, learning_rate=lr,
                         optimizer="gd", loss="mse", progress=False,
                         checkpoint=ctx.checkpoint_path(f"nn/width={width}"))  # a killed training resumes
        with torch.no_grad():
            f_tr = ens(x_tr.to(net_dtype)).to(ctx.dtype)
            f_te = ens(x_te.to(net_dtype)).to(ctx.dtype)
        m_tr, m_te = f_tr.mean(0), f_te.mean(0)
        finite_ok = torch.isfinite(f_te).all(dim=(1, 2))
        return {
            "test_accuracy": [wd.accuracy(f, lab_te) if ok else None for f, ok in zip(f_te, finite_ok)],
            "test_mse": [_mse(f, y_te) for f in f_te],
            "train_loss": [_loss(f, y_tr) for f in f_tr],
            "diverged": [bool(not ok) for ok in finite_ok] if not hist.diverged else [True] * cfg["seeds"],
            "steps_done": hist.steps,
            "ensemble_test_accuracy": wd.accuracy(m_te, lab_te) if bool(finite_ok.all()) else None,
            "ensemble_test_mse": _mse(m_te, y_te),
            "ensemble_train_loss": _loss(m_tr, y_tr),
        }

    def ntk_error(width: int) -> float:
        xs = x_tr[: cfg["ntk_points"]]
        net = arch.build(d, width, o, seed=ctx.seed, dtype=ctx.dtype, device=ctx.device)
        emp = wn.empirical_ntk(net, xs, mode="trace")
        ana = arch.ntk(xs)
        return float(torch.linalg.norm(emp - ana) / torch.linalg.norm(ana))

    nets, errs = {}, {}
    for width in ctx.progress(cfg["widths"], desc="widths"):
        r = nets[width] = ctx.cached(f"nn/width={width}", lambda: finite(width))
        errs[width] = ctx.cached(f"ntk_error/width={width}", lambda: ntk_error(width))
        for i in range(cfg["seeds"]):
            ctx.add_row(f"nn/width={width}/seed={ctx.seed + i}", {
                "model": "nn", "width": width, "seed": ctx.seed + i, "test_accuracy": r["test_accuracy"][i],
                "test_mse": r["test_mse"][i], "train_loss": r["train_loss"][i], "diverged": r["diverged"][i]})
        ctx.add_row(f"ensemble/width={width}", {
            "model": "ensemble", "width": width, "seed": None, "test_accuracy": r["ensemble_test_accuracy"],
            "test_mse": r["ensemble_test_mse"], "train_loss": r["ensemble_train_loss"],
            "diverged": any(r["diverged"])})
        ctx.log(f"width {width}: nn accuracy {r['test_accuracy']}, ensemble {r['ensemble_test_accuracy']}, "
                f"NTK rel. error {errs[width]:.3g}")

    ctx.table(ctx.rows, columns=["model", "width", "seed", "test_accuracy", "test_mse", "train_loss", "diverged"])
    _figures(cfg, ctx, arch, g, gv, nets, errs, lr)


def _figures(cfg, ctx, arch, g, gv, nets, errs, lr) -> None:
    widths = list(cfg["widths"])
    fig, axes = wp.figure(1, 2, size=(11.0, 4.0))
    # NNGP and NTK-GP (t = ∞) often coincide: the NNGP is a wide pale band and the NTK-GP a thin
    # dashed line on top of it, so both stay visible; a note gives both values when they overlap
    gp_style = {"nngp": dict(color="tab:red", linestyle="-", linewidth=7, alpha=0.3),
                "ntk_gp": dict(color="tab:blue", linestyle="--", linewidth=1.5),
                "ntk_gp_t": dict(color="tab:cyan", linestyle="--", linewidth=1.5)}
    for ax, metric, ylabel in ((axes[0], "test_accuracy", "test accuracy"), (axes[1], "test_mse", "test MSE")):
        key = metric.replace("test_", "")
        for name, label in GP_LABELS.items():
            ax.axhline(g[f"{name}_{key}"], label=label, zorder=4, **gp_style[name])
        if metric == "test_mse":
            # the NTK-GP's prediction for the networks themselves, init fluctuations included
            ax.axhline(gv["expected_nn_mse"], color="k", linestyle="-.", linewidth=1.2, zorder=4,
                       label="NTK-GP, t: expected for one net")
            ax.axhline(gv["expected_ensemble_mse"], color="tab:green", linestyle="-.", linewidth=1.2, zorder=4,
                       label=f"NTK-GP, t: expected for {cfg['seeds']}-net mean")
        for j, w in enumerate(widths):
            vals = [v for v in nets[w][metric] if v is not None]
            ax.scatter([w] * len(vals), vals, color="0.5", s=18, zorder=3,
                       label=f"single nets ({cfg['seeds']} seeds)" if j == 0 else None)
        means = [sum(v for v in nets[w][metric] if v is not None) / max(1, sum(v is not None for v in nets[w][metric]))
                 for w in widths]
        ax.plot(widths, means, color="k", marker="o", label="mean over nets")
        ax.plot(widths, [nets[w][f"ensemble_{metric}"] for w in widths], color="tab:green", marker="s",
                label=f"ensemble mean output ({cfg['seeds']} nets)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        lo, hi = ax.get_ylim()
        a_nngp, a_ntk = g[f"nngp_{key}"], g[f"ntk_gp_{key}"]
        if abs(a_nngp - a_ntk) < 0.02 * (hi - lo):
            ax.annotate(f"NNGP {a_nngp:.4g}, NTK-GP t = ∞ {a_ntk:.4g} (overlapping)", xy=(0.02, a_ntk),
                        xycoords=("axes fraction", "data"), xytext=(0, 6 if metric == "test_mse" else -12),
                        textcoords="offset points", fontsize=8, color="tab:blue")
        wp.finish(ax, xlabel="hidden width", ylabel=ylabel, legend=(metric == "test_mse"), legend_loc="outside")
    fig.suptitle(f"digits, n_train={cfg['n_train']}: {arch.depth}-hidden-layer {arch.activation} nets "
                 f"(σ_w²={cfg['weight_variance']:g}, σ_b²={cfg['bias_variance']:g}), GD {cfg['steps']} steps "
                 f"at η={lr:.3g}")
    ctx.savefig(fig, "accuracy_vs_width.png")

    fig, ax = wp.figure()
    slope = wp.loglog_fit(ax, widths, [errs[w] for w in widths], label="‖Θ̂ − Θ‖_F / ‖Θ‖_F")
    ctx.record("ntk_error_slope", slope)
    ax.set_xticks(widths, [str(w) for w in widths])
    wp.finish(ax, xlabel="hidden width", ylabel="relative NTK error at init",
              title=f"empirical vs analytic NTK ({cfg['ntk_points']} digits)")
    ctx.savefig(fig, "ntk_error_vs_width.png")
