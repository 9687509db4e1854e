"""Uncertainty calibration: NNGP (and NTK-GP) predicted variance vs realized squared error on the test set.

The uncertainty check of Lee et al. 2018, "Deep Neural Networks as Gaussian Processes": test points are sorted by the
GP's predicted variance and cut into bins of ``points_per_bin`` consecutive points (100 in
Lee et al. 2018); each bin's mean predicted variance is plotted against its realized mean squared
error. A calibrated model sits on y = x; Lee et al. 2018 report that the two are well correlated.

Per test point: predicted variance = posterior variance K̄(x*, x*) of f(x*) (``wn.posterior``;
one value shared by the 10 outputs), as in the paper, plus ``noise_variance`` when
``include_noise`` (the predictive variance of a noisy target); realized squared error = mean
over the 10 one-hot outputs of (μ(x*) − y*)². The one-hot targets carry no label noise, so
K̄ alone is the natural comparison; the fitted σ² is then mostly model misfit, and adding it
lifts every bin by the same constant (reported as ``calibration_ratio_with_noise``). Hyperparameters
(σ_w², σ_b², σ²) are fitted by marginal likelihood on the training set
(``wn.fit_hyperparameters``, on at most ``fit.max_points`` training points), since the
variance's scale is only meaningful for hyperparameters the data support; ``fit.steps: 0``
keeps the configured ones. ``kernel: ntk`` is the NTK-GP (infinite ensemble trained to
t = ∞, same hyperparameters, ``noise_variance`` as ridge): its variance is the spread over
random initializations, not a Bayesian posterior.

Results (results.json, section ``results``):

* ``hyperparameters``: ``weight_variance``, ``bias_variance``, ``noise_variance`` used
  (and ``lml_history`` when fitted); ``n_train``, ``n_test``;
* ``points/<kernel>``: per test point ``variance`` and ``squared_error`` (resume key);
* ``<kernel>``: ``bin_variance`` (bin centres: mean predicted variance), ``bin_mse``
  (realized MSE), ``bin_mse_sem`` (its standard error), ``counts``, ``correlation``
  (Pearson, bins), ``correlation_log`` (Pearson of the logs, bins), ``spearman_points``
  (rank correlation over single points), ``calibration_ratio`` (mean squared error / mean
  predicted variance over the test set; 1 = calibrated on average),
  ``calibration_ratio_with_noise`` (the same with σ² added to every variance), ``accuracy``.

Figure: ``calibration.png`` (log-log, one series per kernel, y = x dashed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import stats

import wideNN as wn
from wideNN import data
from wideNN.lab.discovery import load_experiment
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "dataset": "digits",          # "digits" (bundled) or "mnist" (needs data_dir)
    "data_dir": None,
    "n_train": 800,
    "n_test": 997,                # digits: 1797 - n_train is every remaining image
    "preprocess": "center_norm",
    "depth": 3,
    "activation": "relu",
    "weight_variance": 2.0,       # starting point of the fit (or the values used with fit.steps 0)
    "bias_variance": 0.5,
    "noise_variance": 0.01,
    "kernels": ["nngp", "ntk"],
    "include_noise": False,       # True: predicted variance of a noisy target, K̄ + σ²
    "points_per_bin": 100,
    "fit": {
        "steps": 5,
        "lr": 1.0,
        "optimizer": "lbfgs",
        "learn_noise": True,
        "max_points": 300,        # marginal likelihood of a training subset: the fit is O(N³)
    },
}


def _loader():
    # the dataset/preprocessing logic lives with the hyperparameters experiment; reuse it
    return load_experiment("hyperparameters", Path(__file__).resolve().parent).load_classification


def _bins(variance: np.ndarray, sq_err: np.ndarray, per_bin: int) -> dict:
    order = np.argsort(variance, kind="stable")
    groups = np.array_split(order, max(1, len(order) // per_bin))
    return {
        "bin_variance": [float(variance[g].mean()) for g in groups],
        "bin_mse": [float(sq_err[g].mean()) for g in groups],
        "bin_mse_sem": [float(sq_err[g].std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else 0.0 for g in groups],
        "counts": [len(g) for g in groups],
    }


def _pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def run(cfg: dict, ctx) -> None:
    for k in cfg["kernels"]:
        if k not in ("nngp", "ntk"):
            raise ValueError(f"config key 'kernels': expected 'nngp' and/or 'ntk', got {k!r}")
    if cfg["points_per_bin"] < 2:
        raise ValueError("config key 'points_per_bin' must be at least 2")
    split = _loader()(cfg, ctx)
    ctx.record("n_train", split.x_train.shape[0])
    ctx.record("n_test", split.x_test.shape[0])
    start = wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                            weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"])
    f = cfg["fit"]

    def hyperparameters() -> dict:
        if f["steps"] == 0:
            return {"weight_variance": cfg["weight_variance"], "bias_variance": cfg["bias_variance"],
                    "noise_variance": cfg["noise_variance"]}
        m = min(f["max_points"], split.x_train.shape[0])
        pick = torch.randperm(split.x_train.shape[0], generator=ctx.generator(1, device="cpu"))[:m]
        pick = pick.to(split.x_train.device)
        res = wn.fit_hyperparameters(start, split.x_train[pick], split.y_train[pick], kernel="nngp",
                                     steps=f["steps"], lr=f["lr"], optimizer=f["optimizer"],
                                     noise_variance=cfg["noise_variance"], learn_noise=f["learn_noise"],
                                     dtype=ctx.dtype, progress=False,
                                     checkpoint=ctx.checkpoint_path("hyperparameters"))  # a killed fit resumes
        return {"weight_variance": float(res.architecture.weight_variance),
                "bias_variance": float(res.architecture.bias_variance),
                "noise_variance": res.noise_variance, "fit_points": m,
                "lml_history": [h["log_marginal_likelihood"] for h in res.history]}

    hp = ctx.cached("hyperparameters", hyperparameters)
    ctx.log(f"hyperparameters: σ_w²={hp['weight_variance']:.3g} σ_b²={hp['bias_variance']:.3g} "
            f"σ²={hp['noise_variance']:.3g}")
    arch = start.replace(weight_variance=hp["weight_variance"], bias_variance=hp["bias_variance"])
    noise = hp["noise_variance"]

    def points(kernel: str) -> dict:
        post = wn.posterior(arch, split.x_train, split.y_train, split.x_test, kernel=kernel,
                            noise_variance=noise, dtype=ctx.dtype)
        return {"variance": post.variance, "squared_error": ((post.mean - split.y_test) ** 2).mean(dim=1),
                "accuracy": data.accuracy(post.mean, split.labels_test)}

    summary = {}
    for kernel in cfg["kernels"]:
        p = ctx.cached(f"points/{kernel}", lambda: points(kernel))
        err = np.asarray(p["squared_error"], dtype=float)
        latent = np.asarray(p["variance"], dtype=float)
        var = latent + (noise if cfg["include_noise"] else 0.0)
        b = _bins(var, err, cfg["points_per_bin"])
        pos = (np.asarray(b["bin_variance"]) > 0) & (np.asarray(b["bin_mse"]) > 0)
        summary[kernel] = s = ctx.record(kernel, {
            **b,
            "correlation": _pearson(b["bin_variance"], b["bin_mse"]),
            "correlation_log": _pearson(np.log(np.asarray(b["bin_variance"])[pos]),
                                        np.log(np.asarray(b["bin_mse"])[pos])),
            "spearman_points": float(stats.spearmanr(var, err).statistic),
            "calibration_ratio": float(err.mean() / var.mean()),
            "calibration_ratio_with_noise": float(err.mean() / (latent.mean() + noise)),
            "accuracy": p["accuracy"],
        })
        ctx.add_row(kernel, {"kernel": kernel.upper(), "accuracy": s["accuracy"], "bins": len(s["counts"]),
                             "corr (bins)": s["correlation"], "corr log (bins)": s["correlation_log"],
                             "spearman (points)": s["spearman_points"],
                             "MSE / var": s["calibration_ratio"]})

    fig, ax = wp.figure(size=(5.6, 4.6))
    lo, hi = np.inf, -np.inf
    for (kernel, s), col, mk in zip(summary.items(), ["tab:blue", "tab:orange"], ["o", "s"]):
        x, y, e = (np.asarray(s[k]) for k in ("bin_variance", "bin_mse", "bin_mse_sem"))
        ax.errorbar(x, y, yerr=e, marker=mk, color=col, linestyle="-", linewidth=1, markersize=5, capsize=2,
                    label=f"{kernel.upper()}-GP  (r = {s['correlation']:.2f}, "
                          f"MSE/var = {s['calibration_ratio']:.2f})")
        pos = np.concatenate([x[x > 0], y[y > 0]])
        lo, hi = min(lo, pos.min()), max(hi, pos.max())
    span = np.array([lo / 1.5, hi * 1.5])
    ax.plot(span, span, linestyle="--", color="0.3", linewidth=1, label="y = x (calibrated)")
    # log axes when the bins span a decade or more, as the paper's plot does
    if hi / lo >= 10:
        ax.set_xscale("log")
        ax.set_yscale("log")
    source = "MNIST" if cfg["dataset"] == "mnist" else "digits"
    var_name = "posterior variance K̄ + σ²" if cfg["include_noise"] else "posterior variance K̄"
    wp.finish(ax, xlabel=f"predicted variance ({var_name})", ylabel="realized MSE on the test set",
              title=f"Uncertainty calibration: {source}, {split.x_train.shape[0]} train, "
                    f"{len(split.x_test)} test\nbins of {cfg['points_per_bin']} test points; "
                    f"σ_w²={hp['weight_variance']:.2f}, σ_b²={hp['bias_variance']:.2f}, σ²={noise:.2g}",
              legend_loc="upper left")
    ctx.savefig(fig, "calibration.png")
