"""Resumable long units: training loops and hyperparameter fits checkpoint periodically, so that
a run interrupted again and again still finishes, with the result of an uninterrupted run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import wideNN as wn
from wideNN import _train_loop, selection

from _kills import killer as _killer, until_done as _until_done

D64 = torch.float64


def _data(n: int = 12, d: int = 4, o: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, o, generator=g, dtype=D64)


ARCH = wn.Architecture(1, "relu", 2.0, 0.1)


@pytest.mark.parametrize("kw", [dict(optimizer="adam", learning_rate=0.05),
                                dict(optimizer="momentum", learning_rate=0.05, batch_size=5, seed=3),
                                dict(optimizer="gd", learning_rate=0.5)])
def test_train_interrupted_repeatedly_equals_uninterrupted(kw, tmp_path: Path, monkeypatch):
    x, y = _data()
    xt, yt = _data(seed=1)
    opts = dict(steps=40, eval_data=(xt, yt), eval_every=3, ntk_at=[0, 17, 40], progress=False)
    ref_net = ARCH.build(4, 16, 2, seed=0, dtype=D64)
    ref = wn.train(ref_net, x, y, **kw, **opts)

    # a kill every 7 updates, checkpoints every 5: each attempt gets at least one checkpoint further
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 7))
    ck = tmp_path / "train.ckpt"
    nets = []

    def attempt():
        net = ARCH.build(4, 16, 2, seed=0, dtype=D64)  # a restarted process builds the net again
        nets.append(net)
        return wn.train(net, x, y, **kw, **opts, checkpoint=ck, checkpoint_every=5)

    hist, attempts = _until_done(attempt)
    assert attempts > 3  # it really was interrupted, several times
    torch.testing.assert_close(hist.loss, ref.loss, rtol=0, atol=0)
    assert hist.steps == ref.steps == 40
    assert hist.metric_steps == ref.metric_steps and hist.metrics == ref.metrics
    assert hist.ntk_steps == ref.ntk_steps == [0, 17, 40]
    for a, b in zip(hist.ntk, ref.ntk):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(nets[-1].parameters(), ref_net.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # the finished checkpoint answers at once, without a single update
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 1))
    again = attempt()
    torch.testing.assert_close(again.loss, ref.loss, rtol=0, atol=0)
    for a, b in zip(nets[-1].parameters(), ref_net.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_train_checkpoint_of_another_run_is_refused(tmp_path: Path):
    x, y = _data()
    ck = tmp_path / "c.ckpt"
    wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=3, checkpoint=ck, checkpoint_every=1)
    for change in (dict(learning_rate=0.5), dict(steps=4)):
        with pytest.raises(ValueError, match="belongs to another run"):
            wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, **{"steps": 3, **change}, checkpoint=ck)
    with pytest.raises(ValueError, match="belongs to another run"):  # other starting parameters
        wn.train(ARCH.build(4, 8, 2, seed=1, dtype=D64), x, y, steps=3, checkpoint=ck)
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=3, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint: folder"):
        wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=3, checkpoint=tmp_path / "no" / "c")
    with pytest.raises(ValueError, match="checkpoint_every"):
        wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=3, checkpoint=ck, checkpoint_every=0)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_fit_interrupted_repeatedly_equals_uninterrupted(optimizer, tmp_path: Path, monkeypatch):
    x, y = _data(n=10, o=2)
    opts = dict(steps=12, lr=0.05 if optimizer == "adam" else 0.5, optimizer=optimizer, progress=False)
    ref = wn.fit_hyperparameters(ARCH, x, y, **opts)
    # an objective evaluation killed every 5 calls (Adam: one per step) or 23 (L-BFGS: a step's
    # line search takes several); a checkpoint every 2 steps
    every = 5 if optimizer == "adam" else 13
    monkeypatch.setattr(selection._Problem, "objective", _killer(selection._Problem.objective, every))
    ck = tmp_path / "fit.ckpt"
    res, attempts = _until_done(lambda: wn.fit_hyperparameters(ARCH, x, y, **opts, checkpoint=ck, checkpoint_every=2))
    assert attempts > 2
    assert res.history == ref.history and len(res.history) == 12
    assert res.noise_variance == ref.noise_variance
    assert float(res.architecture.weight_variance) == float(ref.architecture.weight_variance)
    with pytest.raises(ValueError, match="belongs to another run"):
        wn.fit_hyperparameters(ARCH, x, y, **{**opts, "lr": 0.01}, checkpoint=ck)


def test_options_objects_and_unknown_keywords():
    x, y = _data()
    a = wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=5, learning_rate=0.1,
                 options=wn.TrainOptions(batch_size=4, seed=1), optimizer="sgd")
    b = wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=5, learning_rate=0.1,
                 batch_size=4, seed=1, optimizer="sgd")
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['batchsize'\]"):
        wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=1, batchsize=4)
    with pytest.raises(TypeError, match="options must be a wideNN.FitOptions"):
        wn.fit_hyperparameters(ARCH, x, y, options=wn.TrainOptions())
    with pytest.raises(ValueError, match="nothing to fit"):
        wn.fit_hyperparameters(ARCH, x, y, learn=(), learn_noise=False)
    with pytest.raises(TypeError, match="betas must be a pair"):
        wn.train(ARCH.build(4, 8, 2, seed=0, dtype=D64), x, y, steps=1, optimizer="adam", betas=(0.9,))


def test_experiment_killed_inside_its_fit_resumes_inside_it(tmp_path: Path, monkeypatch):
    """The hyperparameters experiment, killed again and again inside its marginal-likelihood
    fit, finishes (each rerun continues the fit from its checkpoint) with the uninterrupted result."""
    from wideNN.lab.runner import RunInterrupted, run_experiment

    root = Path(wn.__file__).resolve().parents[1]
    sets = ["n_train=60", "n_test=60", "weight_variances=[1.0, 2.0]", "bias_variances=[0.1]",
            "fit.steps=6", "fit.optimizer=adam", "fit.lr=0.1"]
    cfg = root / "configs" / "hyperparameters.yaml"
    ref = run_experiment(cfg, out_dir=tmp_path / "ref", overrides=sets, quiet=True).get("fitted")
    monkeypatch.setattr(selection._Problem, "objective", _killer(selection._Problem.objective, 4))
    out = tmp_path / "killed"

    def attempt():
        return run_experiment(cfg, out_dir=out, overrides=sets, quiet=True)

    ctx, attempts = None, 0
    for attempts in range(1, 30):
        try:
            ctx = attempt()
            break
        except RunInterrupted:
            assert list((out / "checkpoints").glob("*.pt")) or attempts == 1
    assert ctx is not None and attempts > 1
    assert ctx.get("fitted") == ref
    assert not list((out / "checkpoints").glob("*.pt"))  # removed once the result is recorded
