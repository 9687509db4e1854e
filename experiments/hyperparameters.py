"""NNGP hyperparameter dependence: test accuracy and log marginal likelihood over a (σ_w², σ_b²) grid.

The "NNGP hyperparameter dependence" heatmap of Lee et al. 2018 ("Deep Neural Networks as
Gaussian Processes", Fig. 4) next to model selection by marginal likelihood: the marginal likelihood, computed on the *training*
set alone, should point to hyperparameters with good *test* accuracy. For every grid cell
the exact NNGP posterior mean (``wn.posterior``, kernel="nngp", fixed ``noise_variance``)
classifies the test set by argmax over the one-hot outputs, and
the marginal likelihood of the training set at the same noise (``Posterior.log_marginal_likelihood``,
from the same Cholesky factor; equal to ``wn.log_marginal_likelihood``) scores it. Separately,
``wn.fit_hyperparameters`` climbs the marginal likelihood by gradient ascent from
``fit.init_*``; with ``fit.learn_noise: false`` it searches the very slice the grid shows,
so its optimum and the grid's best cell should agree.

Data: the bundled UCI digits (``dataset: digits``, random class-balanced split drawn
from ``seed``) or the Lee et al. MNIST subset (``dataset: mnist``, files under ``data_dir``).
One-hot targets 0.9 / -0.1; inputs preprocessed with ``preprocess``.

Results (results.json, section ``results``):

* ``weight_variances``, ``bias_variances``: the grid axes (σ_w² along x, σ_b² along y);
* ``accuracy``, ``lml``, ``test_mse``: matrices indexed ``[i_bias][i_weight]``; ``lml`` is
  log p(Y | X) in nats summed over the 10 outputs; ``lml_per_datum`` divides by N·O;
* ``cell/w=<σ_w²>/b=<σ_b²>``: the per-cell numbers (resume keys);
* ``grid_best_lml`` / ``grid_best_accuracy``: the cell maximizing each, with both numbers;
* ``fitted``: the marginal-likelihood optimum from ``wn.fit_hyperparameters``
  (``weight_variance``, ``bias_variance``, ``noise_variance``, ``lml``, ``accuracy``,
  ``test_mse``, ``steps``, ``lml_history``), absent when ``fit.steps`` is 0;
* ``accuracy_range``: [min, max] over the grid; ``n_train``, ``n_test``.

Figures: ``accuracy_heatmap.png`` (test accuracy, optimum marked) and ``lml_heatmap.png``
(training-set log marginal likelihood per datum, optimum marked). Red star: the fitted
marginal-likelihood optimum (grid best LML when there is no fit); white cross: the grid
cell with the best LML; white circle: the grid cell with the best test accuracy.
"""
from __future__ import annotations

import functools

import numpy as np

import wideNN as wn
from wideNN import data
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "dataset": "digits",          # "digits" (bundled) or "mnist" (needs data_dir)
    "data_dir": None,             # folder with the MNIST idx files (or a mnist/ subfolder)
    "n_train": 500,
    "n_test": 500,
    "preprocess": "center_norm",  # "none" | "center_norm" | "standardize"
    "depth": 3,
    "activation": "relu",
    "weight_variances": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
    "bias_variances": [0.0, 0.2, 0.5, 1.0, 2.0],
    "noise_variance": 0.01,
    "fit": {
        "steps": 6,               # 0: no fit (the grid's best LML is marked instead)
        "lr": 1.0,
        "optimizer": "lbfgs",     # L-BFGS with line search converges in a handful of steps here
        "learn_noise": False,     # False: optimize on the grid's fixed-noise slice
        "init_weight_variance": 2.0,
        "init_bias_variance": 0.5,
    },
}


