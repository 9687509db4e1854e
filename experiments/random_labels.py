"""Random labels (Zhang et al. 2017): wide networks fit random labels too, only slower.

A class-balanced digits subset (``n_train`` examples, ``center_norm`` preprocessing, one-hot
targets 0.9 / −0.1) is fitted twice by full-batch GD on the MSE loss, rate
η = ``lr_fraction`` · 2N/λ_max(Θ): once with the true labels and once with labels drawn
uniformly at random.  For each we record the training-loss curve, the first step at which the
loss falls below ``loss_threshold`` and at which training accuracy reaches 100 %, and the
test accuracy against the true test labels (true labels generalize, random ones give chance).

The infinite-width view: on the training set the NTK-GP at time t (``wn.posterior(kernel="ntk",
t=…, x_test=x_train)``) gives the predicted loss curve; with Θ = Σ_i λ_i u_i u_iᵀ,
loss_t = (1/2N) Σ_i e^{−2ηtλ_i/N} ‖u_iᵀ(f_0 − y)‖².  Random labels put their weight on the
small-λ directions, which is why they take longer.

``center_outputs`` (default true): the network is trained on y + f_0(X), so that its learned
part f_t − f_0 starts at zero and fits y (the centering of Chizat et al. 2019); losses and
accuracies are those of f_t − f_0, and the NTK prediction is the GP mean alone.  Without
centering, the initial outputs (variance 10·K(x,x) ≈ 11 summed over 10 outputs, against
‖y‖² = 0.9) dominate the loss for both label sets and hide the difference; the prediction is
then the expected loss (1/2N) Σ_i (‖μ_t(x_i) − y_i‖² + O·σ_t²(x_i)) of a random network.

Results (results.json, section ``results``):

* ``learning_rate``, ``max_learning_rate``;
* ``<labels>`` for labels in ``true``/``random``: ``net``: ``loss`` (every step),
  ``eval_steps``, ``train_accuracy``, ``steps_to_threshold``, ``steps_to_fit`` (100 % train
  accuracy; null if never), ``test_accuracy``, ``final_loss``, ``wall_s``;
  ``ntk``: ``times``, ``loss``, ``train_accuracy``, ``steps_to_threshold``, ``steps_to_fit``,
  ``test_accuracy`` (GP mean at the last time);
* ``summary``: the ratios random/true of steps to threshold and steps to fit for the network
  and for the NTK prediction, and the four test accuracies.

Figures: ``loss_curves.png`` (log-y training loss vs step, true vs random, network vs NTK
prediction, the threshold marked) and ``time_to_fit.png`` (steps to threshold / to 100 %
train accuracy, and test accuracy, for each label set).
"""
from __future__ import annotations

import time

import torch

import wideNN as wn
from wideNN import data as wd
from wideNN import plotting as wp

DEFAULTS = {
    "seed": 0,
    "dtype": "float64",
    "num_threads": 0,  # 0: leave torch's setting
    "n_train": 100,
    "n_test": 500,
    "depth": 1,
    "activation": "relu",
    "weight_variance": 2.0,
    "bias_variance": 0.1,
    "width": 2048,
    "steps": 2000,
    "lr_fraction": 0.5,
    "loss_threshold": 0.01,
    "eval_every": 5,
    "center_outputs": True,
}

LABELS = ("true", "random")


def _first(steps, values, ok) -> int | None:
    for s, v in zip(steps, values):
        if v is not None and ok(v):
            return int(s)
    return None


