"""Lee et al. (2018) table: NNGP posteriors vs trained networks on MNIST / CIFAR-10 subsets.

Each configured row names a dataset subset and a model in the notation of Lee et al. 2018 ("Deep Neural Networks as Gaussian Processes"),
``GP-depth-σ_w²-σ_b²`` (exact NNGP posterior) or ``NN-depth-width-σ_w²-σ_b²`` (a finite
network trained here), with its activation (``relu`` or ``tanh``).

Protocol (Lee et al. 2018, as in ``wideNN.data``): the training subset of size n takes the
first n/10 images of each class from the first 50k (MNIST) / 45k (CIFAR-10) training images;
the test set is the first ``n_test`` official test images (``null``: all 10k); targets are
one-hot with 0.9 / −0.1 (zero mean), and the prediction is the argmax of the posterior mean.

* Preprocessing: per example, subtract the mean pixel and scale to norm √d
  (``preprocess(x, "center_norm")``), so x·x/d = 1 and the first-layer kernel is order one.
  With raw [0, 1] pixels the published accuracies are not reproduced.
* Noise: the GP rows use an essentially noiseless posterior, σ² = ``noise_relative`` ×
  mean diag K (default 1e-10, i.e. only what float64 needs to stay definite; the library's
  Cholesky escalates the jitter further if needed and the jitter used is recorded). The
  paper selected its noise on a validation set; the table rows are the paper's best models,
  for which a tiny noise is what reproduces them (MNIST:1k GP-20-1.45-0.28 → 0.9242 vs 0.9279).
* NN rows are trained with ``wn.train`` (``nn.optimizer``, default full-batch Adam on the MSE,
  standard parameterization so that σ_w², σ_b² are the initialization variances as in the
  paper) for ``nn.steps`` steps, no early stopping and no hyperparameter search, so they are
  indicative only (the paper tuned its networks with a large search).
* CIFAR-10: a row with ``subset: protocol`` runs only if every image of the exact subset is
  present; the partial CIFAR file serves n_train ≤ 860, so such a CIFAR:1k row on it is
  skipped with the loader's reason logged (``skipped`` in results), as is any row whose data
  folder is missing.  ``subset: available`` applies the same first-n/10-per-class rule to the
  images present: on the partial file CIFAR:1k then shares 980 of its 1000 images with the
  paper's subset, and the test set is the first 1017 official test images (standard error of
  an accuracy near 0.36 is ±0.015 there, against ±0.005 on the paper's 10k).

Measured on a 2-core CPU (float64, full 10k test set; ``benchmarks/RESULTS.md``): MNIST:1k
GP-20-1.45-0.28 (ReLU) 0.9242 (paper 0.9279), MNIST:10k GP-7-0.61-0.07 (ReLU) 0.9739 (paper
0.9765, ~2 min), MNIST:50k GP-1-0.10-0.48 (ReLU) 0.9868 (paper 0.9875, 14 min, one 20 GB matrix
factored in place); CIFAR:1k (``subset: available``, 1017 test images) GP-7-1.28-0.00 0.3687
(paper 0.3608).

Results (results.json):

* ``rows``: ``{dataset, n_train, n_test, model, activation, depth, width, weight_variance,
  bias_variance, test_accuracy, paper_accuracy, difference, wall_time_s}`` (``width`` null
  for GPs; ``paper_accuracy`` null where the paper has no such row; ``difference`` =
  test_accuracy − paper_accuracy);
* ``results``: ``row/<dataset>:<n_train>/<model>/<activation>`` with the same numbers plus
  ``noise_variance`` and ``jitter`` (GP) or ``final_loss``/``steps`` (NN); ``skipped``: the
  rows that could not run and why.

Figure: ``accuracy_vs_paper.png``, measured vs published accuracy per row (bars).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

import wideNN as wn
from wideNN.lab.config import ConfigError
from wideNN import data as wd
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "num_threads": 0,             # 0: leave torch's setting
    "data_dir": None,
    "n_test": None,               # int, or null: the whole official test set
    "preprocessing": "center_norm",
    "noise_relative": 1.0e-10,
    "quadrature_degree": 48,      # quadrature nodes per std for activations without closed form (tanh)
    # subset: "protocol" (Lee et al.'s exact subset) or "available" (the same rule among the
    # images the data folder holds; only differs for the partial CIFAR-10 file)
    "rows": [{"dataset": "mnist", "n_train": 1000, "model": "GP-20-1.45-0.28", "activation": "relu",
              "subset": "protocol"}],
    "nn": {
        "parameterization": "standard",
        "optimizer": "adam",
        "learning_rate": 1.0e-3,
        "steps": 200,
        "batch_size": 0,          # 0: full batch
        "dtype": "float32",
    },
}

# Test accuracies of Lee et al. 2018, "Deep Neural Networks as Gaussian Processes", Table 2: (dataset, n_train, activation) ->
# {model label: accuracy}.
PAPER = {
    ("mnist", 1000, "relu"): {"NN-2-5000-3.19-0.00": 0.9252, "GP-20-1.45-0.28": 0.9279},
    ("mnist", 1000, "tanh"): {"NN-2-1000-0.60-0.00": 0.9254, "GP-20-1.96-0.62": 0.9266},
    ("mnist", 10000, "relu"): {"NN-2-2000-0.42-0.16": 0.9771, "GP-7-0.61-0.07": 0.9765},
    ("mnist", 10000, "tanh"): {"NN-2-2000-2.41-1.84": 0.9745, "GP-2-1.62-0.28": 0.9773},
    ("mnist", 50000, "relu"): {"NN-2-2000-0.60-0.44": 0.9864, "GP-1-0.10-0.48": 0.9875},
    ("mnist", 50000, "tanh"): {"NN-2-5000-0.28-0.34": 0.9857, "GP-1-1.28-0.00": 0.9879},
    ("cifar10", 1000, "relu"): {"NN-5-500-1.29-0.28": 0.3225, "GP-7-1.28-0.00": 0.3608},
    ("cifar10", 1000, "tanh"): {"NN-1-200-1.45-0.12": 0.3378, "GP-50-2.97-0.97": 0.3702},
    ("cifar10", 10000, "relu"): {"NN-5-2000-1.60-1.07": 0.4545, "GP-5-2.97-0.28": 0.4780},
    ("cifar10", 10000, "tanh"): {"NN-1-500-1.48-1.59": 0.4429, "GP-7-3.48-2.00": 0.4766},
    ("cifar10", 45000, "relu"): {"NN-3-5000-0.53-0.01": 0.5313, "GP-3-3.31-1.86": 0.5566},
    ("cifar10", 45000, "tanh"): {"NN-2-2000-1.05-2.08": 0.5034, "GP-3-3.48-1.52": 0.5558},
}

_LOADERS = {"mnist": wd.load_mnist, "cifar10": wd.load_cifar10}
# "MNIST:50k" / "CIFAR:45k" are the whole pools (not class-balanced): the loaders' n_train=None.
_POOL = {"mnist": wd.MNIST_POOL_SIZE, "cifar10": wd.CIFAR10_POOL_SIZE}


def parse_model(label: str) -> dict:
    """``GP-depth-σw²-σb²`` or ``NN-depth-width-σw²-σb²`` -> its fields (ValueError naming the label)."""
    parts = label.split("-")
    try:
        if parts[0] == "GP" and len(parts) == 4:
            return {"kind": "GP", "depth": int(parts[1]), "width": None,
                    "weight_variance": float(parts[2]), "bias_variance": float(parts[3])}
        if parts[0] == "NN" and len(parts) == 5:
            return {"kind": "NN", "depth": int(parts[1]), "width": int(parts[2]),
                    "weight_variance": float(parts[3]), "bias_variance": float(parts[4])}
    except ValueError:
        pass
    raise ValueError(f"model {label!r}: expected 'GP-depth-σw²-σb²' or 'NN-depth-width-σw²-σb²' "
                     "(e.g. GP-20-1.45-0.28, NN-2-1000-0.60-0.00)")


def _activation(name: str, degree: int):
    act = wn.activations.get(name)
    if not act.closed_form:
        act = type(act)(quadrature_degree=degree)
    return act


def validate(cfg: dict) -> list[dict]:
    """Check what ``DEFAULTS`` cannot express (before the output folder exists); the row specs."""
    if cfg["data_dir"] is None:
        raise ConfigError("config key 'data_dir' is not set: it must name a folder holding mnist/ "
                          "(and optionally cifar10/), e.g. --set data_dir=../shared/data")
    specs = []
    for i, r in enumerate(cfg["rows"]):
        if r["dataset"] not in _LOADERS:
            raise ConfigError(f"config key 'rows[{i}].dataset': expected one of {sorted(_LOADERS)}, "
                              f"got {str(r['dataset'])[:40]!r}")
        if r["activation"] not in ("relu", "tanh", "erf"):
            raise ConfigError(f"config key 'rows[{i}].activation': expected relu, tanh or erf, "
                              f"got {str(r['activation'])[:40]!r}")
        if r["subset"] not in ("protocol", "available"):
            raise ConfigError(f"config key 'rows[{i}].subset': expected 'protocol' or 'available', "
                              f"got {str(r['subset'])[:40]!r}")
        if not isinstance(r["n_train"], int) or isinstance(r["n_train"], bool) or r["n_train"] < 1:
            raise ConfigError(f"config key 'rows[{i}].n_train': expected a positive int")
        try:
            specs.append(dict(r, **parse_model(r["model"])))  # fail on a bad label before any work
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key 'rows[{i}].model': {str(e)[:200]}") from None
    return specs


def run(cfg: dict, ctx) -> None:
    specs = validate(cfg)
    root = Path(cfg["data_dir"]).expanduser()

    cache: dict = {}

    def load(dataset: str, n_train: int, subset: str) -> wd.Split:
        key = (dataset, n_train, subset)
        if key not in cache:
            cache.clear()  # one subset in memory at a time
            n = None if n_train == _POOL[dataset] else n_train
            # MNIST is always whole, so its "available" subset is the protocol's
            extra = {"subset": subset} if dataset == "cifar10" else {}
            split = _LOADERS[dataset](root, n_train=n, n_test=cfg["n_test"], dtype=ctx.dtype, **extra)
            cache[key] = (split, wd.preprocess(split.x_train, cfg["preprocessing"]).to(ctx.device),
                          wd.preprocess(split.x_test, cfg["preprocessing"]).to(ctx.device))
        return cache[key]

    skipped = dict(ctx.get("skipped", {}))
    for spec in ctx.progress(specs, desc="rows"):
        name = f"{spec['dataset']}:{spec['n_train']}/{spec['model']}/{spec['activation']}"
        if spec["subset"] != "protocol":
            name += f"/{spec['subset']}"
        key = f"row/{name}"
        if not ctx.done(key):
            try:
                split, x_tr, x_te = load(spec["dataset"], spec["n_train"], spec["subset"])
            except (FileNotFoundError, ValueError) as e:
                # e.g. the partial CIFAR-10 file lacks images of a CIFAR:1k subset
                ctx.log(f"skipping {name}: {e}")
                skipped[name] = str(e)
                ctx.record("skipped", skipped)
                continue
            ctx.cached(key, lambda: _measure(cfg, ctx, spec, split, x_tr, x_te, key))
        r = ctx.get(key)
        ctx.add_row(key, {k: r.get(k, "protocol") if k == "subset" else r[k]
                          for k in ("dataset", "n_train", "subset", "n_test", "model", "activation", "depth",
                                            "width", "weight_variance", "bias_variance", "test_accuracy",
                                            "paper_accuracy", "difference", "wall_time_s")})
        ctx.log(f"{name}: {r['test_accuracy']:.4f} (paper {r['paper_accuracy']})")

    ctx.table(ctx.rows, columns=["dataset", "n_train", "subset", "n_test", "activation", "model", "test_accuracy",
                                 "paper_accuracy", "difference", "wall_time_s"])
    if ctx.rows:
        _figure(ctx)


def _measure(cfg: dict, ctx, spec: dict, split: wd.Split, x_tr: torch.Tensor, x_te: torch.Tensor,
             key: str) -> dict:
    t0 = time.perf_counter()
    act = _activation(spec["activation"], cfg["quadrature_degree"])
    y_tr = split.y_train.to(ctx.device)
    out = {k: spec[k] for k in ("dataset", "n_train", "subset", "model", "activation", "depth", "width",
                                "weight_variance", "bias_variance")}
    out["n_test"] = x_te.shape[0]
    if spec["kind"] == "GP":
        arch = wn.Architecture(depth=spec["depth"], activation=act, weight_variance=spec["weight_variance"],
                               bias_variance=spec["bias_variance"])
        noise = cfg["noise_relative"] * float(arch.nngp(x_tr, diag=True).mean())
        post = wn.posterior(arch, x_tr, y_tr, x_te, kernel="nngp", noise_variance=noise,
                            compute_variance=False, dtype=ctx.dtype)
        pred = post.mean
        out.update(noise_variance=noise, jitter=post.jitter)
    else:
        n = cfg["nn"]
        dtype = {"float32": torch.float32, "float64": torch.float64}[n["dtype"]]
        arch = wn.Architecture(depth=spec["depth"], activation=act, weight_variance=spec["weight_variance"],
                               bias_variance=spec["bias_variance"], parameterization=n["parameterization"])
        net = arch.build(x_tr.shape[1], spec["width"], y_tr.shape[1], seed=ctx.seed, dtype=dtype, device=ctx.device)
        hist = wn.train(net, x_tr.to(dtype), y_tr.to(dtype), steps=n["steps"], learning_rate=n["learning_rate"],
                        optimizer=n["optimizer"], loss="mse", batch_size=n["batch_size"] or None,
                        seed=ctx.seed, progress=False,
                        checkpoint=ctx.checkpoint_path(key))  # a killed training run resumes
        with torch.no_grad():
            pred = torch.cat([net(xb.to(dtype)) for xb in x_te.split(4096)])
        out.update(final_loss=float(hist.final_loss), steps=hist.steps, diverged=hist.diverged)
    out["test_accuracy"] = wd.accuracy(pred, split.labels_test.to(pred.device))
    paper = PAPER.get((spec["dataset"], spec["n_train"], spec["activation"]), {}).get(spec["model"])
    # the published numbers are on the whole 10k test set
    out["paper_accuracy"] = paper
    out["difference"] = None if paper is None else out["test_accuracy"] - paper
    out["wall_time_s"] = time.perf_counter() - t0
    return out


def _figure(ctx) -> None:
    rows = ctx.rows
    labels = [f"{r['dataset']}:{r['n_train'] // 1000 if r['n_train'] >= 1000 else r['n_train']}"
              f"{'k' if r['n_train'] >= 1000 else ''} {r['activation']}\n{r['model']}" for r in rows]
    fig, ax = wp.figure(size=(max(4.5, 1.6 * len(rows) + 1.5), 4.2))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["test_accuracy"] for r in rows], width=0.4, label="measured (wideNN)")
    ax.bar([x + 0.2 for x in xs], [r["paper_accuracy"] or 0.0 for r in rows], width=0.4,
           label="Lee et al. 2018" if any(r["paper_accuracy"] is not None for r in rows) else None)
    for x, r in zip(xs, rows):
        ax.annotate(f"{r['test_accuracy']:.4f}", (x - 0.2, r["test_accuracy"]), ha="center", va="bottom", fontsize=7)
        paper = r["paper_accuracy"]
        ax.annotate(f"{paper:.4f}" if paper is not None else "no published\nvalue", (x + 0.2, paper or 0.0),
                    ha="center", va="bottom", fontsize=7)
    # bars start at 0 (a bar's length is its value; a cut axis would magnify small gaps); the
    # printed values carry the differences
    ax.set_ylim(0.0, 1.18)  # headroom for the labels and the legend
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xticks(list(xs), labels, fontsize=8)
    wp.finish(ax, ylabel="test accuracy", title="NNGP / NN test accuracy vs the published table",
              legend_loc="upper left")
    ctx.savefig(fig, "accuracy_vs_paper.png")