def load_classification(cfg: dict, ctx) -> data.Split:
    """Train/test split of ``cfg['dataset']`` with inputs preprocessed by ``cfg['preprocess']``."""
    if cfg["dataset"] == "digits":
        split = data.train_test_split_digits(cfg["n_train"], cfg["n_test"], seed=ctx.seed, dtype=ctx.dtype)
    elif cfg["dataset"] == "mnist":
        if cfg["data_dir"] is None:
            raise ValueError("config key 'data_dir': dataset 'mnist' needs the folder holding the MNIST files")
        split = data.load_mnist(cfg["data_dir"], cfg["n_train"], cfg["n_test"], dtype=ctx.dtype)
    else:
        raise ValueError(f"config key 'dataset': expected 'digits' or 'mnist', got {cfg['dataset']!r}")
    x_train = data.preprocess(split.x_train, cfg["preprocess"], return_stats=True)
    # standardize must reuse the training statistics on the test set
    x_test = data.preprocess(split.x_test, cfg["preprocess"], stats=x_train[1])
    move = dict(device=ctx.device)
    return data.Split(x_train[0].to(**move), split.y_train.to(**move), x_test.to(**move),
                      split.y_test.to(**move), split.labels_train.to(**move),
                      split.labels_test.to(**move), split.meta)


def _evaluate(arch: "wn.Architecture", split: data.Split, noise: float) -> dict:
    post = wn.posterior(arch, split.x_train, split.y_train, split.x_test, kernel="nngp",
                        noise_variance=noise, compute_variance=False)
    lml = post.log_marginal_likelihood  # from the posterior's own factor: one Cholesky per cell
    n, o = split.y_train.shape
    return {"accuracy": data.accuracy(post.mean, split.labels_test),
            "test_mse": float(((post.mean - split.y_test) ** 2).mean()),
            "lml": float(lml), "lml_per_datum": float(lml) / (n * o), "jitter": post.jitter}


def _best(values: np.ndarray, ws: list, bs: list, acc: np.ndarray, lml: np.ndarray) -> dict:
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    return {"weight_variance": ws[j], "bias_variance": bs[i],
            "accuracy": float(acc[i, j]), "lml": float(lml[i, j])}


