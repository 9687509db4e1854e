"""UCI regression: NNGP, NTK-GP and a trained MLP ensemble, RMSE and test log-likelihood over random splits.

The usual GP-literature benchmark (90/10 splits, ``n_splits.txt`` of each set) with the
three views of one architecture side by side. Inputs and targets are standardized with
training statistics (``wideNN.data.load_uci``); predictions are mapped back with
``y_stats.invert`` so RMSE and log-likelihood are in the original target units.

Models (σ² = noise variance; the test log-likelihood is the mean over test points of
log N(y | μ, v), v in original units):

* ``nngp`` -- exact NNGP posterior (``wn.posterior``, kernel="nngp"); σ_w², σ_b², σ² fitted
  by marginal likelihood (``wn.fit_hyperparameters``, kernel="nngp") on at most
  ``fit.max_points`` training points; v = posterior variance + σ².
* ``ntk`` -- NTK-GP: the infinite ensemble trained by gradient flow to t = ∞ with ridge σ²
  (``wn.posterior``, kernel="ntk"); v = the ensemble's variance over initializations + σ².
  Hyperparameters: by default the NNGP's fitted σ_w², σ_b², σ² of the same split (one
  architecture, two limits); ``fit.ntk_own: true`` fits them with Θ as the GP covariance
  (kernel="ntk") instead (with L-BFGS that fit stalls after one step, see the report; use adam).
* ``mlp`` -- ``mlp.ensemble_size`` finite networks of the same depth (``wn.Ensemble``,
  ``mlp.parameterization``, σ_w², σ_b² from the config, not fitted), trained full-batch on
  the MSE with ``mlp.optimizer``; μ = ensemble mean, v = spread of the members + the
  mean squared training residual of μ (a homoscedastic noise estimate). A network that
  interpolates its training set gets a small residual and so an over-confident v.

Results (results.json):

* ``rows`` (table): one per ``<dataset>/split=<k>/<model>``: ``dataset``, ``split``,
  ``model``, ``rmse``, ``test_ll``, ``n_train``, ``n_test``, ``weight_variance``,
  ``bias_variance``, ``noise_variance`` (fitted or used; standardized units), ``seconds``;
* ``results.summary``: ``{dataset: {model: {rmse_mean, rmse_se, test_ll_mean, test_ll_se,
  splits}}}`` (se = standard error over splits);
* ``results.datasets``: per dataset ``n``, ``features``, ``n_splits`` (customary), ``splits`` (run).

Figures: ``uci_rmse.png`` and ``uci_test_ll.png`` (one panel per dataset, a bar per model,
error bars = standard error over splits).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

import wideNN as wn
from wideNN import data
from wideNN import plotting as wp
from wideNN.lab.config import ConfigError

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "data_dir": None,             # folder holding uci/<name>/ (e.g. ../shared/data); required
    "datasets": ["yacht", "concrete"],
    "splits": 3,                  # the first k splits of each set; -1: its customary n_splits
    "models": ["nngp", "ntk", "mlp"],
    "max_train": 0,               # >0: GP models use a random subset of this many training points
    "depth": 2,
    "activation": "relu",
    "weight_variance": 2.0,       # starting point of the fits, and the MLP's initialization
    "bias_variance": 0.1,
    "noise_variance": 0.1,        # starting σ² of the fits (standardized targets)
    "fit": {
        "steps": 6,               # 0: no fit, use the values above
        "lr": 1.0,
        "optimizer": "lbfgs",
        "max_points": 1000,       # the fit is O(N³) with a backward pass: fit on a subset
        "ntk_own": False,         # False: the NTK-GP uses the NNGP's fitted hyperparameters
    },
    "mlp": {
        "width": 64,
        "ensemble_size": 3,
        "steps": 500,
        "learning_rate": 0.01,
        "optimizer": "adam",
        "parameterization": "standard",  # Adam's step size is per parameter: standard scaling
    },
}

MODELS = ("nngp", "ntk", "mlp")


def _metrics(mean: torch.Tensor, var: torch.Tensor, split: data.Split) -> dict:
    """RMSE and mean Gaussian test log-likelihood in original units (mean, var standardized)."""
    ys = split.meta["y_stats"]
    scale = float(ys.std.reshape(-1)[0])
    mu = ys.invert(mean.reshape(-1, 1))
    y = ys.invert(split.y_test)
    v = var.reshape(-1, 1).clamp_min(1e-12) * scale ** 2
    return {"rmse": float(((mu - y) ** 2).mean().sqrt()),
            "test_ll": float(wn.gaussian_log_likelihood(y, mu, v))}


def _se(a: np.ndarray) -> float:
    return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


def _subset(n: int, m: int, gen: torch.Generator) -> torch.Tensor | None:
    return None if m <= 0 or m >= n else torch.randperm(n, generator=gen)[:m].sort().values


def validate(cfg: dict) -> None:
    """Check what ``DEFAULTS`` cannot express, before the output folder exists."""
    if cfg["data_dir"] is None:
        raise ConfigError("config key 'data_dir' is required: the folder holding uci/<name>/ "
                          "(e.g. --set data_dir=../shared/data)")
    unknown = [m for m in cfg["models"] if m not in MODELS]
    if unknown or not cfg["models"]:
        raise ConfigError(f"config key 'models': expected some of {MODELS}, got {cfg['models']}")
    if not cfg["datasets"]:
        raise ConfigError("config key 'datasets' must name at least one UCI set")


def run(cfg: dict, ctx) -> None:
    validate(cfg)
    base = wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                           weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"])
    f, m = cfg["fit"], cfg["mlp"]
    dev = dict(device=ctx.device)

    def fitted(kernel: str, x: torch.Tensor, y: torch.Tensor, offset: int, key: str) -> tuple:
        if f["steps"] == 0:
            return base, cfg["noise_variance"]
        fpick = _subset(x.shape[0], f["max_points"], ctx.generator(offset + 1, device="cpu"))
        xf, yf = (x, y) if fpick is None else (x[fpick.to(x.device)], y[fpick.to(x.device)])
        res = wn.fit_hyperparameters(base, xf, yf.reshape(-1), kernel=kernel, steps=f["steps"],
                                     lr=f["lr"], optimizer=f["optimizer"], noise_variance=cfg["noise_variance"],
                                     dtype=ctx.dtype, progress=False, checkpoint_every=1,
                                     checkpoint=ctx.checkpoint_path(key, part="fit"))  # a killed fit resumes
        return res.architecture, res.noise_variance

    def gp(model: str, split: data.Split, offset: int, fits: dict, key: str) -> dict:
        x, y = split.x_train, split.y_train
        pick = _subset(x.shape[0], cfg["max_train"], ctx.generator(offset, device="cpu"))
        if pick is not None:
            x, y = x[pick.to(x.device)], y[pick.to(x.device)]
        kernel = "ntk" if model == "ntk" and f["ntk_own"] else "nngp"
        if kernel not in fits:  # one NNGP fit per split serves both GP models
            fits[kernel] = fitted(kernel, x, y, offset, key)
        arch, noise = fits[kernel]
        post = wn.posterior(arch, x, y, split.x_test, kernel=model, noise_variance=noise, dtype=ctx.dtype)
        return {**_metrics(post.mean, post.variance + noise, split), "n_train": x.shape[0],
                "weight_variance": float(arch.weight_variance), "bias_variance": float(arch.bias_variance),
                "noise_variance": noise}

    def mlp(split: data.Split, offset: int, key: str) -> dict:
        arch = base.replace(parameterization=m["parameterization"])
        ens = wn.Ensemble(arch, m["width"], split.x_train.shape[1], 1, size=m["ensemble_size"],
                          seed=ctx.seed + 1000 * offset, dtype=ctx.dtype, device=ctx.device)
        hist = ens.train(split.x_train, split.y_train, steps=m["steps"], learning_rate=m["learning_rate"],
                         optimizer=m["optimizer"], progress=False,
                         checkpoint=ctx.checkpoint_path(key))  # a killed training resumes
        if hist.diverged:
            ctx.log(f"warning: MLP training diverged ({hist.message})")
        with torch.no_grad():
            out_train, out_test = ens(split.x_train), ens(split.x_test)      # (S, N, 1)
        resid = float(((out_train.mean(0) - split.y_train) ** 2).mean())
        spread = out_test.var(0, correction=1) if m["ensemble_size"] > 1 else torch.zeros_like(out_test[0])
        return {**_metrics(out_test.mean(0), spread + resid, split), "n_train": split.x_train.shape[0],
                "weight_variance": cfg["weight_variance"], "bias_variance": cfg["bias_variance"],
                "noise_variance": resid, "final_train_loss": float(hist.final_loss.mean())}

    info = {}
    for d_index, name in enumerate(cfg["datasets"]):
        first = data.load_uci(cfg["data_dir"], name, 0, dtype=ctx.dtype)
        n_splits = int(first.meta["n_splits"])
        k = n_splits if cfg["splits"] < 0 else min(cfg["splits"], n_splits)
        info[name] = {"n": first.x_train.shape[0] + first.x_test.shape[0], "features": first.x_train.shape[1],
                      "n_splits": n_splits, "splits": k}
        for s in ctx.progress(range(k), desc=name, total=k):
            keys = {model: f"{name}/split={s}/{model}" for model in cfg["models"]}
            if all(ctx.has_row(key) for key in keys.values()):
                continue
            split = first if s == 0 else data.load_uci(cfg["data_dir"], name, s, dtype=ctx.dtype)
            split = data.Split(split.x_train.to(**dev), split.y_train.to(**dev), split.x_test.to(**dev),
                               split.y_test.to(**dev), meta=split.meta)
            offset = 100 * (d_index * 1000 + s)
            fits: dict = {}
            for model, key in keys.items():
                if ctx.has_row(key):
                    continue
                t0 = time.perf_counter()
                r = mlp(split, offset, key) if model == "mlp" else gp(model, split, offset, fits, key)
                ctx.add_row(key, {"dataset": name, "split": s, "model": model, "rmse": r.pop("rmse"),
                                  "test_ll": r.pop("test_ll"), "n_test": split.x_test.shape[0], **r,
                                  "seconds": time.perf_counter() - t0})
    ctx.record("datasets", info)

    summary: dict = {}
    for name in cfg["datasets"]:
        summary[name] = {}
        for model in cfg["models"]:
            rows = [r for r in ctx.rows if r["dataset"] == name and r["model"] == model]
            rm = np.array([r["rmse"] for r in rows], dtype=float)
            ll = np.array([np.nan if r["test_ll"] is None else r["test_ll"] for r in rows], dtype=float)
            summary[name][model] = {"rmse_mean": float(rm.mean()), "rmse_se": _se(rm),
                                    "test_ll_mean": float(ll.mean()), "test_ll_se": _se(ll), "splits": len(rows)}
    ctx.record("summary", summary)
    ctx.table([{"dataset": d, "model": mo, "splits": s["splits"],
                "RMSE": s["rmse_mean"], "RMSE se": s["rmse_se"], "test LL": s["test_ll_mean"],
                "LL se": s["test_ll_se"]}
               for d, per in summary.items() for mo, s in per.items()])

    labels = {"nngp": "NNGP", "ntk": "NTK-GP", "mlp": f"MLP ×{m['ensemble_size']} (width {m['width']})"}
    colors = dict(zip(MODELS, ["tab:blue", "tab:orange", "tab:green"]))
    for metric, fname, ylabel in [("rmse", "uci_rmse.png", "test RMSE (original units)"),
                                  ("test_ll", "uci_test_ll.png", "test log-likelihood (nats / point)")]:
        names = cfg["datasets"]
        ncols = min(4, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig, axes = wp.figure(nrows, ncols, size=(2.9 * ncols + 0.6, 2.8 * nrows + 0.6), squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, names):
            for i, model in enumerate(cfg["models"]):
                s = summary[name][model]
                ax.bar(i, s[f"{metric}_mean"], yerr=s[f"{metric}_se"], color=colors[model], capsize=3,
                       label=labels[model])
            ax.set_xticks(range(len(cfg["models"])))
            ax.set_xticklabels([labels[mo].split(" ")[0] for mo in cfg["models"]])
            ax.grid(axis="x", visible=False)
            if metric == "test_ll":
                ax.axhline(0.0, color="0.3", linewidth=0.8)
            wp.finish(ax, ylabel=ylabel if ax in axes[:, 0] else None,
                      title=f"{name} (N={info[name]['n']}, {info[name]['splits']} splits)", legend=False)
        handles, labs = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labs, loc="outside lower center", ncol=len(labs), frameon=False)
        fig.suptitle(f"UCI regression, {'RMSE' if metric == 'rmse' else 'test log-likelihood'}: "
                     f"{cfg['activation']} depth {cfg['depth']}, mean ± s.e. over splits")
        ctx.savefig(fig, fname)
