"""CNN-GP and CNTK vs trained finite CNNs on MNIST and CIFAR-10 subsets.

For each configured dataset (Lee et al. 2018 subsets: the first n/10 images of each class of
the training pool, the first ``n_test`` test images, one-hot 0.9/−0.1 targets), the images are
area-downsampled to ``side`` × ``side`` and each is centred and scaled to norm √(C·side²)
(``wd.to_images(..., "center_norm")``).  The configured kernel families are composed layer
descriptions (3×3 "same" convolutions with ReLU, σ_w² = ``weight_variance``, σ_b² =
``bias_variance``, NTK parameterization):

* ``cnn_gp_flatten``: ``depth`` × (Conv, ReLU) → Flatten → Dense (Novak et al. 2019; only the
  per-position variances enter the kernel);
* ``cntk_gap``: ``depth`` × (Conv, ReLU) → GlobalAvgPool → Dense (Arora et al. 2019);
* ``resnet_gap``: Conv, then ``residual_blocks`` × Residual(ReLU, Conv, ReLU, Conv) (pre-activation
  blocks), ReLU → GlobalAvgPool → Dense (Garriga-Alonso et al. 2019's residual CNN-GP, smaller);
* ``mlp``: the fully-connected shorthand ``Architecture(mlp_depth, "relu", ...)`` on the
  flattened images (Lee et al. 2018), the baseline that sees no spatial structure.

For each family and each of ``kernels`` the prediction is ``wn.posterior`` at t = ∞:
``nngp`` the exact Bayesian NNGP posterior mean (noise σ² = ``noise_relative`` × mean diag K),
``ntk`` the NTK-GP mean (infinitely wide networks trained to convergence).  Against them,
finite CNNs of the ``nn.family`` description with ``nn.channels`` channels, ``nn.seeds`` seeds
per channel count trained together (``wn.Ensemble``, members ``arch.build(in_shape, channels,
10, seed=seed + i)``) by full-batch GD on the MSE for ``nn.steps`` steps at η = ``nn.lr_fraction``
× ``wn.max_learning_rate`` of the analytic NTK; their NTK-GP counterpart at the same time t =
steps is the ``ntk_t`` row of that family.  Finally, the width scaling of the family's empirical
NTK at initialization towards its analytic CNTK on the first ``ntk_scaling.points`` training
images (relative Frobenius error, geometric mean over ``ntk_scaling.seeds``; expected slope
−1/2 in the channel count).

Published numbers (``PUBLISHED``; only beside rows of the same dataset, never the same
training-set size here): Garriga-Alonso et al. 2019 report 0.84% test error on MNIST for the
kernel of a 32-layer ResNet, trained on 50k images with 10k held out for validation (their
paper's "Dataset splits"; hyperparameters by random search on the validation set).  Novak et
al. 2019 report CNN-GP accuracies on full MNIST and CIFAR-10 as well; we could not verify their
exact table entries from the sources at hand, so none is quoted.

Results (results.json):

* ``rows``: ``{dataset, n_train, n_test, side, model, kernel, channels, seed, test_accuracy,
  test_mse, published_accuracy, published_n_train}``; GP rows have ``channels`` null,
  ``kernel`` ``nngp`` / ``ntk`` / ``ntk_t``; network rows ``model`` = ``nn/<family>`` (one per
  seed) or ``ensemble/<family>`` (the mean output of the seeds), ``kernel`` null;
* ``results``: ``gp/<dataset>/<family>`` (accuracies, MSEs, noise, jitter, seconds),
  ``nn/<dataset>/channels=C``, ``learning_rate/<dataset>``, ``ntk_error/channels=C`` and
  ``ntk_error_slope``, ``data/<dataset>`` (sizes), ``skipped`` (datasets that could not load).

Figures: ``accuracy_vs_channels.png`` (per dataset: finite-network accuracy vs channels,
GP families as horizontal lines) and ``ntk_error_vs_channels.png``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

import wideNN as wn
from wideNN import data as wd
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "network_dtype": "float32",
    "data_dir": None,
    # subset: "protocol" (Lee et al.'s exact subset) or "available" (the same rule among the
    # images the data folder holds; only differs for the partial CIFAR-10 file)
    "datasets": [{"dataset": "mnist", "n_train": 100, "n_test": 100, "side": 6, "subset": "protocol"}],
    "preprocessing": "center_norm",
    "depth": 2,
    "residual_blocks": 1,
    "mlp_depth": 2,
    "weight_variance": 2.0,
    "bias_variance": 0.01,
    "models": ["cnn_gp_flatten", "cntk_gap", "resnet_gap", "mlp"],
    "kernels": ["nngp", "ntk"],
    "noise_relative": 1.0e-10,
    "nn": {"family": "cntk_gap", "channels": [8, 32, 128], "seeds": 2, "steps": 200, "lr_fraction": 0.5},
    "ntk_scaling": {"channels": [32, 128, 512], "points": 8, "seeds": 4},
}

FAMILIES = ("cnn_gp_flatten", "cntk_gap", "resnet_gap", "mlp")
_LOADERS = {"mnist": wd.load_mnist, "cifar10": wd.load_cifar10}
_CHANNELS = {"mnist": 1, "cifar10": 3}
# (dataset) -> [(description, test accuracy, training images)], each checked against the paper
PUBLISHED = {"mnist": [("ResNet-GP, 32 layers (Garriga-Alonso et al. 2019)", 1 - 0.0084, 50000)]}


def description(cfg: dict, family: str):
    """The layer description of a family (``mlp``: the fully-connected shorthand)."""
    var = dict(weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"])
    if family == "mlp":
        return wn.Architecture(cfg["mlp_depth"], "relu", **var)
    conv = [layer for _ in range(cfg["depth"]) for layer in (wn.Conv(3), "relu")]
    if family == "cnn_gp_flatten":
        return wn.Serial(*conv, wn.Flatten(), wn.Dense(), **var)
    if family == "cntk_gap":
        return wn.Serial(*conv, wn.GlobalAvgPool(), wn.Dense(), **var)
    if family == "resnet_gap":
        # pre-activation blocks: the skip path carries a convolution's Gaussian output, so every
        # ReLU (inside the blocks and after the last one) sees a Gaussian input
        blocks = [wn.Residual(wn.Serial("relu", wn.Conv(3), "relu", wn.Conv(3)))
                  for _ in range(cfg["residual_blocks"])]
        return wn.Serial(wn.Conv(3), *blocks, "relu", wn.GlobalAvgPool(), wn.Dense(), **var)
    raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def _check(cfg: dict) -> None:
    if cfg["data_dir"] is None:
        raise ValueError("config key 'data_dir' is not set: it must name a folder holding mnist/ "
                         "(and optionally cifar10/), e.g. --set data_dir=../shared/data")
    for i, d in enumerate(cfg["datasets"]):
        if d.get("dataset") not in _LOADERS:
            raise ValueError(f"datasets[{i}].dataset: expected one of {sorted(_LOADERS)}, got {d.get('dataset')!r}")
    for m in list(cfg["models"]) + [cfg["nn"]["family"]]:
        if m not in FAMILIES:
            raise ValueError(f"models: unknown family {m!r}; expected one of {FAMILIES}")
    if cfg["nn"]["family"] == "mlp":
        raise ValueError("nn.family must be a convolutional family, not 'mlp'")
    for k in cfg["kernels"]:
        if k not in ("nngp", "ntk"):
            raise ValueError(f"kernels: expected 'nngp' and/or 'ntk', got {k!r}")
    if cfg["nn"]["seeds"] < 1:
        raise ValueError("nn.seeds must be >= 1")


def _load(cfg: dict, ctx, spec: dict):
    extra = {"subset": spec.get("subset", "protocol")} if spec["dataset"] == "cifar10" else {}
    split = _LOADERS[spec["dataset"]](Path(cfg["data_dir"]).expanduser(), n_train=spec["n_train"],
                                      n_test=spec["n_test"], dtype=ctx.dtype, **extra)
    c = _CHANNELS[spec["dataset"]]
    x_tr = wd.to_images(split.x_train, c, spec["side"], cfg["preprocessing"]).to(ctx.device)
    x_te = wd.to_images(split.x_test, c, spec["side"], cfg["preprocessing"]).to(ctx.device)
    return split, x_tr, x_te


def run(cfg: dict, ctx) -> None:
    _check(cfg)
    skipped = dict(ctx.get("skipped", {}))
    results = {}
    for spec in ctx.progress(cfg["datasets"], desc="datasets"):
        name = f"{spec['dataset']}:{spec['n_train']}"
        try:
            split, x_tr, x_te = _load(cfg, ctx, spec)
        except (FileNotFoundError, ValueError) as e:
            # e.g. the partial CIFAR-10 file has fewer than 500 images of some classes
            ctx.log(f"skipping {name}: {e}")
            skipped[name] = str(e)
            ctx.record("skipped", skipped)
            continue
        ctx.record(f"data/{name}", {"n_train": x_tr.shape[0], "n_test": x_te.shape[0],
                                    "in_shape": list(x_tr.shape[1:])})
        results[name] = _dataset(cfg, ctx, spec, name, split, x_tr, x_te)
        if spec is cfg["datasets"][0]:
            _ntk_scaling(cfg, ctx, x_tr)
    ctx.table(ctx.rows, columns=["dataset", "n_train", "side", "model", "kernel", "channels", "seed",
                                 "test_accuracy", "test_mse", "published_accuracy", "published_n_train"])
    if results:
        _figures(cfg, ctx, results)


def _row(spec, x_te, **kw) -> dict:
    row = {"dataset": spec["dataset"], "n_train": spec["n_train"], "n_test": x_te.shape[0], "side": spec["side"],
           "model": None, "kernel": None, "channels": None, "seed": None, "test_accuracy": None,
           "test_mse": None, "published_accuracy": None, "published_n_train": None}
    row.update(kw)
    return row


def _dataset(cfg, ctx, spec, name, split, x_tr, x_te) -> dict:
    y_tr, y_te = split.y_train.to(ctx.device), split.y_test.to(ctx.device)
    lab_te = split.labels_test.to(ctx.device)
    nn_cfg = cfg["nn"]
    nn_arch = description(cfg, nn_cfg["family"])
    lr = ctx.cached(f"learning_rate/{name}",
                    lambda: nn_cfg["lr_fraction"] * wn.max_learning_rate(nn_arch, x_tr))
    gps = {}
    for family in cfg["models"]:
        gps[family] = g = ctx.cached(f"gp/{name}/{family}", lambda: _gp(cfg, ctx, family, x_tr, y_tr, x_te,
                                                                        y_te, lab_te, lr))
        for kernel in list(cfg["kernels"]) + (["ntk_t"] if family == nn_cfg["family"] else []):
            ctx.add_row(f"{name}/{family}/{kernel}", _row(spec, x_te, model=family, kernel=kernel,
                                                          test_accuracy=g[f"{kernel}_accuracy"],
                                                          test_mse=g[f"{kernel}_mse"]))
        ctx.log(f"{name} {family}: " + ", ".join(f"{k} {g[f'{k}_accuracy']:.3f}" for k in cfg["kernels"]))
    for desc, acc, n in PUBLISHED.get(spec["dataset"], []):
        ctx.add_row(f"{name}/published/{desc}", _row(spec, x_te, model=f"published: {desc}",
                                                     published_accuracy=acc, published_n_train=n))
    nets = {}
    for ch in nn_cfg["channels"]:
        key = f"nn/{name}/channels={ch}"
        nets[ch] = r = ctx.cached(key, lambda: _networks(cfg, ctx, nn_arch, ch, x_tr, y_tr, x_te, y_te, lab_te,
                                                         lr, key))
        fam = nn_cfg["family"]
        for i, (acc, mse) in enumerate(zip(r["test_accuracy"], r["test_mse"])):
            ctx.add_row(f"{name}/nn/{ch}/{i}", _row(spec, x_te, model=f"nn/{fam}", channels=ch, seed=ctx.seed + i,
                                                    test_accuracy=acc, test_mse=mse))
        ctx.add_row(f"{name}/ensemble/{ch}", _row(spec, x_te, model=f"ensemble/{fam}", channels=ch,
                                                  test_accuracy=r["ensemble_test_accuracy"],
                                                  test_mse=r["ensemble_test_mse"]))
        ctx.log(f"{name} channels {ch}: nets {r['test_accuracy']}, ensemble {r['ensemble_test_accuracy']}")
    return {"gp": gps, "nn": nets, "spec": spec}


def _mse(pred, y) -> float:
    return float(((pred - y) ** 2).mean())


def _gp(cfg, ctx, family, x_tr, y_tr, x_te, y_te, lab_te, lr) -> dict:
    t0 = time.perf_counter()
    arch = description(cfg, family)
    xa, xb = (x_tr.flatten(1), x_te.flatten(1)) if family == "mlp" else (x_tr, x_te)
    noise = cfg["noise_relative"] * float(arch.nngp(xa, diag=True).mean())
    out = {"noise_variance": noise}
    for kernel in cfg["kernels"]:
        t = None
        if kernel == "ntk" and family == cfg["nn"]["family"]:
            t = torch.tensor([float(cfg["nn"]["steps"]), float("inf")])
        post = wn.posterior(arch, xa, y_tr, xb, kernel=kernel, t=t, learning_rate=lr, noise_variance=noise,
                            compute_variance=False, dtype=ctx.dtype)
        means = {kernel: post.mean} if t is None else {"ntk_t": post.mean[0], "ntk": post.mean[1]}
        for k, mean in means.items():
            out[f"{k}_accuracy"] = wd.accuracy(mean, lab_te)
            out[f"{k}_mse"] = _mse(mean, y_te)
        out[f"{kernel}_jitter"] = post.jitter
    out["seconds"] = time.perf_counter() - t0
    return out


def _networks(cfg, ctx, arch, channels, x_tr, y_tr, x_te, y_te, lab_te, lr, key) -> dict:
    n = cfg["nn"]
    dt = {"float32": torch.float32, "float64": torch.float64}[cfg["network_dtype"]]
    ens = wn.Ensemble(arch, channels, in_shape=tuple(x_tr.shape[1:]), out_features=y_tr.shape[1], size=n["seeds"],
                      seed=ctx.seed, dtype=dt, device=ctx.device)
    hist = ens.train(x_tr.to(dt), y_tr.to(dt), steps=n["steps"], learning_rate=lr, optimizer="gd", loss="mse",
                     progress=False, checkpoint=ctx.checkpoint_path(key))  # a killed training resumes
    with torch.no_grad():
        f_te = ens(x_te.to(dt)).to(ctx.dtype)
    ok = torch.isfinite(f_te).all(dim=(1, 2))
    mean = f_te.mean(0)
    return {"test_accuracy": [wd.accuracy(f, lab_te) if good else None for f, good in zip(f_te, ok)],
            "test_mse": [_mse(f, y_te) for f in f_te], "diverged": bool(hist.diverged),
            "final_train_loss": [float(v) for v in hist.final_loss],
            "ensemble_test_accuracy": wd.accuracy(mean, lab_te) if bool(ok.all()) else None,
            "ensemble_test_mse": _mse(mean, y_te)}


def _ntk_scaling(cfg, ctx, x_tr) -> None:
    s = cfg["ntk_scaling"]
    arch = description(cfg, cfg["nn"]["family"])
    xs = x_tr[: s["points"]]

    def error(ch: int) -> float:
        ana = arch.ntk(xs)
        errs = []
        for i in range(s["seeds"]):
            net = arch.build(tuple(xs.shape[1:]), ch, 1, seed=ctx.seed + i, dtype=ctx.dtype, device=ctx.device)
            emp = wn.empirical_ntk(net, xs, mode="trace")
            errs.append(float(torch.linalg.norm(emp - ana) / torch.linalg.norm(ana)))
        return float(torch.tensor(errs).log().mean().exp())

    errs = {ch: ctx.cached(f"ntk_error/channels={ch}", lambda: error(ch)) for ch in s["channels"]}
    ctx.log("empirical vs analytic NTK: " + ", ".join(f"{c}: {e:.3g}" for c, e in errs.items()))


def _figures(cfg, ctx, results) -> None:
    chans = list(cfg["nn"]["channels"])
    fig, axes = wp.figure(1, len(results), size=(5.5 * len(results), 4.2), squeeze=False)
    styles = {"nngp": ":", "ntk": "--", "ntk_t": "-."}
    colors = dict(zip(FAMILIES, wp.colors(len(FAMILIES) + 1, "tab10")))
    for ax, (name, r) in zip(axes[0], results.items()):
        for family, g in r["gp"].items():
            for k in [k for k in styles if f"{k}_accuracy" in g]:
                ax.axhline(g[f"{k}_accuracy"], color=colors[family], linestyle=styles[k], label=f"{family} {k}")
        for j, ch in enumerate(chans):
            accs = [a for a in r["nn"][ch]["test_accuracy"] if a is not None]
            ax.scatter([ch] * len(accs), accs, color="0.5", s=16, zorder=3, label="single nets" if j == 0 else None)
        ax.plot(chans, [r["nn"][c]["ensemble_test_accuracy"] for c in chans], color="k", marker="s",
                label=f"ensemble of {cfg['nn']['seeds']}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(chans, [str(c) for c in chans])
        spec = r["spec"]
        wp.finish(ax, xlabel=f"channels ({cfg['nn']['family']})", ylabel="test accuracy",
                  title=f"{name}, {spec['side']}×{spec['side']}", legend=(ax is axes[0][-1]), legend_loc="outside")
    ctx.savefig(fig, "accuracy_vs_channels.png")

    s = cfg["ntk_scaling"]
    errs = [ctx.get(f"ntk_error/channels={c}") for c in s["channels"]]
    if all(e is not None for e in errs):
        fig, ax = wp.figure()
        slope = wp.loglog_fit(ax, s["channels"], errs, label="‖Θ̂ − Θ‖_F / ‖Θ‖_F")
        ctx.record("ntk_error_slope", slope)
        ax.set_xticks(s["channels"], [str(c) for c in s["channels"]])
        wp.finish(ax, xlabel="channels", ylabel="relative NTK error at init",
                  title=f"{cfg['nn']['family']}: empirical NTK vs CNTK ({s['points']} images)")
        ctx.savefig(fig, "ntk_error_vs_channels.png")