def run(cfg: dict, ctx) -> None:
    ws, bs, noise = cfg["weight_variances"], cfg["bias_variances"], cfg["noise_variance"]
    if not ws or not bs:
        raise ValueError("config keys 'weight_variances' and 'bias_variances' must be non-empty")
    split = load_classification(cfg, ctx)
    ctx.record("weight_variances", ws)
    ctx.record("bias_variances", bs)
    ctx.record("n_train", split.x_train.shape[0])
    ctx.record("n_test", split.x_test.shape[0])

    def arch(w: float, b: float) -> "wn.Architecture":
        return wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                               weight_variance=w, bias_variance=b)

    cells = [(i, j) for i in range(len(bs)) for j in range(len(ws))]
    acc, lml, lml_pd, mse = (np.full((len(bs), len(ws)), np.nan) for _ in range(4))
    # independent cells: under torchrun they are split over the ranks
    keys = {(i, j): f"cell/w={ws[j]:g}/b={bs[i]:g}" for i, j in cells}
    done = ctx.grid({keys[i, j]: functools.partial(lambda w, b: _evaluate(arch(w, b), split, noise), ws[j], bs[i])
                     for i, j in cells}, desc="grid")
    for i, j in cells:
        key = keys[i, j]
        c = done[key]
        acc[i, j], lml[i, j], lml_pd[i, j], mse[i, j] = c["accuracy"], c["lml"], c["lml_per_datum"], c["test_mse"]
        ctx.add_row(key, {"σ_w²": ws[j], "σ_b²": bs[i], "accuracy": c["accuracy"],
                          "test_mse": c["test_mse"], "lml/datum": c["lml_per_datum"]})
    ctx.record("accuracy", acc)
    ctx.record("lml", lml)
    ctx.record("lml_per_datum", lml_pd)
    ctx.record("test_mse", mse)
    ctx.record("accuracy_range", [float(np.nanmin(acc)), float(np.nanmax(acc))])
    best_lml = ctx.record("grid_best_lml", _best(lml, ws, bs, acc, lml))
    best_acc = ctx.record("grid_best_accuracy", _best(acc, ws, bs, acc, lml))

    f = cfg["fit"]
    fitted = None
    if f["steps"] > 0:
        def fit() -> dict:
            res = wn.fit_hyperparameters(
                arch(f["init_weight_variance"], f["init_bias_variance"]), split.x_train, split.y_train,
                kernel="nngp", steps=f["steps"], lr=f["lr"], optimizer=f["optimizer"],
                noise_variance=noise, learn_noise=f["learn_noise"], dtype=ctx.dtype, progress=False,
                checkpoint=ctx.checkpoint_path("fitted"), checkpoint_every=1)  # a killed fit resumes
            a = res.architecture
            ev = _evaluate(arch(float(a.weight_variance), float(a.bias_variance)), split, res.noise_variance)
            return {"weight_variance": float(a.weight_variance), "bias_variance": float(a.bias_variance),
                    "noise_variance": res.noise_variance, "steps": f["steps"],
                    "lml_history": [h["log_marginal_likelihood"] for h in res.history], **ev}
        fitted = ctx.cached("fitted", fit)
        ctx.log(f"marginal-likelihood optimum: σ_w²={fitted['weight_variance']:.3g} "
                f"σ_b²={fitted['bias_variance']:.3g} σ²={fitted['noise_variance']:.2g} "
                f"accuracy {fitted['accuracy']:.4f} (grid best {best_acc['accuracy']:.4f})")

    star = (fitted or best_lml)
    star_xy = (star["weight_variance"], star["bias_variance"])
    star_label = ("max marginal likelihood (fitted)" if fitted else "max marginal likelihood (grid)")
    source = "MNIST" if cfg["dataset"] == "mnist" else "digits"
    where = f"{source}, N={split.x_train.shape[0]}, {cfg['activation']} depth {cfg['depth']}, σ²={noise:g}"

    def draw(values: np.ndarray, name: str, label: str, title: str, **kw) -> None:
        fig, ax = wp.figure(size=(6.4, 4.6))
        wp.heatmap(ax, values, ws, bs, mark=star_xy, mark_label=star_label, colorbar_label=label, **kw)
        ax.plot([best_lml["weight_variance"]], [best_lml["bias_variance"]], marker="X", markersize=10,
                color="white", markeredgecolor="black", linestyle="none", label="best grid LML")
        ax.plot([best_acc["weight_variance"]], [best_acc["bias_variance"]], marker="o", markersize=9,
                markerfacecolor="none", markeredgecolor="white", markeredgewidth=2, linestyle="none",
                label="best grid accuracy")
        # the fitted optimum may leave the grid; keep the axes on the grid so cells stay legible
        ax.set_xlim(ws[0] - 0.5 * _step(ws, 0), ws[-1] + 0.5 * _step(ws, -1))
        ax.set_ylim(bs[0] - 0.5 * _step(bs, 0), bs[-1] + 0.5 * _step(bs, -1))
        # grey box: the white markers must stay visible in the legend
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=True,
                  facecolor="0.6", edgecolor="none", framealpha=1.0)
        wp.finish(ax, xlabel="weight variance σ_w²", ylabel="bias variance σ_b²",
                  title=f"{title}\n{where}", legend=False)
        ctx.savefig(fig, name)

    # colour steps of whole test points: finer shades would show differences the test set cannot
    n_test = split.x_test.shape[0]
    norm = wp.resolution_norm(acc, 1.0 / n_test)
    per = round(float(norm.boundaries[1] - norm.boundaries[0]) * n_test)
    draw(acc, "accuracy_heatmap.png", f"test accuracy (one colour = {per} of {n_test} test points)",
         "NNGP test accuracy", norm=norm)
    # a few cells sit orders of magnitude below the rest; clip so the interesting range has colour
    finite = lml_pd[np.isfinite(lml_pd)]
    lo = max(float(finite.min()), float(np.percentile(finite, 10)) - 0.25 * float(np.ptp(finite)))
    draw(lml_pd, "lml_heatmap.png", "log p(Y|X) / (N·O)  [nats]",
         "NNGP log marginal likelihood (training set)", vmin=lo, vmax=float(finite.max()))
    top = sorted(ctx.rows, key=lambda r: -r["lml/datum"])
    ctx.table(top[:10], columns=["σ_w²", "σ_b²", "accuracy", "test_mse", "lml/datum"],
              title=(f"the top 10 of {len(top)} grid cells by log marginal likelihood (all of them: "
                     f"results.json, rows)" if len(top) > 10 else None))


def _step(axis: list, at: int) -> float:
    if len(axis) < 2:
        return 1.0
    return float(axis[1] - axis[0]) if at == 0 else float(axis[-1] - axis[-2])