def _ratio(a, b) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def run(cfg: dict, ctx) -> None:
    # (the harness applies cfg["num_threads"])
    opts = dict(dtype=ctx.dtype, device=ctx.device)
    split = wd.train_test_split_digits(cfg["n_train"], cfg["n_test"], seed=ctx.seed)
    x = wd.preprocess(split.x_train, "center_norm").to(**opts)
    xt = wd.preprocess(split.x_test, "center_norm").to(**opts)
    n, o = split.y_train.shape
    random_labels = torch.randint(0, o, (n,), generator=ctx.generator(1, "cpu"))
    labels = {"true": split.labels_train, "random": random_labels}
    targets = {k: wd.one_hot(v, o, dtype=ctx.dtype).to(ctx.device) for k, v in labels.items()}
    lab_test = split.labels_test.to(ctx.device)
    arch = wn.Architecture(depth=cfg["depth"], activation=cfg["activation"],
                           weight_variance=cfg["weight_variance"], bias_variance=cfg["bias_variance"],
                           parameterization="ntk")
    eta_max = wn.max_learning_rate(arch, x)
    eta = cfg["lr_fraction"] * eta_max
    ctx.record("max_learning_rate", eta_max)
    ctx.record("learning_rate", eta)
    steps, every, thr = cfg["steps"], cfg["eval_every"], cfg["loss_threshold"]
    center = cfg["center_outputs"]

    def network(kind: str) -> dict:
        t0 = time.perf_counter()
        # the same initialization for both label sets: only the labels differ
        net = arch.build(x.shape[1], cfg["width"], o, seed=ctx.seed, **opts)
        y = targets[kind]
        with torch.no_grad():
            f0, f0_test = net(x), net(xt)
        if not center:
            f0, f0_test = torch.zeros_like(f0), torch.zeros_like(f0_test)

        def train_accuracy(model) -> dict:
            with torch.no_grad():
                return {"acc": wd.accuracy(model(x) - f0, labels[kind].to(ctx.device))}

        h = wn.train(net, x, y + f0, steps=steps, learning_rate=eta, metrics=train_accuracy,
                     eval_every=every, progress=False,
                     checkpoint=ctx.checkpoint_path(f"{kind}/net"))  # a killed training resumes
        with torch.no_grad():
            test_acc = wd.accuracy(net(xt) - f0_test, lab_test)
        loss = h.loss.tolist()
        return {"loss": loss, "eval_steps": h.metric_steps, "train_accuracy": h.metrics["acc"],
                "steps_to_threshold": _first(range(len(loss)), loss, lambda v: v <= thr),
                "steps_to_fit": _first(h.metric_steps, h.metrics["acc"], lambda v: v >= 1.0),
                "test_accuracy": test_acc, "final_loss": float(h.final_loss), "diverged": h.diverged,
                "wall_s": time.perf_counter() - t0}

    times = list(range(0, steps + 1, every))

    def ntk(kind: str) -> dict:
        y = targets[kind]
        post = wn.posterior(arch, x, y, x, kernel="ntk", t=torch.tensor(times, dtype=torch.float64),
                            learning_rate=eta, compute_variance=not center)
        # expected training loss (1/2N) Σ E‖f − y‖²: the mean's loss plus the outputs' variance
        loss = wn.mse_loss(post.mean, y.to(post.mean.dtype))
        if not center:
            loss = loss + 0.5 * o * post.variance.mean(-1)
        loss = loss.tolist()
        acc = [wd.accuracy(m, labels[kind].to(m.device)) for m in post.mean]
        final = wn.posterior(arch, x, y, xt, kernel="ntk", t=float(times[-1]), learning_rate=eta,
                             compute_variance=False)
        return {"times": times, "loss": loss, "train_accuracy": acc,
                "steps_to_threshold": _first(times, loss, lambda v: v <= thr),
                "steps_to_fit": _first(times, acc, lambda v: v >= 1.0),
                "test_accuracy": wd.accuracy(final.mean, lab_test)}

    res = {}
    for kind in ctx.progress(LABELS, desc="labels"):
        res[kind] = {"net": ctx.cached(f"{kind}/net", lambda: network(kind)),
                     "ntk": ctx.cached(f"{kind}/ntk", lambda: ntk(kind))}
        for src in ("net", "ntk"):
            r = res[kind][src]
            ctx.add_row(f"{kind}/{src}", {"labels": kind, "model": "network" if src == "net" else "NTK-GP",
                                          "steps_to_threshold": r["steps_to_threshold"],
                                          "steps_to_fit": r["steps_to_fit"],
                                          "final_loss": r["loss"][-1], "test_accuracy": r["test_accuracy"]})
    summary = {f"{src}_{q}_ratio": _ratio(res["random"][src][q], res["true"][src][q])
               for src in ("net", "ntk") for q in ("steps_to_threshold", "steps_to_fit")}
    summary.update({f"{src}_test_accuracy_{kind}": res[kind][src]["test_accuracy"]
                    for src in ("net", "ntk") for kind in LABELS})
    summary = ctx.record("summary", summary)
    ctx.log("random/true: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in summary.items()))

    # ---- figures
    cols = {"true": "tab:blue", "random": "tab:orange"}
    desc = (f"{cfg['n_train']} digits, {cfg['activation']} depth {cfg['depth']}, width {cfg['width']}, "
            f"η = {cfg['lr_fraction']:g}·η_max{', centred' if center else ''}")
    fig, ax = wp.figure(size=(7.0, 4.4))
    for kind in LABELS:
        ax.plot(range(len(res[kind]["net"]["loss"])), res[kind]["net"]["loss"], color=cols[kind],
                label=f"{kind} labels, network")
        ax.plot(times, res[kind]["ntk"]["loss"], color=cols[kind], linestyle="--",
                label=f"{kind} labels, NTK prediction")
    ax.axhline(thr, color="0.4", linestyle=":", linewidth=1.0, label=f"threshold {thr:g}")
    ax.set_yscale("log")
    wp.finish(ax, xlabel="GD step", ylabel="training loss (1/2N)Σ‖f − y‖²",
              title=f"Fitting true vs random labels\n{desc}")
    ctx.savefig(fig, "loss_curves.png")

    fig, axes = wp.figure(1, 2, size=(10.0, 3.8))
    groups = [("steps_to_threshold", f"loss ≤ {thr:g}"), ("steps_to_fit", "100 % train acc.")]
    bw = 0.2
    for gi, (q, qlabel) in enumerate(groups):
        for ki, kind in enumerate(LABELS):
            for si, src in enumerate(("net", "ntk")):
                v = res[kind][src][q]
                pos = gi + (2 * ki + si - 1.5) * bw
                axes[0].bar(pos, v if v is not None else 0.0, width=bw * 0.9, color=cols[kind],
                            alpha=1.0 if src == "net" else 0.5, hatch=None if src == "net" else "//",
                            label=f"{kind}, {'network' if src == 'net' else 'NTK-GP'}" if gi == 0 else None)
                axes[0].annotate("never" if v is None else f"{v}", (pos, v or 0.0), ha="center",
                                 va="bottom", fontsize=7)
    axes[0].set_xticks(range(len(groups)), [g[1] for g in groups])
    wp.finish(axes[0], ylabel="GD steps", title="Time to fit the training set")
    for ki, kind in enumerate(LABELS):
        for si, src in enumerate(("net", "ntk")):
            v = res[kind][src]["test_accuracy"]
            pos = ki + (si - 0.5) * 0.35
            axes[1].bar(pos, v, width=0.3, color=cols[kind], alpha=1.0 if src == "net" else 0.5,
                        hatch=None if src == "net" else "//")
            axes[1].annotate(f"{v:.2f}", (pos, v), ha="center", va="bottom", fontsize=8)
    axes[1].axhline(1.0 / o, color="0.4", linestyle=":", linewidth=1.0, label="chance")
    axes[1].set_xticks(range(len(LABELS)), [f"trained on {k} labels\n(network | NTK-GP)" for k in LABELS])
    axes[1].set_ylim(0.0, 1.05)
    wp.finish(axes[1], ylabel="test accuracy (true test labels)", title="Generalization")
    ctx.savefig(fig, "time_to_fit.png")
